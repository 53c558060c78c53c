"""Workers for a host: a direct pool of single-shot workers beside work_queue_factory.

`python -m jobs.cctools.pool` runs them without Django (a worker host needs no database);
`manage.py lmweb_workers` runs the same loop with the deployment's settings, and trusts only the
managers the database knows as running jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .catalog import MANAGER_TYPES, STALE_RECORD_SECONDS, number, query_catalog
from .processes import sessions_members, stop_process, stop_processes, terminate
from .projects import project_regex as deployment_regex
from .projects import width_hint
from .workers import WorkerSpec, start_factory

log = logging.getLogger(__name__)

# How often the pool checks that the managers it serves still listen.
PROBE_SECONDS = 5.0
# A worker this long without a task has nothing to do: a manager with work sends a free worker
# its next task within milliseconds (3 ms between two tasks measured here). A new worker gets
# longer, for connecting to its manager on a loaded host.
IDLE_SECONDS = 0.5
FIRST_TASK_SECONDS = 3.0
# How often the workers chosen to leave are looked at: a task sent to one meanwhile has run
# at most this long when the worker stops (it goes back to the manager's queue).
WATCH_SECONDS = 0.02
# A worker chosen to leave that is still on the same task after this long, while some job has
# no worker at all, is stopped mid-task (the last resort: its rule runs again).
PREEMPT_SECONDS = 120.0
# The shares are reported when they change, and at least this often.
REPORT_SECONDS = 5.0

Key = TypeVar("Key", bound=Hashable)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _probe(keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bool]:
    """Which of these managers listen, asked all at once: a host that drops packets costs
    its timeout once, not once per record."""
    if len(keys) <= 1:
        return {key: _listening(*key) for key in keys}
    with ThreadPoolExecutor(max_workers=min(len(keys), 32)) as probes:
        return dict(zip(keys, probes.map(lambda key: _listening(*key), keys), strict=True))


def fair_shares(
    slots: int, demands: Mapping[Key, int], users: Mapping[Key, Hashable] | None = None
) -> dict[Key, int]:
    """Max-min fair places: every user an equal part of `slots`, each user's part split
    equally among that user's jobs, no job above its demand, and what one cannot use shared
    by the others.

    `demands` maps each job (a manager) to the workers it can use; `users` says whose each
    job is (a job without a user is a user of its own). Ties go to the job listed first, so
    that the split of an odd place does not move from one job to another between calls.
    """
    users = users or {}
    given = dict.fromkeys(demands, 0)
    jobs_of: dict[Hashable, list[Key]] = {}
    for key in demands:
        jobs_of.setdefault(users.get(key, ("job", key)), []).append(key)
    held = dict.fromkeys(jobs_of, 0)
    for _ in range(max(slots, 0)):
        wanting = {
            user: [key for key in keys if given[key] < demands[key]]
            for user, keys in jobs_of.items()
        }
        wanting = {user: keys for user, keys in wanting.items() if keys}
        if not wanting:
            break
        user = min(wanting, key=lambda user: held[user])
        key = min(wanting[user], key=lambda key: given[key])
        given[key] += 1
        held[user] += 1
    return given


@dataclass
class _Worker:
    """What the pool knows of one of its workers: where it keeps its tasks' sandboxes."""

    workspace: Path
    # When it was started, or last seen holding a task (time.monotonic()).
    busy_at: float
    # The tasks it held at the last look, when that was, and since when it holds them.
    tasks: frozenset[str] = frozenset()
    looked_at: float = 0.0
    task_since: float = 0.0
    had_task: bool = False

    def look(self) -> frozenset[str]:
        """The tasks in its workspace now.

        A worker makes t.N for task N when the task arrives, and removes it once the manager
        has taken the task's outputs back; between two tasks it holds none (for about 3 ms
        here, the manager sends the next task as soon as the last one is collected).
        """
        try:
            with os.scandir(self.workspace) as entries:
                tasks = frozenset(entry.name for entry in entries if entry.name.startswith("t."))
        except OSError:
            tasks = frozenset()
        now = time.monotonic()
        self.looked_at = now
        if tasks:
            self.busy_at, self.had_task = now, True
        if tasks != self.tasks:
            self.tasks, self.task_since = tasks, now
        return tasks

    def idle(self, now: float) -> bool:
        wait = IDLE_SECONDS if self.had_task else FIRST_TASK_SECONDS
        return not self.look() and now - self.busy_at >= wait


class DirectPool:
    """Workers for every manager the catalog advertises, pointed straight at its host and port,
    shared fairly between the managers' users and jobs.

    Catalog workers (and the factory's) learn of a new manager up to two minutes late: they
    cache catalog answers for 60 s, empty ones included, and back off up to 60 s between tries.
    This pool asks the catalog itself (the record is there as soon as the manager listens) and
    starts --single-shot workers at the manager's address, which leave when it ends. Call
    step() every second or so from a supervising process on the worker host, and watch()
    every WATCH_SECONDS while `leaving` says some workers are to leave.

    Fair share: each manager's demand is its tasks (the catalog's figures, or the width hint
    in its project name) less what its own workers show (a job whose worker has had no task
    for IDLE_SECONDS, or none yet for FIRST_TASK_SECONDS, has no more work waiting).
    fair_shares() turns the demands into a target per manager: every user gets an equal part
    of the pool (the user of a manager is what `trust` maps it to; each job is its own user
    without one). Workers start toward the targets; a manager holding more than its target
    while another waits below its own gives workers back, without losing work: first its idle
    workers, then each busy one at the end of its task (once the manager has collected the
    outputs: the task it was sent next, if any, goes back to the manager's queue not yet
    run). A worker of several cores leaves when none of the tasks it held at the last look
    is left, which a busy one may never reach but through the last resort. Only a worker
    still on the same task after `preempt_after` seconds, while a job has no worker at all,
    is stopped mid-task (its rule runs again): `preempted` counts those.

    The catalog believes any datagram: given `trust`, which answers the (project, port) pairs
    of the managers really running (a mapping to each one's user, or just the pairs), the
    pool serves only those. It is asked once per step, and only when the catalog lists a
    manager of this deployment.

    The catalog also keeps the records of managers killed without a word for its lifetime:
    before its first worker, every manager is probed (a TCP connection to its port), and one
    that does not answer is never served, so no worker waits out its connect timeout on it.
    `announce(host, port, project)` is told of each worker started, `notice(text)` of each
    worker taken back, and `report({project: (held, target)})` of the shares when they change
    (and every REPORT_SECONDS).
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
        announce: Callable[[str, int, str], None] | None = None,
        notice: Callable[[str], None] | None = None,
        report: Callable[[dict[str, tuple[int, int]]], None] | None = None,
        preempt_after: float | None = PREEMPT_SECONDS,
    ) -> None:
        self.catalog = catalog
        self.announce = announce
        self.notice = notice
        self.report = report
        self.trust = trust
        self.pattern = re.compile(project_regex)
        self.spec = spec
        self.max_workers = max_workers
        self.per_manager = per_manager or max_workers
        self.preempt_after = preempt_after
        self.workers: dict[tuple[str, int], list[subprocess.Popen]] = {}
        self._state: dict[int, _Worker] = {}
        # Workers taken back whose sessions and workspaces are still to be cleared.
        self._swept: list[tuple[int, Path]] = []
        # Last catalog update acted upon, per manager: a record that stopped changing belongs
        # to a manager that is gone (records outlive managers), so it gets no new workers.
        self._seen: dict[tuple[str, int], int] = {}
        # Workers each live manager could use, from its latest fresh record (first seen first).
        self._wanted: dict[tuple[str, int], int] = {}
        # Fewer, when its own workers showed that it narrowed (an idle worker).
        self._narrowed: dict[tuple[str, int], int] = {}
        # Whose each manager is (from `trust`).
        self._users: dict[tuple[str, int], Hashable] = {}
        self.targets: dict[tuple[str, int], int] = {}
        # Workers each manager is to give back at the end of their tasks, and since when.
        self.leaving: dict[tuple[str, int], int] = {}
        self._leaving_since: dict[tuple[str, int], float] = {}
        self.taken_back = {"idle": 0, "between tasks": 0, "mid-task": 0}
        self._reported: dict[str, tuple[int, int]] | None = None
        self._reported_at = 0.0
        # Which manager each address holds (project, start time): a port is reused by the next
        # manager, a resumed makeflow's among them.
        self._ident: dict[tuple[str, int], tuple] = {}
        # Managers found not listening, by identity: never served again, whatever their records
        # say.
        self._gone: set[tuple] = set()
        # Managers given a worker before: a top-up checks first that they still listen.
        self._served: set[tuple[str, int]] = set()
        self._last_probe = 0.0

    @property
    def preempted(self) -> int:
        return self.taken_back["mid-task"]

    def _reap(self) -> int:
        for key, popens in list(self.workers.items()):
            alive = [popen for popen in popens if popen.poll() is None]
            for popen in popens:
                if popen.poll() is not None:
                    self._state.pop(popen.pid, None)
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
        popens = self.workers.pop(key, [])
        stop_processes(popens, grace=1.0)
        for popen in popens:
            self._state.pop(popen.pid, None)
        self._wanted.pop(key, None)
        if key in self._ident:
            self._gone.add(self._ident[key])

    def _read_catalog(self) -> None:
        records = [
            record
            for record in query_catalog(self.catalog, timeout=2.0)
            if record.get("type") in MANAGER_TYPES
            and self.pattern.fullmatch(str(record.get("project", "")))
        ]
        trusted = self.trust() if self.trust is not None and records else None
        if isinstance(trusted, Mapping):
            self._users = {
                (str(record.get("address")), number(record.get("port"))): trusted[key]
                for record in records
                if (key := (str(record.get("project", "")), number(record.get("port")))) in trusted
            }
        trusted = set(trusted) if trusted is not None else None
        now = time.time()
        current, idents = set(), set()
        for record in records:
            project, port = str(record.get("project", "")), number(record.get("port"))
            if trusted is not None and (project, port) not in trusted:
                continue
            key = (str(record.get("address")), port)
            ident = (*key, project, record.get("starttime"))
            heard = number(record.get("lastheardfrom"))
            current.add(key)
            idents.add(ident)
            if ident in self._gone:
                continue
            if self._ident.get(key) != ident:
                # A manager new at this address (the last one there, if any, has ended).
                self._ident[key] = ident
                self._seen.pop(key, None)
                self._served.discard(key)
                self._narrowed.pop(key, None)
            stale = self._seen.get(key) == heard or now - heard > STALE_RECORD_SECONDS
            if stale:
                continue
            self._seen[key] = heard
            tasks = number(record.get("tasks_waiting")) + number(record.get("tasks_running"))
            self._wanted[key] = min(max(tasks, width_hint(project) or 0), self.per_manager)
            if key in self._narrowed:
                # The manager's own figures, fresh: it may have widened again.
                self._narrowed[key] = max(self._narrowed[key], tasks)
        self._seen = {key: heard for key, heard in self._seen.items() if key in current}
        self._gone &= idents
        self._served &= current
        self._ident = {key: ident for key, ident in self._ident.items() if key in current}
        self._wanted = {key: n for key, n in self._wanted.items() if key in current}
        self._narrowed = {key: n for key, n in self._narrowed.items() if key in self._wanted}

    def _demand(self, key: tuple[str, int], now: float) -> int:
        """What the manager can use: its catalog figure or width hint, unless its workers show
        that it narrowed since (an idle one: its manager has no task for it)."""
        popens = self.workers.get(key, [])
        idle = sum(self._state[popen.pid].idle(now) for popen in popens)
        if idle:
            self._narrowed[key] = len(popens) - idle
        elif key in self._narrowed:
            self._narrowed[key] = max(self._narrowed[key], len(popens))
        return min(self._wanted[key], self._narrowed.get(key, self._wanted[key]))

    def step(self) -> int:
        """Read the catalog, set each manager's target, start the workers that are missing and
        choose the ones to give back; returns how many were started."""
        self._release_gone_managers()
        running = self._reap()
        try:
            self._read_catalog()
        except (OSError, ValueError) as exc:
            log.warning("direct pool: catalog %s: %s", self.catalog, exc)
            return 0
        now = time.monotonic()
        demands = {key: self._demand(key, now) for key in self._wanted}
        self.targets = fair_shares(self.max_workers, demands, self._users)
        missing = [
            key
            for key in self.targets
            if self._short(key) and (running < self.max_workers or key not in self._served)
        ]
        if missing:
            # A manager never served may be a dead one's record, and one served may have ended
            # since its last probe: neither gets a worker unless it listens.
            listening = _probe(missing)
            for key in missing:
                if not listening[key]:
                    self._forget(key)
                    self.targets.pop(key, None)
        started = self._fill()
        self._choose_leavers(now)
        started += self._fill()
        self._sweep()
        self._report()
        return started

    def _short(self, key: tuple[str, int]) -> int:
        return max(0, self.targets.get(key, 0) - len(self.workers.get(key, [])))

    def _fill(self) -> int:
        """Start workers toward the targets, one per manager per round, so that managers seen
        together share the pool."""
        running = sum(len(popens) for popens in self.workers.values())
        started = 0
        wanted = [key for key in self.targets if self._short(key)]
        while wanted and running < self.max_workers:
            key = wanted.pop(0)
            self._start(key)
            running += 1
            started += 1
            if self._short(key):
                wanted.append(key)
        return started

    def _start(self, key: tuple[str, int]) -> None:
        host, port = key
        popen = self.spec.start_single_shot(host, port)
        workspace = Path(self.spec.scratch_dir) / f"worker-{os.getuid()}-{popen.pid}"
        self._state[popen.pid] = _Worker(workspace, busy_at=time.monotonic())
        self.workers.setdefault(key, []).append(popen)
        self._served.add(key)
        if self.announce is not None:
            self.announce(host, port, self._project(key))

    def _project(self, key: tuple[str, int]) -> str:
        return str(self._ident.get(key, ("", "", ""))[2])

    def _choose_leavers(self, now: float) -> None:
        """Managers above their target give back what the managers below theirs lack and the
        free places do not cover: idle workers at once, busy ones at the end of their task."""
        running = sum(len(popens) for popens in self.workers.values())
        lacking = sum(self._short(key) for key in self.targets) - (self.max_workers - running)
        leaving: dict[tuple[str, int], int] = {}
        over = sorted(
            (key for key in self.workers if len(self.workers[key]) > self.targets.get(key, 0)),
            key=lambda key: self.targets.get(key, 0) - len(self.workers[key]),
        )
        for key in over:
            if lacking <= 0:
                break
            extra = min(len(self.workers[key]) - self.targets.get(key, 0), lacking)
            for popen in list(self.workers[key]):
                idle = extra and self._state[popen.pid].idle(now)
                if idle and self._take_back(key, popen, "idle"):
                    extra -= 1
                    lacking -= 1
            if extra:
                leaving[key] = extra
                lacking -= extra
        self._leaving_since = {key: self._leaving_since.get(key, now) for key in leaving}
        self.leaving = leaving

    def watch(self) -> int:
        """Give back the workers chosen to leave whose task has ended, and start workers for
        the managers waiting for them; returns how many were started."""
        now = time.monotonic()
        freed = 0
        for key, count in list(self.leaving.items()):
            # Every worker of the manager is looked at each time, so that "the last look" is
            # never older than a few WATCH_SECONDS when it decides.
            for popen in list(self.workers.get(key, [])):
                state = self._state[popen.pid]
                before, fresh = state.tasks, now - state.looked_at <= 10 * WATCH_SECONDS
                tasks = state.look()
                if count <= 0 or not fresh or before & tasks:
                    continue  # still on a task it had at the last look
                # Every task it had is collected; a task that came since has run for at most
                # the time since the last look, and goes back to the manager's queue.
                how = "idle" if not before and not tasks else "between tasks"
                if self._take_back(key, popen, how):
                    count -= 1
                    freed += 1
            if count and self._may_preempt(key, now):
                popen = min(self.workers[key], key=lambda popen: -self._state[popen.pid].task_since)
                self._take_back(key, popen, "mid-task")
                count -= 1
                freed += 1
            self.leaving[key] = count
            if not count:
                del self.leaving[key]
                self._leaving_since.pop(key, None)
        started = self._fill() if freed else 0
        self._sweep()
        return started

    def _may_preempt(self, key: tuple[str, int], now: float) -> bool:
        """The last resort: a worker has been leaving for `preempt_after` seconds, and some
        manager that should have workers still has none."""
        if self.preempt_after is None or not self.workers.get(key):
            return False
        if now - self._leaving_since.get(key, now) < self.preempt_after:
            return False
        return any(target and not self.workers.get(other) for other, target in self.targets.items())

    def _take_back(self, key: tuple[str, int], popen: subprocess.Popen, how: str) -> bool:
        """Stop one worker. It is frozen first, so that no task starts on it meanwhile; an idle
        one that got a task after all is let go on. A task sent to it and not started goes
        back to its manager's queue when the worker disconnects.

        SIGKILL, not SIGTERM: on SIGTERM this worker finishes its task, then exits without
        handing the result back, and the manager runs the task again.
        """
        state = self._state[popen.pid]
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGSTOP)
        if how == "idle" and state.look():
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGCONT)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)
        # What is left of its tasks and its workspace goes after its place is filled again.
        self._swept.append((popen.pid, state.workspace))
        self.workers[key].remove(popen)
        if not self.workers[key]:
            del self.workers[key]
        self._state.pop(popen.pid, None)
        self.taken_back[how] += 1
        if self.notice is not None:
            project = self._project(key)
            said = {
                "idle": "an idle worker",
                "between tasks": "a worker at the end of its task",
                "mid-task": "a worker in the middle of a task (its rule runs again)",
            }[how]
            self.notice(f"took back {said} from {project}")
        return True

    def _sweep(self) -> None:
        """Stop what is left of the workers taken back (task processes in their sessions) and
        remove their workspaces: one pass over /proc for all of them."""
        if not self._swept:
            return
        swept, self._swept = self._swept, []
        leftovers = sessions_members([pid for pid, _ in swept])
        if leftovers:
            terminate(leftovers, 1.0)
        for _, workspace in swept:
            shutil.rmtree(workspace, ignore_errors=True)

    def shares(self) -> dict[str, tuple[int, int]]:
        """(workers held, target) per manager's project."""
        return {
            self._project(key): (len(self.workers.get(key, [])), target)
            for key, target in self.targets.items()
        }

    def _report(self) -> None:
        if self.report is None:
            return
        shares = self.shares()
        now = time.monotonic()
        if shares != self._reported or now - self._reported_at >= REPORT_SECONDS:
            self.report(shares)
            self._reported, self._reported_at = shares, now

    def stop(self, grace: float = 5.0) -> None:
        stop_processes([popen for popens in self.workers.values() for popen in popens], grace)
        self.workers = {}
        self._state = {}
        self._sweep()


def say_changes(say: Callable[[str], None]) -> Callable[[dict[str, tuple[int, int]]], None]:
    """A `report` for DirectPool that says each change of the shares."""
    last: list[dict] = [{}]

    def report(shares: dict[str, tuple[int, int]]) -> None:
        if shares != last[0]:
            say(f"workers: shares {_shares_text(shares)}")
            last[0] = shares

    return report


def _shares_text(shares: Mapping[str, tuple[int, int]]) -> str:
    """'PROJECT held/target, ...' or 'none'."""
    text = ", ".join(f"{name} {held}/{target}" for name, (held, target) in shares.items())
    return text or "none"


class PoolError(RuntimeError):
    """The workers of a host cannot be supplied (no password file, the factory exited)."""


def _say(text: str) -> None:
    print(text, flush=True)  # a supervisor's log, read while the pool runs


def serve(
    *,
    catalog: str,
    project_regex: str,
    password_file: Path,
    scratch_dir: Path,
    max_workers: int,
    cores: int,
    idle_timeout: int,
    memory: int | None = None,
    interval: float = 0.25,
    factory: bool = True,
    direct: bool = True,
    task_env: Mapping[str, str] | None = None,
    trust: Callable[[], Collection[tuple[str, int]]] | None = None,
    report: Callable[[dict[str, tuple[int, int]]], None] | None = None,
    say: Callable[[str], None] = _say,
) -> None:
    """Supply workers to every manager matching `project_regex` until SIGTERM or SIGINT.

    Two sources side by side: work_queue_factory (workers that find managers through the
    catalog, the standard way, 20 s to 2 min late) and a DirectPool that reads the catalog
    every `interval` seconds and points single-shot workers straight at each new manager
    (under a second), shared fairly between jobs and users. `trust` and `report` are handed
    to the DirectPool (`report` defaults to saying each change of the shares); `task_env` to
    every worker's tasks.
    Each worker offers `cores` cores and `memory` MB (all of the host's when None).
    """
    if not Path(password_file).is_file():
        raise PoolError(f"no Work Queue password file at {password_file}")
    scratch_dir = Path(scratch_dir)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    env = dict(task_env or {})
    factory_popen = None
    if factory:
        factory_popen = start_factory(
            catalog=catalog,
            project_regex=project_regex,
            password_file=password_file,
            min_workers=0,
            max_workers=max_workers,
            cores_per_worker=cores,
            scratch_dir=scratch_dir / "factory",
            idle_timeout=idle_timeout,
            log_path=scratch_dir / "factory.log",
            env=env,
        )
    if report is None:
        report = say_changes(say)
    pool = None
    if direct:
        pool = DirectPool(
            catalog=catalog,
            project_regex=project_regex,
            spec=WorkerSpec(
                password_file=password_file,
                scratch_dir=scratch_dir / "direct",
                cores=cores,
                memory=memory,
                idle_timeout=idle_timeout,
                env=tuple(env.items()),
            ),
            max_workers=max_workers,
            trust=trust,
            announce=lambda host, port, project: say(
                f"workers: a worker for {project} at {host}:{port}"
            ),
            notice=lambda text: say(f"workers: {text}"),
            report=report,
        )
    each = f"{cores} core(s)" + ("" if memory is None else f" and {memory} MB")
    say(
        f"workers: up to {max_workers} x {each} for {project_regex} via "
        f"{catalog} (factory {'on' if factory else 'off'}, "
        f"direct pool {'on' if direct else 'off'})"
    )
    try:
        next_step = 0.0
        while not stopping:
            started = 0
            if pool is not None and time.monotonic() >= next_step:
                started = pool.step()
                next_step = time.monotonic() + interval
            elif pool is not None:
                started = pool.watch()
            if started:
                say(f"workers: started {started} direct worker(s)")
            if factory_popen is not None and factory_popen.poll() is not None:
                raise PoolError(f"work_queue_factory exited with {factory_popen.returncode}")
            # Workers chosen to leave are watched closely: each leaves as its task ends.
            time.sleep(WATCH_SECONDS if pool is not None and pool.leaving else interval)
    finally:
        if pool is not None:
            pool.stop()
        if factory_popen is not None:
            stop_process(factory_popen, grace=5)


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def run_or_exit(parser: argparse.ArgumentParser, start: Callable[[], None]) -> int:
    """Run a command's `start`: a PoolError ends it with status 1 and the reason."""
    try:
        start()
    except PoolError as exc:
        parser.exit(1, f"{parser.prog}: {exc}\n")
    return 0


def add_task_env_option(parser: argparse.ArgumentParser) -> None:
    """--task-env NAME=VALUE, repeatable: the environment handed to every task."""
    parser.add_argument(
        "--task-env",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="handed to every task (e.g. LMWEB_RULE_SANDBOX=required)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Without Django: no database to tell running managers from forged catalog records, so
    the direct pool serves every manager the catalog lists, as the factory's workers do (the
    password still decides who gets a worker's tasks)."""
    parser = argparse.ArgumentParser(
        prog="python -m jobs.cctools.pool", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--catalog", required=True, help="the catalog server, HOST:PORT")
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--scratch-dir", type=Path, required=True)
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--deployment", default="local", help="serve lmweb-DEPLOYMENT-* projects")
    names.add_argument("--project-regex", help="serve the projects this pattern matches")
    parser.add_argument("--max-workers", type=int, default=1)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--idle-timeout", type=int, default=120)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--no-factory", action="store_true", help="direct pool only")
    parser.add_argument("--no-direct", action="store_true", help="factory only")
    add_task_env_option(parser)
    options = parser.parse_args(argv)
    return run_or_exit(
        parser,
        lambda: serve(
            catalog=options.catalog,
            project_regex=options.project_regex or deployment_regex(options.deployment),
            password_file=options.password_file,
            scratch_dir=options.scratch_dir,
            max_workers=options.max_workers,
            cores=options.cores,
            idle_timeout=options.idle_timeout,
            interval=options.interval,
            factory=not options.no_factory,
            direct=not options.no_direct,
            task_env=dict(options.task_env),
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
