"""Run one job: claim it, stage its inputs, run each stage's makeflow, catalog what it made."""

import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

import lmweb
import translators
from lmweb.logs import job_context
from translators.base import canonical_json
from translators.makeflow import parallel_width, size_rules

from . import formats, limits, sandbox
from .cctools import log as makeflowlog
from .cctools import makeflow, projects
from .models import IllegalTransition, Job, Output, State

log = logging.getLogger(__name__)

STAGES_FILE = "stages.json"
TAIL_BYTES = 4096


class LostJob(Exception):
    """Someone else holds the job now (recovery requeued it): stop without touching its state."""


class Canceled(Exception):
    """The user canceled the job while it ran."""


class HandBack(Exception):
    """This controller is shutting down: give the job back to the queue, unfailed."""


# Seconds a rule may outlive its job's time limit before its worker kills it (the controller
# stops the whole job first; this covers a rule whose makeflow is gone).
RULE_TIME_MARGIN = 60


class TimeLimit(Exception):
    """The job ran longer than LMWEB_JOB_MAX_SECONDS."""


def _handback_flag(parent_pid: int) -> Path:
    return settings.DATA_DIR / "run" / f"handback-{socket.gethostname()}-{parent_pid}"


def request_handback(worker_pid: int) -> None:
    """Called in a Celery worker's main process when it starts to shut down (SIGTERM): its pool
    processes see the flag within a poll, stop their makeflows and requeue their jobs."""
    flag = _handback_flag(worker_pid)
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()


def clear_handback(worker_pid: int) -> None:
    _handback_flag(worker_pid).unlink(missing_ok=True)


def _handback_requested() -> bool:
    return _handback_flag(os.getppid()).exists()


@dataclass
class StageResult:
    outcome: str  # success, failed, aborted, incomplete
    rules_total: int


def controller_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def project_name(job: Job, dag: str | None = None) -> str:
    """The job's Work Queue project; given its stage's workflow file, with the width hint that
    lets the worker pool size a fan-out at once."""
    width = None
    if dag is not None:
        width = parallel_width(json.loads((job.directory / dag).read_text()))
    return projects.project_name(settings.LMWEB_DEPLOYMENT, str(job.id), width)


def job_claim(*, job_id: str, controller: str) -> Job | None:
    """Take a queued job for this controller; None if it is not queued (any more).

    Raises limits.OverLimit, leaving the job QUEUED, while its owner already has
    LMWEB_USER_MAX_RUNNING jobs running: the task looks again later.
    """
    with transaction.atomic():
        queued = Job.objects.filter(pk=job_id, state=State.QUEUED)
        owner_id = queued.values_list("owner_id", flat=True).first()
        if owner_id is None:
            return None
        limits.running_check(owner_id=owner_id)
        now = timezone.now()
        changed = queued.update(
            state=State.INITIALIZING,
            claimed_by=controller,
            heartbeat_at=now,
            started_at=Coalesce(F("started_at"), now),
            attempts=F("attempts") + 1,
            error_code="",
            error_message="",
        )
    return Job.objects.get(pk=job_id) if changed == 1 else None


def job_run(*, job_id: str) -> None:
    """The controller's whole work on one job (the Celery task calls this)."""
    with job_context(job_id):
        _job_run(job_id)


def _job_run(job_id: str) -> None:
    me = controller_identity()
    job = job_claim(job_id=job_id, controller=me)
    if job is None:
        log.info("job %s: not queued any more; nothing to do", job_id)
        return
    log.info("job %s: claimed by %s (attempt %d)", job.id, me, job.attempts)
    try:
        with job_lock(job):
            _run(job, me)
    except LostJob:
        log.warning("job %s: another controller holds it now; stopped", job.id)
    except Canceled:
        _finish_cancel(job, me)
    except HandBack:
        _hand_back(job, me)
    except TimeLimit as exc:
        _fail(job, me, State.EXECUTOR_ERROR, "time_limit", str(exc))
    except Exception as exc:
        log.exception("job %s: controller failure", job.id)
        _fail(job, me, State.SYSTEM_ERROR, "controller_error", f"{type(exc).__name__}: {exc}")


@contextmanager
def job_lock(job: Job) -> Iterator[None]:
    """Makeflow does not lock its log: this lock keeps two makeflows off one job folder."""
    job.directory.mkdir(parents=True, exist_ok=True)
    with (job.directory / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LostJob(f"job {job.id}: its folder is locked by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(job: Job, me: str) -> None:
    workflow = translators.get(job.workflow)
    inputs = stage_inputs(job)
    done = read_stages(job)["done"]
    produced = {name: stage_products(job, name) for name in done}
    totals = 0
    while True:
        if _handback_requested():
            raise HandBack()
        stage = workflow.plan(job.request, inputs, done, produced)
        if stage is None:
            break
        dag = _write_stage(job, stage)
        result = _run_stage(job, me, stage.name, dag, rules_before=totals)
        if result.outcome != "success":
            detail = makeflowlog.failure_detail(job.directory, dag)
            message = _failure_message(stage.name, detail)
            _fail(job, me, State.EXECUTOR_ERROR, "rule_failed", message)
            return
        totals += result.rules_total
        done.append(stage.name)
        produced[stage.name] = stage_products(job, stage.name)
        _write_stages(job, done)
    _complete(job, me)


def stage_products(job: Job, stage: str) -> list[str]:
    """The files a finished stage made: its rules' declared outputs, folders expanded, relative
    to the job folder. Later stages are planned from these (e.g. one rule per species found)."""
    document = json.loads((job.directory / f"{stage}.mf.json").read_text())
    files = set()
    for rule in document.get("rules", []):
        for output in rule.get("outputs", []):
            name = output["dag_name"] if isinstance(output, dict) else output
            path = job.directory / name
            if path.is_dir():
                files.update(
                    item.relative_to(job.directory).as_posix()
                    for item in path.rglob("*")
                    if item.is_file()
                )
            elif path.is_file():
                files.add(name)
    return sorted(files)


def stage_inputs(job: Job) -> dict[str, str | list[str]]:
    """Link (or copy) each input dataset into the job's own folder; paths relative to it."""
    folder = job.directory / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    workflow = translators.get(job.workflow)
    staged: dict[str, str | list[str]] = {}
    for item in job.inputs.select_related("dataset").order_by("name", "position"):
        if item.dataset is None:
            raise RuntimeError(f"input {item.name} was deleted before the job ran")
        many = workflow.dataset_inputs[item.name].many
        name = f"{item.name}-{item.position}" if many else item.name
        target = folder / (name + item.dataset.extension)
        if not target.exists():
            temporary = target.with_name(target.name + ".tmp")
            temporary.unlink(missing_ok=True)
            try:
                os.link(item.dataset.absolute_path, temporary)
            except OSError:
                shutil.copyfile(item.dataset.absolute_path, temporary)
            temporary.rename(target)
        relative = str(target.relative_to(job.directory))
        if many:
            staged.setdefault(item.name, []).append(relative)  # type: ignore[union-attr]
        else:
            staged[item.name] = relative
    return staged


def read_stages(job: Job) -> dict:
    path = job.directory / STAGES_FILE
    if path.exists():
        return json.loads(path.read_text())
    return {"done": [], "started": []}


def _write_stages(job: Job, done: list[str], started: list[str] | None = None) -> None:
    record = read_stages(job)
    record["done"] = list(done)
    if started is not None:
        record["started"] = list(started)
    temporary = job.directory / (STAGES_FILE + ".tmp")
    temporary.write_text(json.dumps(record, indent=2))
    temporary.replace(job.directory / STAGES_FILE)


def _input_sizes(job: Job, document: dict) -> dict[str, int]:
    """Bytes of every rule input that exists already (staged inputs, earlier stages' files)."""
    sizes = {}
    for rule in document.get("rules", []):
        for entry in rule.get("inputs", []):
            name = entry if isinstance(entry, str) else entry["dag_name"]
            if name in sizes:
                continue
            path = job.directory / name
            if path.is_file():
                sizes[name] = path.stat().st_size
            elif path.is_dir():
                sizes[name] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return sizes


def _write_stage(job: Job, stage) -> str:
    dag = f"{stage.name}.mf.json"
    for relative, text in stage.files.items():
        path = job.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    sandbox.write_files(job.directory)
    path = job.directory / dag
    document = size_rules(
        stage.makeflow,
        _input_sizes(job, stage.makeflow),
        max_memory=settings.LMWEB_RULE_MAX_MEMORY_MB,
        max_disk=settings.LMWEB_RULE_MAX_DISK_MB,
    )
    text = canonical_json(document)
    # Rewriting an identical file would still change its time, and makeflow reruns a rule whose
    # inputs look newer than its outputs: only write what changed.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    for folder in ("logs", "work", "outputs"):
        (job.directory / folder).mkdir(exist_ok=True)
    record = read_stages(job)
    if stage.name not in record["started"]:
        _write_stages(job, record["done"], [*record["started"], stage.name])
    return dag


def _run_stage(job: Job, me: str, stage: str, dag: str, *, rules_before: int) -> StageResult:
    """Run (or resume) one makeflow until it ends; store progress and a heartbeat meanwhile."""
    starts = 0
    while True:
        starts += 1
        tmpdir = job.directory / "tmp" / stage
        makeflow.prepare_resume(job.directory, dag)
        _record_manager(job, me, None)
        run = makeflow.start_makeflow(
            workdir=job.directory,
            dag=dag,
            project=project_name(job, dag),
            catalog=settings.LMWEB_CATALOG,
            password_file=settings.LMWEB_WQ_PASSWORD_FILE,
            tmpdir=tmpdir,
            retry_count=settings.LMWEB_RULE_RETRIES,
            max_remote=settings.LMWEB_MAX_REMOTE,
            confine=settings.LMWEB_CONFINE_MAKEFLOW,
            # A rule's own limit is a backstop: the job's time is watched here (_check_time).
            extra_args=sandbox.makeflow_arguments(settings.JOB_MAX_SECONDS + RULE_TIME_MARGIN),
        )
        try:
            _record_manager(job, me, run)
            _mark_running(job, me, stage)
            progress = _follow(job, me, run, stage, dag, rules_before)
        finally:
            # Makeflow removes its tasks from the workers on SIGTERM, but only notices the
            # signal when its 5 s wait on Work Queue returns: the default grace allows for it.
            run.stop()
            run.cleanup_tmp()
            _record_manager(job, me, None)
        outcome = makeflowlog.outcome(progress)
        if outcome == "success":
            _check_returned_outputs(job.directory, stage, dag)
        if outcome in {"success", "failed"}:
            return StageResult(outcome, progress.total)
        # Makeflow itself died (killed, crashed): resume it from its log, a bounded number of times.
        if starts >= settings.LMWEB_MAKEFLOW_STARTS:
            raise RuntimeError(
                f"stage {stage}: makeflow stopped {starts} times without finishing ({outcome})"
            )
        _beat(job, me, stage=stage)  # raises if the job was canceled or taken meanwhile
        log.warning("job %s: makeflow ended %s; resuming stage %s", job.id, outcome, stage)


def _record_manager(job: Job, me: str, run: makeflow.MakeflowRun | None) -> None:
    """Note (or forget) the job's running manager: the worker pool serves only those."""
    Job.objects.filter(pk=job.pk, claimed_by=me).update(
        manager_project=run.project if run else "", manager_port=run.port if run else None
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


def _mark_running(job: Job, me: str, stage: str) -> None:
    if job.state != State.INITIALIZING:
        _beat(job, me, stage=stage)
        return
    try:
        job.transition(State.RUNNING, stage=stage, heartbeat_at=timezone.now())
    except IllegalTransition:
        job.refresh_from_db()
        if job.state == State.CANCELING and job.claimed_by == me:
            raise Canceled() from None
        raise LostJob() from None


def _follow(job, me, run, stage, dag, rules_before):
    follower = makeflowlog.LogFollower(job.directory / f"{dag}.makeflowlog")
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
            _beat(job, me, stage=stage, counts=counts)
            last_written, last_beat = counts, now
        if exited:
            return follower.update()
        if _handback_requested():
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


def _beat(job: Job, me: str, *, stage: str, counts: tuple | None = None) -> None:
    """Store progress and the heartbeat, only while this controller still owns a running job."""
    fields = {"heartbeat_at": timezone.now(), "stage": stage}
    if counts is not None:
        total, waiting, running, done, failed = counts
        fields.update(
            rules_total=total,
            rules_waiting=waiting,
            rules_running=running,
            rules_done=done,
            rules_failed=failed,
        )
    changed = Job.objects.filter(pk=job.pk, claimed_by=me, state=State.RUNNING).update(**fields)
    if changed:
        return
    job.refresh_from_db()
    if job.claimed_by == me and job.state == State.CANCELING:
        raise Canceled()
    raise LostJob()


def _failure_message(stage: str, detail) -> str:
    if detail is None:
        return f"stage {stage}: a rule failed (no detail in makeflow's log)"
    return (
        f"rule {detail.rule} of stage {stage} exited with code {detail.exit_code}\n"
        f"command: {detail.command}\n"
        f"stderr (last {TAIL_BYTES} bytes):\n{detail.stderr_tail}"
    )


def _fail(job: Job, me: str, state: str, code: str, message: str) -> None:
    job.refresh_from_db()
    if job.claimed_by != me:
        return
    if job.state == State.CANCELING:
        _finish_cancel(job, me)
        return
    try:
        job.transition(state, error_code=code, error_message=message[:20000], claimed_by="")
    except Exception:
        log.exception("job %s: could not record %s", job.id, state)


def _hand_back(job: Job, me: str) -> None:
    """Back to QUEUED without counting the attempt; the rerun resumes from makeflow's log."""
    from .services import job_enqueue

    with transaction.atomic():
        changed = Job.objects.filter(
            pk=job.pk, claimed_by=me, state__in=[State.INITIALIZING, State.RUNNING]
        ).update(state=State.QUEUED, claimed_by="", attempts=F("attempts") - 1)
        if changed:
            transaction.on_commit(lambda: job_enqueue(job_id=job.id))
    if changed:
        log.info("job %s: handed back to the queue (controller shutting down)", job.id)
    else:
        job.refresh_from_db()
        if job.state == State.CANCELING and job.claimed_by == me:
            _finish_cancel(job, me)


def _finish_cancel(job: Job, me: str) -> None:
    job.refresh_from_db()
    if job.state == State.CANCELING and job.claimed_by == me:
        job.transition(State.CANCELED, claimed_by="")
        log.info("job %s: canceled", job.id)


def _complete(job: Job, me: str) -> None:
    outputs = catalog_outputs(job)
    manifest = write_manifest(job, outputs)
    build_package(job, manifest)
    with transaction.atomic():
        Output.objects.filter(job=job).delete()
        Output.objects.bulk_create(Output(job=job, **entry) for entry in outputs)
        fields = {"claimed_by": "", "rules_waiting": 0, "rules_running": 0}
        changed = Job.objects.filter(pk=job.pk, state=State.RUNNING, claimed_by=me).update(
            state=State.COMPLETE, finished_at=timezone.now(), **fields
        )
    if not changed:
        job.refresh_from_db()
        if job.state == State.CANCELING:
            # The work finished as the cancel came in: the results stand, the cancel is moot.
            raise Canceled()
        raise LostJob()
    log.info("job %s: complete with %d outputs", job.id, len(outputs))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def catalog_outputs(job: Job) -> list[dict]:
    root = job.directory / "outputs"
    entries = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        relative = path.relative_to(root).as_posix()
        entries.append(
            {
                "path": relative,
                "role": relative.split("/", 1)[0] if "/" in relative else "result",
                "media_type": formats.media_type(path),
                "size": path.stat().st_size,
                "sha256": _sha256(path),
            }
        )
    return entries


@cache
def tool_versions() -> dict[str, str]:
    versions = {"lmweb": lmweb.__version__, "python": platform.python_version()}
    for package in ("specify-lmpy", "numpy", "GDAL", "DendroPy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["cctools"] = makeflow.version()
    return versions


def _iso(value) -> str | None:
    return value.isoformat() if value else None


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


def write_manifest(job: Job, outputs: list[dict]) -> dict:
    job.refresh_from_db()
    rules = [
        {
            key: (_iso(value) if key.endswith("_at") else value)
            for key, value in task.items()
            if key not in {"stdout", "stderr"}
        }
        for task in read_tasks(job)
    ]
    manifest = {
        "job": {
            "id": str(job.id),
            "workflow": job.workflow,
            "name": job.name,
            "owner": job.owner.get_username(),
            "submitted_at": _iso(job.submitted_at),
            "started_at": _iso(job.started_at),
            "finished_at": _iso(timezone.now()),
        },
        "request": job.request,
        "versions": tool_versions(),
        "rules": rules,
        "outputs": outputs,
    }
    (job.directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# Already-compressed formats are stored as they are; deflating them again only costs time.
STORED_SUFFIXES = {".zip", ".lmm", ".png", ".tif", ".gz", ".npz"}


def build_package(job: Job, manifest: dict) -> Path:
    target = job.directory / "package.zip"
    temporary = target.with_name("package.zip.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(job.directory / "manifest.json", "manifest.json")
        for entry in manifest["outputs"]:
            source = job.directory / "outputs" / entry["path"]
            stored = Path(entry["path"]).suffix.lower() in STORED_SUFFIXES
            archive.write(
                source,
                f"outputs/{entry['path']}",
                compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED,
            )
    temporary.replace(target)
    return target
