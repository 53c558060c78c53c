"""Processes we start: identities from /proc, whole-session stops, their environment and logs."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StartupError(RuntimeError):
    """Makeflow (or another CCTools process) did not come up."""


# A reused pid is never signalled by mistake: a process is known by its pid and start time.


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


def sessions_members(sids: Collection[int]) -> list[ProcessId]:
    """Every live process of any of these sessions, in one pass over /proc."""
    sids = set(sids)
    found = []
    for other in _all_pids() if sids else ():
        stat = _stat(other)
        if stat and stat[3] in sids and stat[0] not in ("Z", "X"):
            found.append(ProcessId(other, stat[4]))
    return found


def send_signal(process: ProcessId, sig: int) -> None:
    """Signal a process if it is still the one we knew."""
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


def terminate(processes: Sequence[ProcessId], grace: float) -> None:
    """SIGTERM, then SIGKILL whatever is still there after `grace` seconds."""
    for process in processes:
        send_signal(process, signal.SIGTERM)
    for process in _wait_gone(processes, grace):
        send_signal(process, signal.SIGKILL)
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
        terminate(leftovers, min(grace, 2.0))


def terminate_with_parent(parent: int) -> None:  # pragma: no cover - runs between fork and exec
    """preexec_fn: SIGTERM to the child when `parent` dies.

    PR_SET_PDEATHSIG: if the controller process dies, makeflow gets SIGTERM, aborts its tasks
    and marks its log ABORTED, instead of running on unsupervised while recovery starts a
    second makeflow on the same log.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def open_log(path: Path | None) -> contextlib.AbstractContextManager:
    """A file to append a child's output to (the child keeps its own descriptor)."""
    if path is None:
        return contextlib.nullcontext(subprocess.DEVNULL)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


def spawn(
    args: Sequence[str], *, log_path: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """Start a CCTools daemon in a session of its own (stop_process sweeps that session), its
    output appended to `log_path` (or dropped), in base_env() plus `env`."""
    with open_log(log_path) as output:
        return subprocess.Popen(
            args,
            env=base_env(extra=env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )


def base_env(tmpdir: Path | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
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
