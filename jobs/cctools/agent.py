"""lmweb-worker: a host lends its cores and memory to one deployment's jobs, with one command.

    lmweb-worker --catalog HOST:PORT --password-file FILE [--deployment NAME] [--cores N]
                 [--memory MB]

Installed on its own (`pip install ./worker` from the repository: no Django, no database), it
runs the direct pool of jobs.cctools.pool alone: it reads the catalog four times a second,
probes each new manager's port before its first worker (the catalog keeps the records of
killed makeflows, and workers would wait out their connect timeout on them), and starts
single-shot workers at the managers that listen. Never more than --cores cores and --memory MB
in all: each worker offers --worker-cores cores and an equal share of the memory. The workers
are shared fairly between the running jobs (it knows no users: each job counts as one), and
a job holding more than its share gives workers back at the end of their tasks when another
waits. SIGTERM or SIGINT stops every worker (and its tasks) before the command exits.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .pool import PoolError, add_task_env_option, run_or_exit, serve
from .projects import project_regex
from .workers import WORKER


def host_cores() -> int:
    """The cores this process may run on (a container's or cgroup's cpuset, not the machine's)."""
    return len(os.sched_getaffinity(0))


def host_memory() -> int:
    """The machine's memory in MB (MemTotal)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise PoolError("no MemTotal in /proc/meminfo")


def plan(cores: int, memory: int, worker_cores: int) -> tuple[int, int]:
    """(how many workers, MB each) so that the workers together stay within the caps."""
    if cores < 1 or memory < 1 or worker_cores < 1:
        raise PoolError("--cores, --memory and --worker-cores must be at least 1")
    workers = cores // min(worker_cores, cores)
    return workers, memory // workers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lmweb-worker",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--catalog", required=True, help="the service's catalog server, HOST:PORT")
    parser.add_argument(
        "--password-file", type=Path, required=True, help="the Work Queue password of the service"
    )
    parser.add_argument("--deployment", default="local", help="serve lmweb-DEPLOYMENT-* jobs")
    parser.add_argument(
        "--cores", type=int, default=None, help="cores for all workers together (default: all)"
    )
    parser.add_argument(
        "--memory", type=int, default=None, help="MB for all workers together (default: all)"
    )
    parser.add_argument("--worker-cores", type=int, default=1, help="cores of each worker")
    parser.add_argument(
        "--scratch-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"lmweb-worker-{os.getuid()}",
        help="where workers keep their files",
    )
    parser.add_argument(
        "--idle-timeout", type=int, default=60, help="seconds a worker waits for a task"
    )
    add_task_env_option(parser)
    options = parser.parse_args(argv)
    return run_or_exit(parser, lambda: _serve(options))


def _serve(options: argparse.Namespace) -> None:
    if not Path(WORKER).is_file():
        raise PoolError(f"no {WORKER}: install CCTools (Debian: coop-computing-tools)")
    cores = options.cores if options.cores is not None else host_cores()
    memory = options.memory if options.memory is not None else host_memory()
    workers, memory_each = plan(cores, memory, options.worker_cores)
    serve(
        catalog=options.catalog,
        project_regex=project_regex(options.deployment),
        password_file=options.password_file,
        scratch_dir=options.scratch_dir,
        max_workers=workers,
        cores=min(options.worker_cores, cores),
        memory=memory_each,
        idle_timeout=options.idle_timeout,
        factory=False,
        direct=True,
        task_env=dict(options.task_env),
    )


if __name__ == "__main__":
    raise SystemExit(main())
