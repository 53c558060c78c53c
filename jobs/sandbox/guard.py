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
  folder, a private /tmp inside it, no network, no other process visible, and the paths in
  ``LMWEB_RULE_HIDE`` (the service's data, secrets and the worker's other tasks) replaced by
  empty folders. ``LMWEB_RULE_SANDBOX`` is ``required`` (no bubblewrap: the rule fails),
  ``auto`` (the default: sandbox when bubblewrap works here) or ``off``;
- puts ``fence/`` beside this file on ``PYTHONPATH``: its ``sitecustomize`` limits every Python
  process of the rule to the GDAL drivers and virtual file systems that the rule's category
  names (``LMWEB_GDAL_DRIVERS``, ``LMWEB_GDAL_VSI``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import subprocess
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


def bwrap_works(bwrap: str) -> bool:
    try:
        probe = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-net", "--", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


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


def sandbox_argv(bwrap: str, folder: str, private_tmp: str, hidden: list[str]) -> list[str]:
    """bubblewrap's arguments: read-only root, the task folder writable, `hidden` emptied."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in hidden_paths(hidden, folder):
        if os.path.isdir(path):
            argv += ["--tmpfs", path]
        elif os.path.lexists(path):
            argv += ["--ro-bind", "/dev/null", path]
    argv += ["--bind", private_tmp, "/tmp"]  # noqa: S108  (the rule's own /tmp, in its folder)
    argv += ["--bind", folder, folder, "--chdir", folder]
    argv += ["--unshare-net", "--unshare-ipc", "--unshare-pid", "--unshare-uts"]
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
    # GDAL reads no side-car files and lists no folders next to what it opens; no network
    # file system is let through even where the network is not cut.
    env["GDAL_PAM_ENABLED"] = "NO"
    env["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    env["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = ".lmweb-none"
    env["GDAL_HTTP_PROXY"] = "127.0.0.1:9"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
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


def _kill_tree(popen: subprocess.Popen) -> None:
    for pid, _ in process_tree(popen.pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(popen.pid, signal.SIGKILL)


def _file_size_limit(disk_mb: int | None):
    def apply() -> None:  # between fork and exec
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if disk_mb is not None:
            limit = disk_mb * MB
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)

    return apply


def supervise(popen: subprocess.Popen, *, folder, memory_mb, disk_mb, seconds, log, rule):
    """Wait for the rule, killing it at the first limit it crosses; returns the exit code."""
    started = time.monotonic()
    next_disk = started + DISK_POLL
    memory = MemoryWatch(popen.pid)
    while True:
        try:
            code = popen.wait(timeout=MEMORY_POLL)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            return code if code >= 0 else 128 - code
        now = time.monotonic()
        if memory_mb is not None:
            used = memory.resident(now)
            if used > memory_mb * MB:
                _kill_tree(popen)
                popen.wait()
                _say(
                    log,
                    f"rule {rule} was killed: it held {used // MB} MB of memory, over its "
                    f"limit of {memory_mb} MB (memory)",
                )
                return EXIT_MEMORY
        if disk_mb is not None and now >= next_disk:
            used = folder_bytes(folder)
            # A folder of many files is dear to walk: at most ~5% of a core on it.
            next_disk = now + max(DISK_POLL, 20 * (time.monotonic() - now))
            if used > disk_mb * MB:
                _kill_tree(popen)
                popen.wait()
                _say(
                    log,
                    f"rule {rule} was killed: its folder held {used // MB} MB, over its "
                    f"limit of {disk_mb} MB (disk)",
                )
                return EXIT_DISK
        if seconds is not None and now - started > seconds:
            _kill_tree(popen)
            popen.wait()
            _say(log, f"rule {rule} was killed: it ran over its limit of {seconds} s (time)")
            return EXIT_TIME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=None, help="wall-clock limit of the rule")
    parser.add_argument("command", help="the rule's shell command")
    args = parser.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.realpath(os.getcwd())
    rule = os.environ.get("LMWEB_RULE") or "?"
    log = f"logs/{rule}.stderr" if os.environ.get("LMWEB_RULE") else None
    memory_mb, disk_mb = _megabytes("MEMORY"), _megabytes("DISK")
    mode = os.environ.get("LMWEB_RULE_SANDBOX", "auto").strip().lower() or "auto"
    hidden = [p for p in os.environ.get("LMWEB_RULE_HIDE", "").split(os.pathsep) if p]
    sandbox = os.environ.get("WORK_QUEUE_SANDBOX")
    if sandbox and os.path.abspath(sandbox) != folder:
        hidden.append(sandbox)  # the worker's cache and its other tasks
    env = child_environment(folder, here)
    private_tmp = os.path.join(folder, ".lmweb-tmp")
    os.makedirs(private_tmp, exist_ok=True)
    command = ["/bin/sh", "-c", args.command]
    bwrap = shutil.which(BWRAP)
    if mode != "off":
        if bwrap and (mode == "required" or bwrap_works(bwrap)):
            command = sandbox_argv(bwrap, folder, private_tmp, hidden) + command
        elif mode == "required":
            _say(log, f"rule {rule} cannot run: the sandbox (bubblewrap) is required but missing")
            return EXIT_SANDBOX
    popen = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        preexec_fn=_file_size_limit(disk_mb),
    )
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # Work Queue stops a task with SIGTERM (cancel, manager gone): stop the whole rule.
        signal.signal(sig, lambda *_: (_kill_tree(popen), sys.exit(143)))
    code = supervise(
        popen,
        folder=folder,
        memory_mb=memory_mb,
        disk_mb=disk_mb,
        seconds=args.seconds,
        log=log,
        rule=rule,
    )
    if code == 128 + signal.SIGXFSZ:
        _say(log, f"rule {rule} wrote a file over its limit of {disk_mb} MB (disk)")
    shutil.rmtree(private_tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
