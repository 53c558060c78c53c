"""Makeflow: starting (or resuming) one confined run, following its processes, stopping it."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .log import LogPaths
from .processes import (
    ProcessId,
    StartupError,
    base_env,
    children,
    is_alive,
    open_log,
    process_id,
    send_signal,
    session_members,
    stop_processes,
    terminate,
    terminate_with_parent,
)

if TYPE_CHECKING:
    from .workers import WorkerSpec

log = logging.getLogger(__name__)

# Absolute paths: makeflow started by bare name races with another one in the same folder
# ("generating absolute path to makeflow: File exists").
MAKEFLOW = "/usr/bin/makeflow"
# Debian's bubblewrap: each makeflow sees the filesystem read-only except its job folder.
BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
MAKEFLOW_VIZ = "/usr/bin/makeflow_viz"
DOT = "/usr/bin/dot"

# Managers listen on the first free port from TCP_LOW_PORT; workers must be able to reach them.
DEFAULT_PORT_RANGE = (9200, 9999)
# Rules in flight per makeflow: unbounded, wide DAGs run 3x slower (see CCTOOLS.md).
DEFAULT_MAX_REMOTE = 100
STARTUP_ATTEMPTS = 4
STARTUP_TIMEOUT = 120.0

# Start-up failures that a second try fixes: two managers binding the same port at once, two
# makeflows resolving their own path at once.
TRANSIENT_STARTUP_ERRORS = (
    "Could not create work_queue",
    "couldn't create batch queue",
    "generating absolute path",
)


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
                send_signal(makeflow, signal.SIGTERM)
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
                    send_signal(makeflow, signal.SIGKILL)
                self.wait(timeout=10)
        # local_job rules and orted: whatever survived makeflow.
        terminate([*session_members(self.pid), *self._helpers], 2.0)
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
    setpriv ties makeflow to bubblewrap (SIGTERM when it dies) as terminate_with_parent ties
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
        run_env = base_env(
            tmpdir, {**(env or {}), "TCP_LOW_PORT": str(first), "TCP_HIGH_PORT": str(high)}
        )
        paths.port_file.unlink(missing_ok=True)
        out_offset, err_offset = _size(paths.stdout), _size(paths.stderr)
        started_at = time.time()
        with open_log(paths.stdout) as stdout, open_log(paths.stderr) as stderr:
            popen = subprocess.Popen(
                args,
                cwd=workdir,
                env=run_env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=functools.partial(terminate_with_parent, os.getpid())
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


def render_graph(workdir: Path, dag: str, *, timeout: float = 30.0) -> bytes:
    """The workflow as an SVG picture: makeflow_viz writes Graphviz, dot draws it."""
    viz = subprocess.run(
        [MAKEFLOW_VIZ, "-D", "dot", "--json", "--dot-task-id", dag],
        cwd=workdir,
        capture_output=True,
        timeout=timeout,
        env=base_env(),
        check=True,
    )
    drawn = subprocess.run(
        [DOT, "-Tsvg"], input=viz.stdout, capture_output=True, timeout=timeout, check=True
    )
    return drawn.stdout


def version(*, timeout: float = 10.0) -> str:
    """The first line of `makeflow -v` (CCTools' version), "unknown" if it does not answer."""
    try:
        first = subprocess.run(
            [MAKEFLOW, "-v"], capture_output=True, text=True, timeout=timeout, env=base_env()
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return first[0].strip() if first else "unknown"
