"""Run one makeflow rule on a Work Queue worker: inside its limits, in a sandbox, GDAL fenced.

Makeflow wraps every rule's command with this file (``--wrapper 'python3 .lmweb/guard.py
--seconds N []'``, shipped to the worker with ``--wrapper-input``), so it runs on the worker, in the
task's sandbox folder, with the standard library only. It:

- enforces the rule's declared resources, which Work Queue hands every task as ``MEMORY`` and
  ``DISK`` (MB) and ``CORES``: the rule's processes together may hold at most ``MEMORY`` MB
  resident, its folder may hold at most ``DISK`` MB (no single file larger either), and it may run
  at most ``--seconds``. A rule over a limit is killed, and the reason is appended to the rule's
  own stderr log (``logs/<LMWEB_RULE>.stderr``), which the job's error then quotes;
- runs the command under bubblewrap: the whole file system read-only except the task's own
  folder (its temporary files go there), no network (but for a category that declares
  ``LMWEB_RULE_NETWORK=1``), no other process visible, and the paths in
  ``LMWEB_RULE_HIDE`` (the service's data, secrets and the worker's other tasks) replaced by
  empty folders. ``LMWEB_RULE_SANDBOX`` is ``required`` (no bubblewrap: the rule fails),
  ``auto`` (the default: sandbox when bubblewrap works here) or ``off``;
- puts ``fence/`` beside this file on ``PYTHONPATH``: its ``sitecustomize`` limits every Python
  process of the rule to the GDAL drivers and virtual file systems that the rule's category
  names (``LMWEB_GDAL_DRIVERS``, ``LMWEB_GDAL_VSI``);
- sends the rule's output to the service while it runs (``LMWEB_LOG_URL``, ``LMWEB_LOG_TOKEN``:
  LogShipper), for live logs; the rule itself never sees the token.
"""

from __future__ import annotations

# Only modules Python has at hand, nothing from site-packages: this runs once per rule, so its
# start-up is every rule's cost (python3 -I -S; no argparse, subprocess or shutil). `_signal`
# is the C module behind `signal`, without its enum wrappers: importing enum costs more than
# the rest of this start-up.
import _signal as signal
import os
import resource
import sys
import time

MB = 1024 * 1024
BWRAP = "bwrap"
# How often the rule's memory is measured, how often its new processes are looked for, and
# (at least) how often its folder is measured.
MEMORY_POLL = 0.05
SCAN_POLL = 0.25
DISK_POLL = 1.0
# Exit codes of a rule the guard stopped (128 + the signal that a shell would report).
EXIT_MEMORY = 137
EXIT_DISK = 153
EXIT_TIME = 124
EXIT_SANDBOX = 126
PAGE = os.sysconf("SC_PAGE_SIZE")
# Live logs: a rule running this long starts sending its stdout and stderr as they grow, every
# SHIP_EVERY seconds, at most SHIP_MAX bytes a stream at a time; FAILURES_MAX failures in a row
# and it stops trying (the logs still come back with the rule's outputs).
SHIP_AFTER = 2.0
SHIP_EVERY = 2.0
SHIP_MAX = 256 * 1024
FAILURES_MAX = 3
STREAMS = ("stdout", "stderr")


def _stat_fields(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, start time, resident pages) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[19]), int(fields[21])
    except (IndexError, ValueError):
        return None


def process_tree(root: int) -> dict[tuple[int, int], int]:
    """Every live process under `root` (itself included): (pid, start time) -> resident bytes."""
    found: dict[int, tuple[int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                found[int(entry.name)] = fields
    tree = {root} if root in found else set()
    changed = True
    while changed:
        changed = False
        for pid, (parent, _, _) in found.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return {(pid, found[pid][1]): found[pid][2] * PAGE for pid in tree}


class MemoryWatch:
    """The resident memory of a rule's processes, cheaply: the whole of /proc is read a few
    times a second (to find new processes), in between only the processes already known."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.known: set[tuple[int, int]] = set()
        self.next_scan = 0.0

    def resident(self, now: float) -> int:
        if now >= self.next_scan:
            began = time.monotonic()
            tree = process_tree(self.root)
            self.known = set(tree)
            # A crowded host makes a scan dear: never spend more than ~5% of a core on it.
            self.next_scan = now + max(SCAN_POLL, 20 * (time.monotonic() - began))
            return sum(tree.values())
        total = 0
        for pid, start in list(self.known):
            fields = _stat_fields(pid)
            if fields is None or fields[1] != start:  # gone (or its pid reused)
                self.known.discard((pid, start))
                continue
            total += fields[2] * PAGE
        return total


def folder_bytes(path: str) -> int:
    """Bytes of the regular files under `path` (links not followed, hard links counted once)."""
    total, seen = 0, set()
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if info.st_nlink > 1:
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512 if info.st_blocks else info.st_size
    return total


def _megabytes(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    try:
        number = int(float(value))
    except ValueError:
        return None
    return number if number > 0 else None


def find_program(name: str) -> str | None:
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_quietly(argv: list[str]) -> int:
    """Exit code of `argv`, run with no input and its output discarded."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for descriptor in (0, 1, 2):
                os.dup2(null, descriptor)
            os.execv(argv[0], argv)  # noqa: S606  (an argument list: no shell)
        finally:
            os._exit(127)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def bwrap_works(sandbox: list[str], workspace: str | None) -> bool:
    """Whether bubblewrap can make this sandbox here (`sandbox`: its argv up to `--`; in a
    container without --proc rights a lighter one would pass and every rule then fail);
    remembered in the worker's workspace, so the probe costs one rule per worker, not every
    rule."""
    memo = os.path.join(workspace, ".lmweb-bwrap") if workspace else None
    if memo:
        try:
            with open(memo) as handle:
                return handle.read().strip() == "yes"
        except OSError:
            pass
    works = run_quietly([*sandbox, "true"]) == 0
    if memo:
        try:
            with open(memo, "w") as handle:
                handle.write("yes" if works else "no")
        except OSError:
            pass
    return works


# Always hidden: sockets (a database's or a container engine's) live there, and a cut network
# does not stop a Unix socket.
ALWAYS_HIDDEN = ("/run", "/var/run")


def hidden_paths(listed: list[str], folder: str) -> list[str]:
    """The paths to empty, outermost first, without those inside another one; never the task
    folder itself or anything in it (a hidden folder may hold it: it is bound back on top)."""
    paths = []
    for path in sorted({os.path.realpath(p) for p in (*ALWAYS_HIDDEN, *listed) if p}):
        if path == folder or path.startswith(folder + os.sep) or path == "/":
            continue
        if any(path.startswith(kept + os.sep) for kept in paths):
            continue
        paths.append(path)
    return paths


def sandbox_argv(bwrap: str, folder: str, hidden: list[str], network: bool = False) -> list[str]:
    """bubblewrap's arguments: read-only root, the task folder writable, `hidden` emptied, no
    network unless the rule's category declares it needs one (``LMWEB_RULE_NETWORK=1``).

    /tmp stays as it is, read-only like the rest (the service may well be installed there): a
    rule writes its temporary files in its folder (Work Queue points TMPDIR there)."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in hidden_paths(hidden, folder):
        if os.path.isdir(path):
            argv += ["--tmpfs", path]
        elif os.path.lexists(path):
            argv += ["--ro-bind", "/dev/null", path]
    argv += ["--bind", folder, folder, "--chdir", folder]
    argv += [] if network else ["--unshare-net"]
    argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts"]
    argv += ["--die-with-parent", "--"]
    return argv


def child_environment(folder: str, here: str) -> dict[str, str]:
    env = dict(os.environ)
    cores = str(_megabytes("CORES") or 1)
    # Numerical libraries start a thread per machine core unless told the rule's share.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = cores
    fence = os.path.join(here, "fence")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (fence, env.get("PYTHONPATH", "")) if p)
    env.setdefault("LMWEB_GDAL_DRIVERS", "")
    # Temporary files go to the rule's folder (Work Queue sets TMPDIR there; by hand, here).
    for name in ("TMPDIR", "TMP", "TEMP"):
        env.setdefault(name, folder)
    # GDAL reads no side-car files and lists no folders next to what it opens; no network
    # file system is let through even where the network is not cut.
    env["GDAL_PAM_ENABLED"] = "NO"
    env["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    env["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = ".lmweb-none"
    env["GDAL_HTTP_PROXY"] = "127.0.0.1:9"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)
    # The job's log token is the guard's, not the rule's.
    for name in ("LMWEB_LOG_URL", "LMWEB_LOG_TOKEN"):
        env.pop(name, None)
    return env


def _say(log: str | None, text: str) -> None:
    line = f"lmweb guard: {text}\n"
    if log:
        try:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            pass
    sys.stderr.write(line)
    sys.stderr.flush()


def _signal(pid: int, sig: int, *, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except OSError:  # gone already
        return


def _kill_tree(pid: int) -> None:
    for member, _ in process_tree(pid):
        _signal(member, signal.SIGKILL)
    _signal(pid, signal.SIGKILL, group=True)


def start(argv: list[str], env: dict[str, str], disk_mb: int | None) -> int:
    """Fork and exec the rule in a session of its own, no file over its disk, no core dump."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setsid()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if disk_mb is not None:
                limit = disk_mb * MB
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            for sig in (signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            os.execve(argv[0], argv, env)  # noqa: S606  (an argument list: no shell)
        finally:
            os._exit(127)
    return pid


def _ended(pid: int) -> int | None:
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


class LogShipper:
    """Sends a running rule's stdout and stderr (``logs/<rule>.stdout``, ``.stderr`` in its
    folder) to the service as they grow: ``POST <LMWEB_LOG_URL><rule>?stream=...&offset=N`` with
    ``Authorization: LiveLog <LMWEB_LOG_TOKEN>``, the job's own token. The service keeps them
    until the rule's logs come back with its outputs, for `GET /api/v1/jobs/<id>/tasks/<task>/log`.
    Rules shorter than SHIP_AFTER send nothing; http.client is imported only when one does."""

    def __init__(self, url: str, token: str, rule: str, folder: str, started: float) -> None:
        self.url, self.token, self.rule, self.folder = url, token, rule, folder
        self.offsets = dict.fromkeys(STREAMS, 0)
        self.next = started + SHIP_AFTER
        self.failures = 0

    def tick(self, now: float) -> None:
        if now < self.next or self.failures >= FAILURES_MAX:
            return
        for stream in STREAMS:
            try:
                with open(os.path.join(self.folder, "logs", f"{self.rule}.{stream}"), "rb") as f:
                    f.seek(self.offsets[stream])
                    data = f.read(SHIP_MAX)
            except OSError:
                continue
            if data:
                self._send(stream, data)
        self.next = time.monotonic() + SHIP_EVERY

    def _send(self, stream: str, data: bytes) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        connection = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        path = f"{parts.path.rstrip('/')}/{self.rule}?stream={stream}&offset={self.offsets[stream]}"
        try:
            conn = connection(parts.hostname, parts.port, timeout=1.0)
            conn.request(
                "POST",
                path,
                body=data,
                headers={
                    "Authorization": f"LiveLog {self.token}",
                    "Content-Type": "application/octet-stream",
                },
            )
            answer = conn.getresponse()
            answer.read()
            size = answer.getheader("X-Log-Size")
            conn.close()
        except (OSError, http.client.HTTPException):
            self.failures += 1
            return
        if 200 <= answer.status < 300:
            self.offsets[stream] += len(data)
            self.failures = 0
        elif answer.status == 409 and size and size.isdigit():
            self.offsets[stream] = int(size)  # the service has up to here: go on from there
        else:
            self.failures += 1


def log_shipper(rule: str, folder: str, started: float) -> LogShipper | None:
    url, token = os.environ.get("LMWEB_LOG_URL"), os.environ.get("LMWEB_LOG_TOKEN")
    if not (url and token and os.environ.get("LMWEB_RULE")):
        return None
    return LogShipper(url, token, rule, folder, started)


def supervise(pid: int, *, folder, memory_mb, disk_mb, seconds, log, rule, shipper=None) -> int:
    """Wait for the rule, killing it at the first limit it crosses; returns its exit code
    (128 + N for a signal N, as a shell reports it). `shipper` sends its logs as they grow."""
    started = time.monotonic()
    next_disk = started + DISK_POLL
    memory = MemoryWatch(pid)
    while True:
        code = _ended(pid)
        if code is None:
            # Wakes at once when the rule ends (SIGCHLD is blocked, so it waits here).
            signal.sigtimedwait([signal.SIGCHLD], MEMORY_POLL)
            code = _ended(pid)
        if code is not None:
            return code if code >= 0 else 128 - code
        now = time.monotonic()
        if shipper is not None:
            shipper.tick(now)
        reason = None
        if memory_mb is not None:
            used = memory.resident(now)
            if used > memory_mb * MB:
                reason = (
                    f"it held {used // MB} MB of memory, over its limit of {memory_mb} MB (memory)",
                    EXIT_MEMORY,
                )
        if reason is None and disk_mb is not None and now >= next_disk:
            used = folder_bytes(folder)
            # A folder of many files is dear to walk: at most ~5% of a core on it.
            next_disk = now + max(DISK_POLL, 20 * (time.monotonic() - now))
            if used > disk_mb * MB:
                reason = (
                    f"its folder held {used // MB} MB, over its limit of {disk_mb} MB (disk)",
                    EXIT_DISK,
                )
        if reason is None and seconds is not None and now - started > seconds:
            reason = (f"it ran over its limit of {seconds} s (time)", EXIT_TIME)
        if reason is not None:
            _kill_tree(pid)
            os.waitpid(pid, 0)
            _say(log, f"rule {rule} was killed: {reason[0]}")
            return reason[1]


USAGE = "usage: guard.py [--seconds N] COMMAND"


def parse(argv: list[str]) -> tuple[int | None, str]:
    seconds = None
    if len(argv) == 3 and argv[0] == "--seconds" and argv[1].isdigit():
        seconds, argv = int(argv[1]), argv[2:]
    if len(argv) != 1:
        raise SystemExit(USAGE)
    return seconds, argv[0]


def main(argv: list[str] | None = None) -> int:
    seconds, command = parse(sys.argv[1:] if argv is None else argv)
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.realpath(os.getcwd())
    rule = os.environ.get("LMWEB_RULE") or "?"
    log = f"logs/{rule}.stderr" if os.environ.get("LMWEB_RULE") else None
    memory_mb, disk_mb = _megabytes("MEMORY"), _megabytes("DISK")
    mode = os.environ.get("LMWEB_RULE_SANDBOX", "auto").strip().lower() or "auto"
    hidden = [p for p in os.environ.get("LMWEB_RULE_HIDE", "").split(os.pathsep) if p]
    workspace = os.environ.get("WORK_QUEUE_SANDBOX")
    if workspace and os.path.abspath(workspace) != folder:
        hidden.append(workspace)  # the worker's cache and its other tasks
    env = child_environment(folder, here)
    argv = ["/bin/sh", "-c", command]
    bwrap = find_program(BWRAP) if mode != "off" else None
    if mode != "off":
        network = os.environ.get("LMWEB_RULE_NETWORK") == "1"
        sandbox = sandbox_argv(bwrap, folder, hidden, network) if bwrap else []
        if bwrap and (mode == "required" or bwrap_works(sandbox, workspace)):
            argv = sandbox + argv
        elif mode == "required":
            _say(log, f"rule {rule} cannot run: the sandbox (bubblewrap) is required but missing")
            return EXIT_SANDBOX
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    pid = start(argv, env, disk_mb)

    def stop(*_):
        # Work Queue stops a task with SIGTERM (cancel, manager gone): stop the whole rule.
        _kill_tree(pid)
        os._exit(143)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    code = supervise(
        pid, folder=folder, memory_mb=memory_mb, disk_mb=disk_mb, seconds=seconds, log=log,
        rule=rule, shipper=log_shipper(rule, folder, time.monotonic()),
    )  # fmt: skip
    if code == 128 + signal.SIGXFSZ:
        _say(log, f"rule {rule} wrote a file over its limit of {disk_mb} MB (disk)")
    return code


if __name__ == "__main__":
    sys.exit(main())
