"""Workers for a host: a direct pool of single-shot workers, pointed at each new manager."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import time
from collections.abc import Callable, Collection

from .catalog import MANAGER_TYPES, STALE_RECORD_SECONDS, number, query_catalog
from .processes import stop_processes
from .projects import width_hint
from .workers import WorkerSpec

log = logging.getLogger(__name__)

# How often the pool checks that the managers it serves still listen.
PROBE_SECONDS = 5.0


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
