"""The baselines: the service's own workflow files run by hand, without lmweb.

`makeflow -T wq` started as a user would, with its Work Queue workers pointed at it; and a
workflow's commands run one after another in a shell, with no makeflow at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from jobs.cctools.makeflow import MAKEFLOW
from jobs.cctools.processes import stop_processes
from jobs.cctools.workers import start_worker


def dag_name(entry) -> str:
    """A makeflow JSON input or output: a path, or {"dag_name": path, "task_name": ...}."""
    return entry if isinstance(entry, str) else entry["dag_name"]


def job_rules(job_dir: Path) -> list[dict]:
    stages = json.loads((job_dir / "stages.json").read_text())["started"]
    rules = []
    for stage in stages:
        rules += json.loads((job_dir / f"{stage}.mf.json").read_text())["rules"]
    return rules


def copy_workflow(job_dir: Path, target: Path, dag: str = "main.mf.json") -> str:
    """The job's workflow file and the files no rule makes (its staged inputs) into `target`."""
    target.mkdir(parents=True)
    shutil.copy(job_dir / dag, target / dag)
    rules = json.loads((job_dir / dag).read_text())["rules"]
    made = {dag_name(out) for rule in rules for out in rule["outputs"]}
    for source in {dag_name(p) for rule in rules for p in rule["inputs"]} - made:
        if (job_dir / source).exists():
            (target / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(job_dir / source, target / source)
    return dag


def start_makeflow(folder: Path, dag: str, password_file: Path) -> tuple[subprocess.Popen, int]:
    """`makeflow -T wq` as typed by hand: no catalog, no project name, makeflow's defaults."""
    popen = subprocess.Popen(
        [MAKEFLOW, "--json", "-T", "wq", "-p", "0", "-Z", "port",
         f"--password={password_file}", dag],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=(folder / "makeflow.out").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            return popen, int((folder / "port").read_text())
        except (OSError, ValueError):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"makeflow did not start in {folder}") from None
            time.sleep(0.01)


def start_workers(port: int, count: int, cores: int, password_file: Path, scratch: Path):
    return [
        start_worker(
            host="127.0.0.1",
            port=port,
            password_file=password_file,
            cores=cores,
            scratch_dir=scratch,
            idle_timeout=60,
            single_shot=True,
        )
        for _ in range(count)
    ]


def makeflow_wq(folders: list[Path], dag: str, *, workers: int, cores: int, password_file: Path):
    """Run each folder's DAG with `makeflow -T wq` and `workers` workers of its own, all at
    once; returns the wall time from the first launch to the last exit."""
    start = time.monotonic()
    runs = []
    for folder in folders:
        popen, port = start_makeflow(folder, dag, password_file)
        scratch = folder.parent / f"{folder.name}.scratch"
        runs.append((popen, start_workers(port, workers, cores, password_file, scratch)))
    for popen, _ in runs:
        code = popen.wait(timeout=3600)
        if code != 0:
            raise RuntimeError(f"makeflow by hand failed ({code}) in {folders}")
    elapsed = time.monotonic() - start
    for _, pool in runs:
        stop_processes(pool, grace=2)
    return elapsed


def serial(job_dir: Path, folder: Path) -> float:
    """The job's rule commands, one after another in one folder, with no makeflow."""
    rules = job_rules(job_dir)
    copy_workflow(job_dir, folder)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    start = time.monotonic()
    for rule in rules:
        done = subprocess.run(
            ["/bin/sh", "-c", rule["command"]], cwd=folder, env=env, capture_output=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"by hand: {rule['command'][:200]}: {done.stderr[-500:]!r}")
    return time.monotonic() - start
