"""Workers for a host: a direct pool of single-shot workers beside work_queue_factory.

`python -m jobs.cctools.pool` runs them without Django (a worker host needs no database);
`manage.py lmweb_workers` runs the same loop with the deployment's settings, and trusts only the
managers the database knows as running jobs.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .catalog import MANAGER_TYPES, STALE_RECORD_SECONDS, number, query_catalog
from .processes import stop_process, stop_processes
from .projects import project_regex as deployment_regex
from .projects import width_hint
from .workers import WorkerSpec, start_factory

log = logging.getLogger(__name__)

# How often the pool checks that the managers it serves still listen.
PROBE_SECONDS = 5.0


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

    The catalog also keeps the records of managers killed without a word for its lifetime:
    before its first worker, every manager is probed (a TCP connection to its port), and one
    that does not answer is never served, so no worker waits out its connect timeout on it.
    `announce(host, port, project)` is told of each worker started.
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
    ) -> None:
        self.catalog = catalog
        self.announce = announce
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
            if record.get("type") in MANAGER_TYPES
            and self.pattern.fullmatch(str(record.get("project", "")))
        ]
        trusted = set(self.trust()) if self.trust is not None and records else None
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
            stale = self._seen.get(key) == heard or now - heard > STALE_RECORD_SECONDS
            if stale:
                continue
            self._seen[key] = heard
            tasks = number(record.get("tasks_waiting")) + number(record.get("tasks_running"))
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
            # A manager never served may be a dead one's record, and one served may have ended
            # since its last probe: neither gets a worker unless it listens.
            listening = _probe([key for key, _ in wanted])
            for key, _ in wanted:
                if not listening[key]:
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
            if self.announce is not None:
                self.announce(host, port, str(self._ident.get(key, ("", "", ""))[2]))
            running += 1
            started += 1
            if need > 1:
                wanted.append((key, need - 1))
        return started

    def stop(self, grace: float = 5.0) -> None:
        stop_processes([popen for popens in self.workers.values() for popen in popens], grace)
        self.workers = {}


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
    say: Callable[[str], None] = _say,
) -> None:
    """Supply workers to every manager matching `project_regex` until SIGTERM or SIGINT.

    Two sources side by side: work_queue_factory (workers that find managers through the
    catalog, the standard way, 20 s to 2 min late) and a DirectPool that reads the catalog
    every `interval` seconds and points single-shot workers straight at each new manager
    (under a second). `trust` is handed to the DirectPool; `task_env` to every worker's tasks.
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
        )
    each = f"{cores} core(s)" + ("" if memory is None else f" and {memory} MB")
    say(
        f"workers: up to {max_workers} x {each} for {project_regex} via "
        f"{catalog} (factory {'on' if factory else 'off'}, "
        f"direct pool {'on' if direct else 'off'})"
    )
    try:
        while not stopping:
            if pool is not None:
                started = pool.step()
                if started:
                    say(f"workers: started {started} direct worker(s)")
            if factory_popen is not None and factory_popen.poll() is not None:
                raise PoolError(f"work_queue_factory exited with {factory_popen.returncode}")
            time.sleep(interval)
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
