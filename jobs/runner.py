"""The only code that starts CCTools processes: catalog server, makeflow, workers, factory."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .makeflowlog import LogPaths

log = logging.getLogger(__name__)

# Absolute paths: makeflow started by bare name races with another one in the same folder
# ("generating absolute path to makeflow: File exists").
MAKEFLOW = "/usr/bin/makeflow"
WORKER = "/usr/bin/work_queue_worker"
FACTORY = "/usr/bin/work_queue_factory"
CATALOG_SERVER = "/usr/bin/catalog_server"
# Debian's bubblewrap: each makeflow sees the filesystem read-only except its job folder.
BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"

# Managers listen on the first free port from TCP_LOW_PORT; workers must be able to reach them.
DEFAULT_PORT_RANGE = (9200, 9999)
# Rules in flight per makeflow: unbounded, wide DAGs run 3x slower (see CCTOOLS.md).
DEFAULT_MAX_REMOTE = 100
STARTUP_ATTEMPTS = 4
STARTUP_TIMEOUT = 120.0
# Managers update the catalog every 60 s, and their records outlive them (catalog lifetime).
STALE_RECORD_SECONDS = 150

# Start-up failures that a second try fixes: two managers binding the same port at once, two
# makeflows resolving their own path at once.
TRANSIENT_STARTUP_ERRORS = (
    "Could not create work_queue",
    "couldn't create batch queue",
    "generating absolute path",
)


class StartupError(RuntimeError):
    """Makeflow (or another CCTools process) did not come up."""


# ---------------------------------------------------------------------------------------------
# Processes: identities from /proc, so that a reused pid is never signalled by mistake.


@dataclass(frozen=True)
class ProcessId:
    pid: int
    start: int  # clock ticks after boot, field 22 of /proc/<pid>/stat


def _stat(pid: int) -> tuple[str, int, int, int, int] | None:
    """(state, ppid, pgid, sid, start time) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def process_id(pid: int) -> ProcessId | None:
    stat = _stat(pid)
    return ProcessId(pid, stat[4]) if stat else None


def is_alive(process: ProcessId) -> bool:
    stat = _stat(process.pid)
    return stat is not None and stat[4] == process.start and stat[0] not in ("Z", "X")


def children(pid: int) -> list[ProcessId]:
    found = []
    for other in _all_pids():
        stat = _stat(other)
        if stat and stat[1] == pid:
            found.append(ProcessId(other, stat[4]))
    return found


def session_members(sid: int) -> list[ProcessId]:
    """Every live process of a session (our children started with start_new_session)."""
    found = []
    for other in _all_pids():
        stat = _stat(other)
        if stat and stat[3] == sid and stat[0] not in ("Z", "X"):
            found.append(ProcessId(other, stat[4]))
    return found


def _signal(process: ProcessId, sig: int) -> None:
    if is_alive(process):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, sig)


def _wait_gone(processes: Sequence[ProcessId], timeout: float) -> list[ProcessId]:
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if is_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if is_alive(p)]
    return alive


def _terminate(processes: Sequence[ProcessId], grace: float) -> None:
    """SIGTERM, then SIGKILL whatever is still there after `grace` seconds."""
    for process in processes:
        _signal(process, signal.SIGTERM)
    for process in _wait_gone(processes, grace):
        _signal(process, signal.SIGKILL)
    _wait_gone(processes, 2.0)


def stop_process(popen: subprocess.Popen, grace: float = 5.0) -> int | None:
    """Stop a process we started in its own session, and everything left in that session.

    Workers sometimes ignore SIGTERM (looping on an unreachable catalog), and a factory's
    SIGTERM kills the shells around its workers, not the workers: hence the escalation to
    SIGKILL and the sweep of the whole session (task processes included).
    """
    stop_processes([popen], grace)
    return popen.returncode


def stop_processes(popens: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """stop_process for many at once: one grace period for all of them."""
    for popen in popens:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for popen in popens:
        try:
            popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)
    leftovers = [member for popen in popens for member in session_members(popen.pid)]
    if leftovers:
        _terminate(leftovers, min(grace, 2.0))


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs between fork and exec
    # PR_SET_PDEATHSIG: if the controller process dies, makeflow gets SIGTERM, aborts its tasks
    # and marks its log ABORTED, instead of running on unsupervised while recovery starts a
    # second makeflow on the same log.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _open_log(path: Path | None) -> contextlib.AbstractContextManager:
    """A file to append a child's output to (the child keeps its own descriptor)."""
    if path is None:
        return contextlib.nullcontext(subprocess.DEVNULL)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


def _base_env(tmpdir: Path | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A deliberate environment: nothing such as WORK_QUEUE_NAME, CATALOG_HOST, TCP_*_PORT or
    MAKEFLOW_* leaks in from whoever started the service."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# Catalog server


def start_catalog_server(
    *,
    port: int,
    host: str = "127.0.0.1",
    history_dir: Path,
    log_path: Path,
    lifetime: int = 1800,
) -> subprocess.Popen:
    """A private catalog server: it uses TCP `port`, UDP `port` and TCP `port` + 1.

    `-u` points at itself: by default it would report itself to the public catalog.
    """
    history_dir.mkdir(parents=True, exist_ok=True)
    args = [
        CATALOG_SERVER,
        "-p", str(port),
        "-I", host,
        "-u", f"{host}:{port}",
        "-H", str(history_dir),
        "-l", str(lifetime),
        "-o", str(log_path),
        "-O", "0",
    ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_base_env(),
        start_new_session=True,
    )


def query_catalog(catalog: str, *, timeout: float = 5.0) -> list[dict]:
    """All records of a catalog server ("host:port"), fresh (workers cache theirs for 60 s)."""
    url = f"http://{catalog}/query.json"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_for_catalog(catalog: str, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            query_catalog(catalog, timeout=1.0)
            return
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise StartupError(f"catalog server {catalog} does not answer: {exc}") from exc
            time.sleep(0.05)


def managers(catalog: str, project: str, *, timeout: float = 5.0) -> list[dict]:
    """The catalog's Work Queue manager records of one project."""
    return [
        record
        for record in query_catalog(catalog, timeout=timeout)
        if record.get("type") in ("wq_master", "wq_manager")
        and (record.get("project") == project or _is_width_variant(record.get("project"), project))
    ]


def _is_width_variant(name: object, project: str) -> bool:
    return (
        isinstance(name, str)
        and name.startswith(project + "-w")
        and width_hint(name) is not None
        and len(name) == len(project) + 2 + len(str(width_hint(name)))
    )


# ---------------------------------------------------------------------------------------------
# Project names


def project_name(deployment: str, job_id: str, width: int | None = None) -> str:
    """Unique per job: old workers of an earlier job can never serve this one by mistake.

    `width`, how many rules of the running stage can run at once, rides along as a `-wN`
    suffix: the manager's own catalog figures are up to 60 s old, and a stage that starts with
    one rule and then fans out would otherwise keep its first worker alone for a minute.
    """
    name = f"lmweb-{deployment}-{job_id}"
    return name if width is None else f"{name}-w{width}"


_WIDTH_HINT = re.compile(r"-w([0-9]{1,6})$")


def width_hint(project: str) -> int | None:
    match = _WIDTH_HINT.search(project)
    return int(match.group(1)) if match else None


def project_regex(deployment: str) -> str:
    # Work Queue matches -M against the whole name already; the anchors document the intent.
    return f"^lmweb-{deployment}-.*$"


# ---------------------------------------------------------------------------------------------
# Makeflow


def prepare_resume(workdir: Path, dag: str) -> None:
    """Make a folder ready for (re)starting makeflow on `dag`.

    Without its log, makeflow takes leftover makeflow.failed.* folders (from an earlier run or
    stage) for foreign files and dies when the same node fails again (cctools issue #1872).
    With the log it knows them and replaces them itself.
    """
    paths = LogPaths(Path(workdir), dag)
    paths.port_file.unlink(missing_ok=True)
    if not paths.makeflowlog.exists():
        for stale in Path(workdir).glob("makeflow.failed.*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()


@dataclass(frozen=True)
class WorkerSpec:
    """How to start a Work Queue worker (the password must be the managers')."""

    password_file: Path
    scratch_dir: Path
    cores: int = 1
    memory: int | None = None  # MB
    disk: int | None = None  # MB
    idle_timeout: int = 60
    connect_timeout: int = 15
    # Handed to every task: how the rules' guard sandboxes them (LMWEB_RULE_SANDBOX,
    # LMWEB_RULE_HIDE; see jobs/sandbox/guard.py).
    env: tuple[tuple[str, str], ...] = ()

    def start_single_shot(self, host: str, port: int) -> subprocess.Popen:
        """A worker for the one manager at host:port, gone when that manager ends."""
        return start_worker(
            host=host,
            port=port,
            password_file=self.password_file,
            cores=self.cores,
            memory=self.memory,
            disk=self.disk,
            scratch_dir=self.scratch_dir,
            idle_timeout=self.idle_timeout,
            connect_timeout=self.connect_timeout,
            single_shot=True,
            env=dict(self.env),
        )


class MakeflowRun:
    """One running makeflow (and the direct workers attached to it).

    Confined, `popen` is bubblewrap and makeflow is its only child, in the same process group
    and session: `pid` stays the group's leader, `makeflow` is makeflow itself.
    """

    def __init__(
        self,
        popen: subprocess.Popen,
        *,
        paths: LogPaths,
        port: int,
        project: str,
        tmpdir: Path,
        started_at: float,
        confined: bool = False,
    ) -> None:
        self.popen = popen
        self.paths = paths
        self.port = port
        self.project = project
        self.tmpdir = tmpdir
        self.started_at = started_at  # time.time() just before the successful start
        self.confined = confined
        self.workers: list[subprocess.Popen] = []
        self._makeflow: ProcessId | None = None if confined else process_id(popen.pid)
        self._helpers: list[ProcessId] = []
        self._remember_helpers()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def makeflow(self) -> ProcessId | None:
        """Makeflow's own process: bubblewrap's child when confined (None once it is gone)."""
        if self.confined and self._makeflow is None and self.popen.poll() is None:
            found = children(self.popen.pid)
            self._makeflow = found[0] if found else None
        return self._makeflow

    @property
    def returncode(self) -> int | None:
        if self.popen.returncode is None or self._makeflow_outlives_bwrap():
            return None
        return _exit_code(self.popen.returncode, self.confined)

    def _makeflow_outlives_bwrap(self) -> bool:
        # Bubblewrap killed (the thread that started it ended, an operator, the OOM killer):
        # makeflow, told by its parent-death signal, is still aborting and writing its log.
        # The run lasts as long as makeflow does, or a resume would share its log with it.
        return self.confined and self._makeflow is not None and is_alive(self._makeflow)

    def _remember_helpers(self) -> None:
        # orted puts itself in a session of its own (--set-sid): no group kill reaches it, so
        # note it while makeflow is alive, to stop it ourselves if it outlives makeflow.
        makeflow = self.makeflow
        if makeflow is None:
            return
        found = [makeflow] if self.confined else []
        for process in [*found, *children(makeflow.pid)]:
            if process not in self._helpers:
                self._helpers.append(process)

    def poll(self) -> int | None:
        self.workers = [worker for worker in self.workers if worker.poll() is None]
        self.popen.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Makeflow's exit code; raises subprocess.TimeoutExpired after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.popen.wait(timeout=timeout)
        while self._makeflow_outlives_bwrap():
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.popen.args, timeout)
            time.sleep(0.05)
        return self.poll()

    def add_workers(
        self, count: int, spec: WorkerSpec, *, host: str = "127.0.0.1"
    ) -> list[subprocess.Popen]:
        """Workers connected straight to this manager: they run its first rule within a second.

        Catalog discovery takes up to two minutes (workers cache catalog answers for 60 s,
        empty ones included). These workers quit when this makeflow ends (--single-shot).
        """
        started = [spec.start_single_shot(host, self.port) for _ in range(count)]
        self.workers.extend(started)
        return started

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM (makeflow removes its tasks from the workers and logs ABORTED), SIGKILL of
        its process group after `grace` seconds; afterwards nothing of this run is left."""
        if self.poll() is None:
            self._remember_helpers()
            # To makeflow itself: bubblewrap forwards no signal, and dies of SIGTERM at once.
            makeflow = self.makeflow
            if makeflow is not None:
                _signal(makeflow, signal.SIGTERM)
            else:  # bubblewrap still setting up: makeflow gets SIGTERM when it dies
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(signal.SIGTERM)
            try:
                self.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("makeflow %s ignored SIGTERM for %.1f s: killing it", self.pid, grace)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                if makeflow is not None:
                    _signal(makeflow, signal.SIGKILL)
                self.wait(timeout=10)
        # local_job rules and orted: whatever survived makeflow.
        _terminate([*session_members(self.pid), *self._helpers], 2.0)
        # Without their manager the workers have nothing left to do (single-shot ones may not
        # have noticed yet if they were running a task): SIGTERM makes them kill their tasks.
        stop_processes(self.workers, grace=2.0)
        self.workers = []
        return self.returncode

    def cleanup_tmp(self) -> None:
        """Remove the per-run TMPDIR (Open MPI leaves ompi.<host>.<uid>/ there on every run)."""
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _exit_code(code: int | None, confined: bool) -> int | None:
    """Makeflow's exit code as Popen gives it: bubblewrap reports its child's death by
    signal N as exit code 128 + N, Popen as -N (makeflow exits 0 or 1 by itself)."""
    if confined and code is not None and code > 128:
        return 128 - code
    return code


def confinement(workdir: Path, writable: Sequence[Path] = ()) -> list[str]:
    """bubblewrap's arguments: the whole filesystem read-only, the job folder (and `writable`)
    writable, a private /dev; network, processes and user shared (the manager listens, and is
    signalled from outside).

    CCTools 9.9's manager writes a returned output wherever the worker's reply names it
    ("file <name>/../../x"): without a TLS link any relay on the path may say so.
    setpriv ties makeflow to bubblewrap (SIGTERM when it dies) as _die_with_parent ties
    bubblewrap to the controller: bubblewrap's own --die-with-parent would SIGKILL makeflow,
    which then neither aborts its tasks nor marks its log.
    """
    args = [BWRAP, "--ro-bind", "/", "/", "--dev", "/dev"]
    for path in [workdir, *writable]:
        args += ["--bind", str(path), str(path)]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]  # root ignores file modes, not read-only mounts
    return [*args, "--chdir", str(workdir), SETPRIV, "--pdeathsig", "TERM", "--"]


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def makeflow_command(
    *,
    paths: LogPaths,
    project: str,
    catalog: str,
    password_file: Path,
    retry_count: int,
    max_remote: int | None,
    log_verbose: bool,
    extra_args: Sequence[str] = (),
) -> list[str]:
    args = [
        MAKEFLOW,
        "--json",
        "-T", "wq",
        "-N", project,
        "-C", catalog,
        f"--password={password_file}",
        "-Z", paths.port_file.name,
        "-l", paths.makeflowlog.name,
        "-L", paths.wqlog.name,
        f"--retry-count={retry_count}",
    ]  # fmt: skip
    if max_remote is not None:
        args.append(f"--max-remote={max_remote}")
    if log_verbose:
        args.append("--log-verbose")
    args.extend(extra_args)
    args.append(paths.dag)
    return args


def start_makeflow(
    *,
    workdir: Path,
    dag: str,
    project: str,
    catalog: str,
    password_file: Path,
    tmpdir: Path,
    retry_count: int,
    max_remote: int | None = DEFAULT_MAX_REMOTE,
    log_verbose: bool = True,
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    attempts: int = STARTUP_ATTEMPTS,
    startup_timeout: float = STARTUP_TIMEOUT,
    die_with_parent: bool = True,
    confine: bool = True,
) -> MakeflowRun:
    """Start (or resume: same folder, same log) `makeflow -T wq` on `workdir/dag`.

    Returns once the manager listens (its port file is written, after parsing and file checks).
    Transient start-up failures (port races) are retried with jitter; any other early exit, or
    no port file within `startup_timeout`, raises StartupError with makeflow's words.
    `max_remote=None` leaves makeflow's own limit (1000 here). `die_with_parent` ties makeflow
    to the calling thread's process: call from the thread that will supervise the run.
    `confine` runs it in bubblewrap, where only `workdir` (and `tmpdir`) can be written.
    """
    workdir = Path(workdir).resolve()
    paths = LogPaths(workdir, dag)
    if not (workdir / dag).is_file():
        raise StartupError(f"no workflow file {workdir / dag}")
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    args = makeflow_command(
        paths=paths,
        project=project,
        catalog=catalog,
        password_file=Path(password_file).resolve(),
        retry_count=retry_count,
        max_remote=max_remote,
        log_verbose=log_verbose,
        extra_args=extra_args,
    )
    if confine:
        if not os.access(BWRAP, os.X_OK):
            raise StartupError(f"makeflow is to be confined, but {BWRAP} is missing (bubblewrap)")
        writable = [] if tmpdir.resolve().is_relative_to(workdir) else [tmpdir.resolve()]
        args = [*confinement(workdir, writable), *args]
    low, high = port_range
    reason = "no attempt made"
    for attempt in range(1, attempts + 1):
        # Port 0 means "first free port from TCP_LOW_PORT": start each try at a random point so
        # that makeflows starting together do not all race for the same port.
        first = low if attempt == attempts else random.randint(low, high)  # noqa: S311
        run_env = _base_env(
            tmpdir, {**(env or {}), "TCP_LOW_PORT": str(first), "TCP_HIGH_PORT": str(high)}
        )
        paths.port_file.unlink(missing_ok=True)
        out_offset, err_offset = _size(paths.stdout), _size(paths.stderr)
        started_at = time.time()
        with _open_log(paths.stdout) as stdout, _open_log(paths.stderr) as stderr:
            popen = subprocess.Popen(
                args,
                cwd=workdir,
                env=run_env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid())
                if die_with_parent
                else None,
            )
        run = MakeflowRun(
            popen,
            paths=paths,
            port=0,
            project=project,
            tmpdir=tmpdir,
            started_at=started_at,
            confined=confine,
        )
        port = _wait_for_port(popen, paths.port_file, startup_timeout)
        if port is not None:
            run.port = port
            run._remember_helpers()
            pid = run.makeflow.pid if run.makeflow else popen.pid
            log.info("makeflow %s of %s listens on port %d", pid, project, port)
            return run
        code = run.poll()
        if code is None:
            # Still parsing or checking files (the port file comes after both): a retry would
            # only start that over.
            run.stop(grace=2.0)
            raise StartupError(f"makeflow {dag}: no port file after {startup_timeout:.0f} s")
        said = _read_from(paths.stderr, err_offset) + _read_from(paths.stdout, out_offset)
        reason = f"exit code {code}: {said.strip()[-2000:]}"
        if not any(marker in said for marker in TRANSIENT_STARTUP_ERRORS):
            raise StartupError(f"makeflow {dag} did not start ({reason})")
        log.warning("makeflow %s start %d/%d failed (%s)", dag, attempt, attempts, reason)
        time.sleep(random.uniform(0.05, 0.3 * attempt))  # noqa: S311
    raise StartupError(f"makeflow {dag} did not start after {attempts} attempts ({reason})")


def _wait_for_port(popen: subprocess.Popen, port_file: Path, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # The file may be seen created but not yet written: only a number counts.
            return int(port_file.read_text().strip())
        except (OSError, ValueError):
            pass
        if popen.poll() is not None:
            return None
        time.sleep(0.02)
    return None


# ---------------------------------------------------------------------------------------------
# Workers


def start_worker(
    *,
    catalog: str | None = None,
    host: str | None = None,
    port: int | None = None,
    project_regex: str | None = None,
    password_file: Path,
    cores: int,
    scratch_dir: Path,
    idle_timeout: int,
    connect_timeout: int | None = None,
    memory: int | None = None,
    disk: int | None = None,
    single_shot: bool = False,
    parent_death: bool = True,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """A worker either for one manager (host and port) or for every manager whose project
    matches `project_regex` in `catalog`.

    Never both: given -M, the worker ignores host and port and asks the catalog, the public one
    at Notre Dame unless -C says otherwise. `connect_timeout` (default: `idle_timeout`) bounds
    how long it tries to reach a manager that is not there (any more).
    """
    direct = host is not None and port is not None
    by_name = catalog is not None and project_regex is not None
    if direct == by_name:
        raise ValueError("give either host and port, or catalog and project_regex")
    scratch_dir = Path(scratch_dir)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    args = [
        WORKER,
        f"--password={Path(password_file).resolve()}",
        f"--cores={cores}",
        f"--idle-timeout={idle_timeout}",
        f"--connect-timeout={connect_timeout or idle_timeout}",
        "-s", str(scratch_dir),
    ]  # fmt: skip
    if memory is not None:
        args.append(f"--memory={memory}")
    if disk is not None:
        args.append(f"--disk={disk}")
    if single_shot:
        args.append("--single-shot")
    if parent_death:
        args.append("--parent-death")
    if direct:
        args += [str(host), str(port)]
    else:
        args += ["-C", str(catalog), "-M", str(project_regex)]
    with _open_log(log_path) as output:
        return subprocess.Popen(
            args,
            env=_base_env(extra=env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )


def start_factory(
    *,
    catalog: str,
    project_regex: str,
    password_file: Path,
    min_workers: int,
    max_workers: int,
    cores_per_worker: int,
    scratch_dir: Path,
    idle_timeout: int,
    log_path: Path,
    parent_death: bool = False,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """`work_queue_factory -T local`: sizes a pool of catalog workers every 30 s.

    Stop it with stop_process(): its own SIGTERM handling kills the shells around its workers,
    not the workers, which stay until their idle timeout.
    """
    scratch_dir = Path(scratch_dir)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    args = [
        FACTORY,
        "-T", "local",
        "-M", project_regex,
        f"--catalog={catalog}",  # -C would be its configuration file
        "-P", str(Path(password_file).resolve()),
        "-w", str(min_workers),
        "-W", str(max_workers),
        f"--cores={cores_per_worker}",
        "-t", str(idle_timeout),
        "-S", str(scratch_dir),
    ]  # fmt: skip
    if parent_death:
        args.append("--parent-death")
    with _open_log(Path(log_path)) as output:
        return subprocess.Popen(
            args,
            env=_base_env(extra=env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )


# How often the pool checks that the managers it serves still listen.
PROBE_SECONDS = 5.0


def _number(value: object) -> int:
    """A catalog figure; 0 when absent or not a number (records come from any datagram)."""
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class DirectPool:
    """Workers for every manager the catalog advertises, pointed straight at its host and port.

    Catalog workers (and the factory's) learn of a new manager up to two minutes late: they
    cache catalog answers for 60 s, empty ones included, and back off up to 60 s between tries.
    This pool asks the catalog itself (the record is there as soon as the manager listens) and
    starts --single-shot workers at the manager's address, which leave when it ends. Call
    step() every second or so from a supervising process on the worker host.

    The catalog believes any datagram: given `trust`, which answers the (project, port) pairs
    of the managers really running, the pool serves only those. It is asked once per step,
    and only when the catalog lists a manager of this deployment.
    """

    def __init__(
        self,
        *,
        catalog: str,
        project_regex: str,
        spec: WorkerSpec,
        max_workers: int,
        per_manager: int | None = None,
        trust: Callable[[], Collection[tuple[str, int]]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.trust = trust
        self.pattern = re.compile(project_regex)
        self.spec = spec
        self.max_workers = max_workers
        self.per_manager = per_manager or max_workers
        self.workers: dict[tuple[str, int], list[subprocess.Popen]] = {}
        # Last catalog update acted upon, per manager: a record that stopped changing belongs
        # to a manager that is gone (records outlive managers), so it gets no new workers.
        self._seen: dict[tuple[str, int], int] = {}
        # Workers each live manager should have, from its latest fresh record.
        self._wanted: dict[tuple[str, int], int] = {}
        # Which manager each address holds (project, start time): a port is reused by the next
        # manager, a resumed makeflow's among them.
        self._ident: dict[tuple[str, int], tuple] = {}
        # Managers found not listening, by identity: never served again, whatever their records
        # say.
        self._gone: set[tuple] = set()
        # Managers given a worker before: a top-up checks first that they still listen.
        self._served: set[tuple[str, int]] = set()
        self._last_probe = 0.0

    def _reap(self) -> int:
        for key, popens in list(self.workers.items()):
            alive = [popen for popen in popens if popen.poll() is None]
            if alive:
                self.workers[key] = alive
            else:
                del self.workers[key]
        return sum(len(popens) for popens in self.workers.values())

    def _release_gone_managers(self) -> None:
        """Stop the workers of managers that no longer listen (finished, canceled, killed):
        a worker started for a manager that died before it connected would keep trying, and
        hold a place in the pool, for its whole connect timeout."""
        now = time.monotonic()
        if now - self._last_probe < PROBE_SECONDS:
            return
        self._last_probe = now
        for key in set(self.workers) | set(self._wanted):
            if not _listening(*key):
                self._forget(key)

    def _forget(self, key: tuple[str, int]) -> None:
        stop_processes(self.workers.pop(key, []), grace=1.0)
        self._wanted.pop(key, None)
        if key in self._ident:
            self._gone.add(self._ident[key])

    def _read_catalog(self) -> None:
        records = [
            record
            for record in query_catalog(self.catalog, timeout=2.0)
            if record.get("type") in ("wq_master", "wq_manager")
            and self.pattern.fullmatch(str(record.get("project", "")))
        ]
        trusted = set(self.trust()) if self.trust is not None and records else None
        now = time.time()
        current, idents = set(), set()
        for record in records:
            project, port = str(record.get("project", "")), _number(record.get("port"))
            if trusted is not None and (project, port) not in trusted:
                continue
            key = (str(record.get("address")), port)
            ident = (*key, project, record.get("starttime"))
            heard = _number(record.get("lastheardfrom"))
            current.add(key)
            idents.add(ident)
            if ident in self._gone:
                continue
            if self._ident.get(key) != ident:
                # A manager new at this address (the last one there, if any, has ended).
                self._ident[key] = ident
                self._seen.pop(key, None)
                self._served.discard(key)
            stale = self._seen.get(key) == heard or now - heard > STALE_RECORD_SECONDS
            if stale:
                continue
            self._seen[key] = heard
            tasks = _number(record.get("tasks_waiting")) + _number(record.get("tasks_running"))
            self._wanted[key] = min(max(tasks, width_hint(project) or 0), self.per_manager)
        self._seen = {key: heard for key, heard in self._seen.items() if key in current}
        self._gone &= idents
        self._served &= current
        self._ident = {key: ident for key, ident in self._ident.items() if key in current}
        self._wanted = {key: n for key, n in self._wanted.items() if key in current}

    def step(self) -> int:
        """Start the workers the catalog says are missing; returns how many were started."""
        self._release_gone_managers()
        running = self._reap()
        try:
            self._read_catalog()
        except (OSError, ValueError) as exc:
            log.warning("direct pool: catalog %s: %s", self.catalog, exc)
            return 0
        wanted = [
            (key, need - len(self.workers.get(key, [])))
            for key, need in self._wanted.items()
            if need > len(self.workers.get(key, []))
        ]
        if running < self.max_workers:
            # A manager that ended since its last probe must not get new workers.
            for key, _ in wanted:
                if key in self._served and not _listening(*key):
                    self._forget(key)
            wanted = [(key, need) for key, need in wanted if key in self._wanted]
        started = 0
        # One worker per manager per round, so that managers seen together share the pool.
        while wanted and running < self.max_workers:
            key, need = wanted.pop(0)
            (host, port) = key
            popen = self.spec.start_single_shot(host, port)
            self.workers.setdefault(key, []).append(popen)
            self._served.add(key)
            running += 1
            started += 1
            if need > 1:
                wanted.append((key, need - 1))
        return started

    def stop(self, grace: float = 5.0) -> None:
        stop_processes([popen for popens in self.workers.values() for popen in popens], grace)
        self.workers = {}


# ---------------------------------------------------------------------------------------------
# Pictures

MAKEFLOW_VIZ = "/usr/bin/makeflow_viz"
DOT = "/usr/bin/dot"


def render_graph(workdir: Path, dag: str, *, timeout: float = 30.0) -> bytes:
    """The workflow as an SVG picture: makeflow_viz writes Graphviz, dot draws it."""
    viz = subprocess.run(
        [MAKEFLOW_VIZ, "-D", "dot", "--json", "--dot-task-id", dag],
        cwd=workdir,
        capture_output=True,
        timeout=timeout,
        env=_base_env(),
        check=True,
    )
    drawn = subprocess.run(
        [DOT, "-Tsvg"], input=viz.stdout, capture_output=True, timeout=timeout, check=True
    )
    return drawn.stdout
