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
from django.utils import timezone

import lmweb
import translators
from lmweb.logs import job_context
from translators.base import canonical_json
from translators.makeflow import parallel_width, size_rules

from . import formats, makeflowlog, runner, sandbox, services
from .models import Job, State
from .rules import STAGES_FILE, TAIL_BYTES, read_stages, read_tasks
from .services import Canceled, LostJob

log = logging.getLogger(__name__)


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
    return runner.project_name(settings.LMWEB_DEPLOYMENT, str(job.id), width)


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
    try:
        with job_lock(job):
            _run(job, me)
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
        runner.prepare_resume(job.directory, dag)
        _record_manager(job, me, None)
        run = runner.start_makeflow(
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
            services.job_start(job=job, controller=me, stage=stage)
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


def _record_manager(job: Job, me: str, run: runner.MakeflowRun | None) -> None:
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
    services.job_beat(job=job, controller=me, stage=stage, counts=counts)


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


def _complete(job: Job, me: str) -> None:
    outputs = catalog_outputs(job)
    manifest = write_manifest(job, outputs)
    build_package(job, manifest)
    services.job_complete(job=job, controller=me, outputs=outputs)


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
    try:
        first = subprocess.run(
            [runner.MAKEFLOW, "-v"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
        versions["cctools"] = first[0].strip() if first else "unknown"
    except (OSError, subprocess.SubprocessError):
        versions["cctools"] = "unknown"
    return versions


def _iso(value) -> str | None:
    return value.isoformat() if value else None


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
