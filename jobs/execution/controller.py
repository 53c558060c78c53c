"""Run one job: claim it, stage its inputs, run each stage's makeflow, follow it, finish it."""

import copy
import logging
import os
import socket
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

import translators
from lmweb.logs import job_context
from translators.base import canonical_json
from translators.makeflow import size_rules

from .. import rules, sandbox, services
from ..cctools import log as makeflowlog
from ..cctools import makeflow, projects
from ..models import Job, State
from ..services import Canceled, LostJob
from . import packaging
from .folder import GRAPH_MAX_RULES, TAIL_BYTES, FolderLocked, JobFolder, WrittenStage
from .handback import HandBack, handback_requested

log = logging.getLogger(__name__)

# Seconds a rule may outlive its job's time limit before its worker kills it (the controller
# stops the whole job first; this covers a rule whose makeflow is gone).
RULE_TIME_MARGIN = 60


class TimeLimit(Exception):
    """The job ran longer than LMWEB_JOB_MAX_SECONDS."""


@dataclass
class StageResult:
    outcome: str  # success, failed, aborted, incomplete
    rules_total: int


def controller_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def project_name(job: Job, stage: WrittenStage | None = None) -> str:
    """The job's Work Queue project; given its stage, with the width hint that lets the worker
    pool size a fan-out at once."""
    width = stage.width if stage is not None else None
    return projects.project_name(settings.LMWEB_DEPLOYMENT, str(job.id), width)


def job_run(*, job_id: str) -> None:
    """The controller's whole work on one job (the Celery task calls this)."""
    with job_context(job_id):
        _job_run(job_id)


def _job_run(job_id: str) -> None:
    me = controller_identity()
    job = services.job_claim(job_id=job_id, controller=me)
    if job is None:
        log.info("job %s: not queued any more; nothing to do", job_id)
        return
    log.info("job %s: claimed by %s (attempt %d)", job.id, me, job.attempts)
    folder = JobFolder.of(job)
    try:
        with folder.lock():
            _run(job, me, folder)
    except FolderLocked:
        log.warning("job %s: its folder is locked by another process; stopped", job.id)
    except LostJob:
        log.warning("job %s: another controller holds it now; stopped", job.id)
    except Canceled:
        services.job_finish_cancel(job=job, controller=me)
    except HandBack:
        services.job_hand_back(job=job, controller=me)
    except TimeLimit as exc:
        _fail(job, me, State.EXECUTOR_ERROR, "time_limit", str(exc))
    except Exception as exc:
        log.exception("job %s: controller failure", job.id)
        _fail(job, me, State.SYSTEM_ERROR, "controller_error", f"{type(exc).__name__}: {exc}")


def _run(job: Job, me: str, folder: JobFolder) -> None:
    workflow = translators.get(job.workflow)
    inputs = stage_inputs(job, folder)
    done = folder.read_stages()["done"]
    produced = {name: folder.products(name) for name in done}
    totals = 0
    while True:
        if handback_requested():
            raise HandBack()
        planned = plan_next(job, workflow, inputs, done, produced)
        if planned is None:
            break
        stage = write_stage(folder, planned, job_id=job.id)
        result = _run_stage(job, me, folder, stage, rules_before=totals)
        if result.outcome != "success":
            detail = makeflowlog.failure_detail(folder.root, stage.dag)
            message = _failure_message(stage.name, detail)
            _fail(job, me, State.EXECUTOR_ERROR, "rule_failed", message)
            return
        totals += result.rules_total
        done.append(stage.name)
        produced[stage.name] = folder.existing_files(stage.outputs)
        folder.mark_done(done)
    outputs = packaging.package_job(job, folder)
    services.job_complete(job=job, controller=me, outputs=outputs)


def plan_next(job: Job, workflow, inputs, done: list[str], produced: dict):
    """The job's next stage, or None when every stage is done. The stored request was checked
    and its defaults filled at submission (jobs/validation.py): it is not checked again here."""
    params = copy.deepcopy(job.request["params"])
    return workflow.next_stage(params, dict(inputs), list(done), dict(produced))


def stage_inputs(job: Job, folder: JobFolder) -> dict[str, str | list[str]]:
    """Each input dataset, linked (or copied) into the job's folder; paths relative to it."""
    workflow = translators.get(job.workflow)
    staged: dict[str, str | list[str]] = {}
    for item in job.inputs.select_related("dataset").order_by("name", "position"):
        if item.dataset is None:
            raise RuntimeError(f"input {item.name} was deleted before the job ran")
        many = workflow.dataset_inputs[item.name].many
        name = f"{item.name}-{item.position}" if many else item.name
        relative = folder.stage_input(name + item.dataset.extension, item.dataset.absolute_path)
        if many:
            staged.setdefault(item.name, []).append(relative)  # type: ignore[union-attr]
        else:
            staged[item.name] = relative
    # Our own paths, checked once before any stage is planned from them.
    return workflow.check_staged(job.request, staged)


def live_log_environment(document: dict, job_id, stage: str) -> dict:
    """Each rule's guard gets where to send its output while it runs, and the job's token."""
    if not settings.LIVE_LOG_URL or job_id is None:
        return document
    extra = {
        "LMWEB_LOG_URL": f"{settings.LIVE_LOG_URL}/api/v1/live-logs/{job_id}/{stage}/",
        "LMWEB_LOG_TOKEN": rules.live_log_token(job_id),
    }
    for rule in document.get("rules", []):
        rule["environment"] = {**rule.get("environment", {}), **extra}
    return document


def write_stage(folder: JobFolder, planned, job_id=None) -> WrittenStage:
    """Write a planned stage, each rule sized to its inputs, with the sandbox's files (and,
    given the job's id, where its rules send their live logs)."""
    sandbox.write_files(folder.root)
    names = {
        entry if isinstance(entry, str) else entry["dag_name"]
        for rule in planned.makeflow.get("rules", [])
        for entry in rule.get("inputs", [])
    }
    document = size_rules(
        planned.makeflow,
        folder.sizes(sorted(names)),
        max_memory=settings.LMWEB_RULE_MAX_MEMORY_MB,
        max_disk=settings.LMWEB_RULE_MAX_DISK_MB,
    )
    document = live_log_environment(document, job_id, planned.name)
    stage, changed = folder.write_stage(
        planned.name, document, canonical_json(document), planned.files
    )
    if changed or not folder.graph(stage.name).exists():
        draw_graph(folder, stage.name, rules=len(document.get("rules", [])))
    return stage


def draw_graph(folder: JobFolder, stage: str, *, rules: int) -> None:
    """Draw the stage's workflow once, when it is written: no page view starts a process."""
    if rules > GRAPH_MAX_RULES:
        return
    try:
        folder.write_graph(stage, makeflow.render_graph(folder.root, folder.dag(stage)))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("stage %s: the workflow graph could not be drawn (%s)", stage, exc)


def _run_stage(
    job: Job, me: str, folder: JobFolder, stage: WrittenStage, *, rules_before: int
) -> StageResult:
    """Run (or resume) one makeflow until it ends; store progress and a heartbeat meanwhile."""
    starts = 0
    while True:
        starts += 1
        makeflow.prepare_resume(folder.root, stage.dag)
        _record_manager(job, me, None)
        run = makeflow.start_makeflow(
            workdir=folder.root,
            dag=stage.dag,
            project=project_name(job, stage),
            catalog=settings.LMWEB_CATALOG,
            password_file=settings.LMWEB_WQ_PASSWORD_FILE,
            tmpdir=folder.tmp(stage.name),
            retry_count=settings.LMWEB_RULE_RETRIES,
            max_remote=settings.LMWEB_MAX_REMOTE,
            confine=settings.LMWEB_CONFINE_MAKEFLOW,
            # A rule's own limit is a backstop: the job's time is watched here (_check_time).
            extra_args=sandbox.makeflow_arguments(settings.JOB_MAX_SECONDS + RULE_TIME_MARGIN),
        )
        try:
            _record_manager(job, me, run)
            services.job_start(job=job, controller=me, stage=stage.name)
            log_file = folder.log_paths(stage.name).makeflowlog
            progress = follow(job, me, run, log_file, stage=stage.name, rules_before=rules_before)
        finally:
            # Makeflow removes its tasks from the workers on SIGTERM, but only notices the
            # signal when its 5 s wait on Work Queue returns: the default grace allows for it.
            run.stop()
            run.cleanup_tmp()
            _record_manager(job, me, None)
        outcome = makeflowlog.outcome(progress)
        if outcome == "success":
            _check_returned_outputs(folder.root, stage.name, stage.dag)
        if outcome in {"success", "failed"}:
            return StageResult(outcome, progress.total)
        # Makeflow itself died (killed, crashed): resume it from its log, a bounded number of times.
        if starts >= settings.LMWEB_MAKEFLOW_STARTS:
            raise RuntimeError(
                f"stage {stage.name}: makeflow stopped {starts} times without finishing ({outcome})"
            )
        # Raises if the job was canceled or taken meanwhile.
        services.job_beat(job=job, controller=me, stage=stage.name)
        log.warning("job %s: makeflow ended %s; resuming stage %s", job.id, outcome, stage.name)


def _record_manager(job: Job, me: str, run: makeflow.MakeflowRun | None) -> None:
    services.job_record_manager(
        job=job, controller=me, project=run.project if run else "", port=run.port if run else None
    )


def _check_returned_outputs(workdir: Path, stage: str, dag: str) -> None:
    """Makeflow counts a rule done when its outputs' paths exist, even when Work Queue could
    not write what the worker returned (a reply naming a path outside the job folder, which
    bubblewrap refuses, leaves the output a folder): that is not a result to package."""
    rejected = [
        f"{rule.rule} ({rule.result})"
        for rule in makeflowlog.read_rules(workdir, dag)
        if rule.state == "complete" and rule.result not in (None, "SUCCESS")
    ]
    if rejected:
        raise RuntimeError(
            f"stage {stage}: the outputs of rule(s) {', '.join(rejected)} were not returned "
            "as the worker said (a reply naming a path outside the job folder?)"
        )


def follow(job: Job, me: str, run, log_file: Path, *, stage: str, rules_before: int = 0):
    """Follow a running makeflow through its log until it ends, storing progress and the
    heartbeat. Raises HandBack on shutdown, TimeLimit past the job's time, Canceled or LostJob
    when the job is no longer this controller's; stops a run stuck behind a failed rule."""
    follower = makeflowlog.LogFollower(log_file)
    last_written, last_beat = None, 0.0
    while True:
        exited = run.poll() is not None
        progress = follower.update()
        counts = (
            rules_before + progress.total,
            progress.waiting,
            progress.running,
            rules_before + progress.complete,
            progress.failed + progress.aborted,
        )
        now = time.monotonic()
        if counts != last_written or now - last_beat >= settings.LMWEB_HEARTBEAT_SECONDS:
            services.job_beat(job=job, controller=me, stage=stage, counts=counts)
            last_written, last_beat = counts, now
        if exited:
            return follower.update()
        if handback_requested():
            raise HandBack()
        _check_time(job)
        if progress.failed and follower.stuck_for() >= settings.LMWEB_STUCK_SECONDS:
            # A rule failed for good and others wait on it: makeflow would spin forever.
            log.warning("job %s: a rule failed and makeflow cannot go on; stopping it", job.id)
            run.stop()
            return follower.update()
        # Wakes as soon as makeflow exits: a plain sleep made every job up to a poll late.
        with suppress(subprocess.TimeoutExpired):
            run.wait(timeout=settings.LMWEB_POLL_SECONDS)


def _check_time(job: Job) -> None:
    """Stop a job that has run longer than LMWEB_JOB_MAX_SECONDS since it first started."""
    if job.started_at is None:
        return
    ran = (timezone.now() - job.started_at).total_seconds()
    limit = settings.JOB_MAX_SECONDS
    if ran > limit:
        raise TimeLimit(
            f"the job ran {ran:.0f} s, over the limit of {limit} s (LMWEB_JOB_MAX_SECONDS); "
            "it was stopped"
        )


def _failure_message(stage: str, detail) -> str:
    if detail is None:
        return f"stage {stage}: a rule failed (no detail in makeflow's log)"
    return (
        f"rule {detail.rule} of stage {stage} exited with code {detail.exit_code}\n"
        f"command: {detail.command}\n"
        f"stderr (last {TAIL_BYTES} bytes):\n{detail.stderr_tail}"
    )


def _fail(job: Job, me: str, state: str, code: str, message: str) -> None:
    services.job_fail(job=job, controller=me, state=state, code=code, message=message)
