"""Read-only: what a job's makeflow rules did, from the stage record and makeflow's logs."""

from pathlib import Path

from django.core import signing

from .cctools import log as makeflowlog
from .execution.folder import JobFolder, tail
from .models import Job


def read_stages(job: Job) -> dict:
    return JobFolder.of(job).read_stages()


def read_tasks(job: Job) -> list[dict]:
    """Every rule of every started stage, from makeflow's logs (the source of truth)."""
    folder = JobFolder.of(job)
    if not folder.exists():
        return []
    tasks = []
    for stage in folder.read_stages()["started"]:
        for rule in makeflowlog.read_rules(folder.root, folder.dag(stage)):
            logs = folder.rule_log(stage, rule)
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
                    "stdout": tail(logs / f"{rule.rule}.stdout"),
                    "stderr": tail(logs / f"{rule.rule}.stderr"),
                }
            )
    return tasks


STREAMS = ("stdout", "stderr")
_LIVE_LOG_SALT = "lmweb.live-log"


def live_log_token(job_id) -> str:
    """The token a job's rules send their output with (the same for every rule and attempt of
    the job, so the makeflow file stays the same when a stage is written again)."""
    return signing.Signer(salt=_LIVE_LOG_SALT).sign(str(job_id))


def live_log_token_valid(job_id, token: str) -> bool:
    try:
        return signing.Signer(salt=_LIVE_LOG_SALT).unsign(token) == str(job_id)
    except signing.BadSignature:
        return False


def task_log_file(job: Job, stage: str, rule_id: str, stream: str) -> Path | None:
    """The file holding one rule's standard output or error, None if the job has no such rule.

    The file itself may not exist yet (the rule has not written it back) or any more."""
    if stream not in STREAMS:
        raise ValueError(f"stream is one of {', '.join(STREAMS)}")
    folder = JobFolder.of(job)
    if not folder.exists() or stage not in folder.read_stages()["started"]:
        return None
    for rule in makeflowlog.read_rules(folder.root, folder.dag(stage)):
        if rule.rule == rule_id:
            final = folder.rule_log(stage, rule) / f"{rule.rule}.{stream}"
            live = folder.live_log(stage, rule_id, stream)
            # Until the rule's own logs come back, what its guard sent while it ran.
            return live if rule.state == "running" and live.exists() else final
    return None
