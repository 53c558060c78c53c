"""Read-only: what a job's makeflow rules did, from the stage record and makeflow's logs."""

import json
from pathlib import Path

from . import makeflowlog
from .models import Job

STAGES_FILE = "stages.json"
TAIL_BYTES = 4096


def read_stages(job: Job) -> dict:
    path = job.directory / STAGES_FILE
    if path.exists():
        return json.loads(path.read_text())
    return {"done": [], "started": []}


def read_tasks(job: Job) -> list[dict]:
    """Every rule of every started stage, from makeflow's logs (the source of truth)."""
    if not job.directory.exists():
        return []
    tasks = []
    for stage in read_stages(job)["started"]:
        dag = f"{stage}.mf.json"
        paths = makeflowlog.LogPaths(job.directory, dag)
        for rule in makeflowlog.read_rules(job.directory, dag):
            # A failed rule's outputs, its logs included, are moved to makeflow.failed.<node>/.
            folder = paths.failed_dir(rule.node_id) if rule.state == "failed" else job.directory
            tasks.append(
                {
                    "stage": stage,
                    "rule": rule.rule,
                    "command": rule.command or "",
                    "state": rule.state,
                    "exit_code": rule.exit_code,
                    "host": rule.host or "",
                    "attempts": rule.attempts,
                    "started_at": rule.started_at,
                    "finished_at": rule.finished_at,
                    "stdout": _tail(folder / "logs" / f"{rule.rule}.stdout"),
                    "stderr": _tail(folder / "logs" / f"{rule.rule}.stderr"),
                }
            )
    return tasks


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
