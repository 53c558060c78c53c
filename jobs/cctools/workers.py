"""Work Queue workers and factories: for one manager, or for every manager of a project pattern."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .processes import spawn

WORKER = "/usr/bin/work_queue_worker"
FACTORY = "/usr/bin/work_queue_factory"


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
    return spawn(args, log_path=log_path, env=env)


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
    batch_type: str = "local",
    batch_options: str | None = None,
) -> subprocess.Popen:
    """`work_queue_factory -T BATCH_TYPE`: sizes a pool of catalog workers every 30 s.

    `local` runs the workers here. A cluster type (`slurm`, `condor`, `sge`, ...) submits each
    worker as a batch job (`sbatch` for Slurm, with `batch_options` as `-B`): the factory copies
    the worker binary, its wrapper and the password into `scratch_dir`, where each job starts
    and writes its status, so the compute nodes must see that folder at the same path. The
    submitting environment, `env` included, reaches the workers (sbatch's default --export=ALL).

    Stop it with stop_process(): on SIGTERM it removes its batch jobs (scancel), but a local
    factory kills the shells around its workers, not the workers, which stay until their idle
    timeout.
    """
    scratch_dir = Path(scratch_dir)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    scratch_dir.chmod(0o700)  # it will hold a copy of the password
    args = [
        FACTORY,
        "-T", batch_type,
        "-M", project_regex,
        f"--catalog={catalog}",  # -C would be its configuration file
        "-P", str(Path(password_file).resolve()),
        "-w", str(min_workers),
        "-W", str(max_workers),
        f"--cores={cores_per_worker}",
        "-t", str(idle_timeout),
        "-S", str(scratch_dir),
    ]  # fmt: skip
    if batch_options:
        args += ["-B", batch_options]
    if parent_death:
        args.append("--parent-death")
    return spawn(args, log_path=Path(log_path), env=env)
