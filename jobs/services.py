"""The writers: every change to datasets and jobs goes through these functions."""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from datetime import timedelta
from functools import partial
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, models, transaction
from django.db.models import Count, F, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import dispatch, formats, inspection, limits, rules
from .execution.folder import JobFolder
from .models import (
    ACTIVE_STATES,
    FINISHED_STATES,
    Dataset,
    IllegalTransition,
    Job,
    JobInput,
    Output,
    State,
)
from .validation import RequestInvalid, validate_request

log = logging.getLogger(__name__)


class Conflict(Exception):
    """The object is in a state that does not allow the operation (HTTP 409)."""


class TooLarge(Exception):
    """An upload over the configured limit (HTTP 413)."""


class LostJob(Exception):
    """Someone else holds the job now (recovery requeued it): stop without touching its state."""


class Canceled(Exception):
    """The user canceled the job while it ran."""


class LiveLogRefused(Exception):
    """A live log that is not taken: `status` is the HTTP answer, `size` what is kept so far."""

    def __init__(self, message: str, status: int, size: int | None = None) -> None:
        super().__init__(message)
        self.status, self.size = status, size


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def visible_datasets(user: AbstractBaseUser) -> QuerySet[Dataset]:
    queryset = Dataset.objects.all()
    return queryset if user.is_staff else queryset.filter(owner=user)


def visible_jobs(user: AbstractBaseUser) -> QuerySet[Job]:
    queryset = Job.objects.all()
    return queryset if user.is_staff else queryset.filter(owner=user)


def visible_job(user: AbstractBaseUser, job_id: str) -> Job | None:
    """One job the user may see, by an id as a URL gives it (None if malformed or not theirs)."""
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        return None
    return visible_jobs(user).filter(pk=key).first()


def _sha256_copy(source: UploadedFile, target: Path, limit: int) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with target.open("wb") as handle:
        for chunk in source.chunks(1024 * 1024):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the file is larger than the limit of {limit} bytes")
            digest.update(chunk)
            handle.write(chunk)
    return size, digest.hexdigest()


def dataset_create(*, owner: AbstractBaseUser, upload: UploadedFile, name: str = "") -> Dataset:
    """Store an upload under the data directory and record it; on any failure nothing stays."""
    limit = settings.UPLOAD_MAX_BYTES
    if upload.size is not None and upload.size > limit:
        raise TooLarge(f"the file is larger than the limit of {limit} bytes")
    original = Path(upload.name or "upload").name[:255]
    dataset_id = uuid.uuid4()
    root = settings.DATA_DIR / "datasets"
    made_root = not root.is_dir()
    # Written beside its final place, then renamed: a crash leaves no half dataset behind.
    staging = _staging_folder(root)
    final_dir = root / str(dataset_id)
    try:
        raw = staging / "upload"
        size, sha256 = _sha256_copy(upload, raw, limit)
        try:
            # A zip's members are checked too, in the inspection subprocess.
            detected = formats.detect(raw, original)
        except inspection.BadContent as exc:
            raise RequestInvalid({"file": [str(exc)]}) from None
        stored_name = "data" + formats.EXTENSIONS[detected]
        raw.rename(staging / stored_name)
        with transaction.atomic():
            dataset = Dataset.objects.create(
                id=dataset_id,
                owner=owner,
                name=(name or original)[:200],
                original_name=original,
                path=f"datasets/{dataset_id}/{stored_name}",
                size=size,
                sha256=sha256,
                format=detected,
            )
            staging.rename(final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(final_dir, ignore_errors=True)
        if made_root:  # the first upload, refused: the data directory is left as it was
            with contextlib.suppress(OSError):
                root.rmdir()  # only while empty
        raise
    return dataset


def _staging_folder(root: Path) -> Path:
    """A new folder in `root`, made if need be (again, if a refused first upload has just
    removed it)."""
    for _ in range(2):
        root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            return Path(tempfile.mkdtemp(prefix=".upload-", dir=root))
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".upload-", dir=root))


def dataset_delete(*, dataset: Dataset) -> None:
    in_use = Job.objects.filter(inputs__dataset=dataset).exclude(state__in=FINISHED_STATES)
    if in_use.exists():
        raise Conflict("the dataset is an input of a job that has not finished")
    folder = dataset.absolute_path.parent
    with transaction.atomic():
        dataset.delete()
        transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))


def _digest(payload) -> str:
    # ASCII escapes: any string the JSON parser accepted (lone surrogates too) can be digested.
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def job_submit(*, owner: AbstractBaseUser, payload, idempotency_key: str = "") -> tuple[Job, bool]:
    """Validate a request and store it as a QUEUED job; the controller hears of it after commit.

    Returns (job, created). With an idempotency key already used by this owner, the same body
    gives back the job it made (created False), another body is a Conflict.
    """
    digest = _digest(payload) if idempotency_key else ""
    if idempotency_key:
        earlier = _job_for_key(owner, idempotency_key, digest)
        if earlier is not None:
            return earlier, False
    valid = validate_request(payload, datasets=visible_datasets(owner))
    limits.work_check(owner=owner, workflow=valid.workflow.name, request=valid.request)
    try:
        with transaction.atomic():
            limits.queued_check(owner=owner)
            job = Job(
                owner=owner,
                workflow=valid.workflow.name,
                name=valid.request["name"],
                tags=valid.request["tags"],
                callback_url=valid.request.get("callback_url", ""),
                request=valid.request,
                idempotency_key=idempotency_key,
                request_digest=digest,
            )
            # The fields' own checks only: the owner is the caller, the id fresh, and the
            # database holds the constraints (two round trips fewer per submission, B1).
            job.full_clean(exclude=["owner"], validate_unique=False, validate_constraints=False)
            job.save(force_insert=True)
            JobInput.objects.bulk_create(
                JobInput(job=job, dataset=dataset, name=name, position=position)
                for name, position, dataset in valid.inputs
            )
            transaction.on_commit(lambda: job_enqueue(job_id=job.id))
        log.info("job %s: submitted (%s)", job.id, job.workflow, extra={"job_id": str(job.id)})
    except IntegrityError:
        # Two requests with one key at once: the other one made the job.
        earlier = _job_for_key(owner, idempotency_key, digest) if idempotency_key else None
        if earlier is None:
            raise
        return earlier, False
    return job, True


def job_submit_with_files(
    *, owner: AbstractBaseUser, payload: dict, files: list[UploadedFile]
) -> Job:
    """A request sent with its input files (a WES run with attachments): every file becomes the
    owner's dataset, named by its file name, and each input that names a file (by that name, or
    its last path part) takes its dataset's id. If the request is refused, no dataset stays."""
    names = [Path(upload.name or "upload").name for upload in files]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise RequestInvalid({"files": [f"two files are named {twice[0]!r}"]})
    created: list[Dataset] = []
    try:
        for name, upload in zip(names, files, strict=True):
            try:
                created.append(dataset_create(owner=owner, upload=upload, name=name))
            except RequestInvalid as exc:
                raise RequestInvalid(
                    {f"files.{name}": exc.errors.get("file", ["refused"])}
                ) from None
        by_name = {name: str(dataset.id) for name, dataset in zip(names, created, strict=True)}

        def resolve(value):
            if isinstance(value, str):
                return by_name.get(value, by_name.get(value.rsplit("/", 1)[-1], value))
            return value

        inputs = payload.get("inputs")
        if isinstance(inputs, dict):
            payload = {
                **payload,
                "inputs": {
                    key: [resolve(v) for v in value] if isinstance(value, list) else resolve(value)
                    for key, value in inputs.items()
                },
            }
        job, _ = job_submit(owner=owner, payload=payload)
    except BaseException:
        for dataset in created:
            folder = dataset.absolute_path.parent
            dataset.delete()
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return job


def _job_for_key(owner, key: str, digest: str) -> Job | None:
    earlier = Job.objects.filter(owner=owner, idempotency_key=key).first()
    if earlier is not None and earlier.request_digest != digest:
        raise Conflict("this Idempotency-Key was used with another request body")
    return earlier


def job_enqueue(*, job_id: uuid.UUID) -> bool:
    """Tell a controller about a queued job. A broker outage is logged, not raised: the job is
    stored, and the recovery task sends it again."""
    try:
        dispatch.send_run_job(job_id)
    except Exception:
        log.exception("job %s: could not reach the broker; recovery will send it again", job_id)
        return False
    return True


def job_cancel(*, job: Job) -> Job:
    """Cancel a job: a queued one at once, a running one through its controller."""
    for _ in range(5):
        job.refresh_from_db()
        if job.state in {State.CANCELED, State.CANCELING}:
            return job
        if job.is_finished:
            raise Conflict(f"the job has already finished ({job.state})")
        target = State.CANCELED if job.state == State.QUEUED else State.CANCELING
        try:
            job.transition(target)
        except IllegalTransition:
            continue  # the controller moved it meanwhile; look again
        return job
    raise Conflict("the job kept changing state while canceling; try again")


def job_delete(*, job: Job) -> None:
    """Remove a finished job, its outputs and its folder."""
    if not job.is_finished:
        raise Conflict(f"only finished jobs can be deleted; this one is {job.state}")
    folder = JobFolder.of(job)
    with transaction.atomic():
        deleted, _ = Job.objects.filter(pk=job.pk, state=job.state).delete()
        if not deleted:
            raise Conflict("the job changed state; try again")
        transaction.on_commit(folder.remove)


def job_requeue(*, job: Job) -> Job:
    """Run a failed or canceled job again (operators), keeping what makeflow already finished."""
    if job.state not in {State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED}:
        raise Conflict(f"only failed or canceled jobs can be requeued; this one is {job.state}")
    with transaction.atomic():
        job.transition(State.QUEUED, error_code="", error_message="", attempts=0)
        transaction.on_commit(lambda: job_enqueue(job_id=job.id))
    return job


# The controller's side of a job's life. Each is one conditional UPDATE, guarded by the states
# the transition table allows and by the controller that holds the job (`controller`).
HELD = (State.INITIALIZING, State.RUNNING)


def job_claim(*, job_id, controller: str) -> Job | None:
    """Take a queued job for this controller; None if it is not queued (any more).

    Raises limits.OverLimit, leaving the job QUEUED, while its owner already has
    LMWEB_USER_MAX_RUNNING jobs running: the task looks again later.
    """
    with transaction.atomic():
        owner_id = (
            Job.objects.filter(pk=job_id, state=State.QUEUED)
            .values_list("owner_id", flat=True)
            .first()
        )
        if owner_id is None:
            return None
        limits.running_check(owner_id=owner_id)
        now = timezone.now()
        moved = Job.move(
            job_id,
            State.INITIALIZING,
            sources=[State.QUEUED],
            claimed_by=controller,
            heartbeat_at=now,
            started_at=Coalesce(F("started_at"), now),
            attempts=F("attempts") + 1,
            error_code="",
            error_message="",
        )
    return Job.objects.get(pk=job_id) if moved else None


def _why_not_held(job: Job, controller: str) -> Exception:
    """Canceled if the user canceled the job this controller holds, else LostJob."""
    job.refresh_from_db()
    if job.claimed_by == controller and job.state == State.CANCELING:
        return Canceled()
    return LostJob()


def job_start(*, job: Job, controller: str, stage: str) -> None:
    """A makeflow of `stage` started: INITIALIZING -> RUNNING, or a heartbeat if it already
    runs. Raises Canceled or LostJob when the job is no longer this controller's to run."""
    if job.state != State.INITIALIZING:
        job_beat(job=job, controller=controller, stage=stage)
        return
    now = timezone.now()
    where = {"claimed_by": controller}
    if not Job.move(
        job.pk,
        State.RUNNING,
        sources=[State.INITIALIZING],
        where=where,
        stage=stage,
        heartbeat_at=now,
    ):
        raise _why_not_held(job, controller)
    job.state, job.stage, job.heartbeat_at = State.RUNNING, stage, now


def job_beat(*, job: Job, controller: str, stage: str, counts: tuple | None = None) -> None:
    """Store progress and the heartbeat, only while this controller still runs the job."""
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
    held = Job.objects.filter(pk=job.pk, claimed_by=controller, state=State.RUNNING)
    if not held.update(**fields):
        raise _why_not_held(job, controller)


def job_record_manager(*, job: Job, controller: str, project: str = "", port=None) -> None:
    """Note (or forget) the job's running manager: the worker pool serves only those."""
    Job.objects.filter(pk=job.pk, claimed_by=controller).update(
        manager_project=project, manager_port=port
    )


def job_fail(*, job: Job, controller: str, state: str, code: str, message: str) -> None:
    """Record a failure of the job this controller holds; a canceled one ends CANCELED."""
    job.refresh_from_db()
    if job.claimed_by != controller:
        return
    if job.state != State.CANCELING and Job.move(
        job.pk,
        state,
        sources=HELD,
        where={"claimed_by": controller},
        error_code=code,
        error_message=message[:20000],
        claimed_by="",
    ):
        return
    if isinstance(_why_not_held(job, controller), Canceled):
        job_finish_cancel(job=job, controller=controller)
        return
    log.error("job %s: could not record %s (it is %s now)", job.id, state, job.state)


def job_hand_back(*, job: Job, controller: str) -> None:
    """Back to QUEUED without counting the attempt (the controller is shutting down); the
    rerun resumes from makeflow's log."""
    with transaction.atomic():
        moved = Job.move(
            job.pk,
            State.QUEUED,
            sources=HELD,
            where={"claimed_by": controller},
            attempts=F("attempts") - 1,
        )
        if moved:
            transaction.on_commit(partial(job_enqueue, job_id=job.id))
    if moved:
        log.info("job %s: handed back to the queue (controller shutting down)", job.id)
    elif isinstance(_why_not_held(job, controller), Canceled):
        job_finish_cancel(job=job, controller=controller)


def job_finish_cancel(*, job: Job, controller: str) -> None:
    """The controller stopped a canceled job's work: CANCELING -> CANCELED."""
    if Job.move(
        job.pk,
        State.CANCELED,
        sources=[State.CANCELING],
        where={"claimed_by": controller},
        claimed_by="",
    ):
        log.info("job %s: canceled", job.id)
    job.refresh_from_db()


def job_complete(*, job: Job, controller: str, outputs: list[dict]) -> None:
    """Catalog the outputs and end the job COMPLETE. Raises Canceled if the cancel came in as
    the work finished (the results stand, the cancel is moot), LostJob if it is not ours."""
    with transaction.atomic():
        Output.objects.filter(job=job).delete()
        Output.objects.bulk_create(Output(job=job, **entry) for entry in outputs)
        moved = Job.move(
            job.pk,
            State.COMPLETE,
            sources=[State.RUNNING],
            where={"claimed_by": controller},
            claimed_by="",
            rules_waiting=0,
            rules_running=0,
        )
    if not moved:
        job.refresh_from_db()
        if job.state == State.CANCELING:
            raise Canceled()
        raise LostJob()
    log.info("job %s: complete with %d outputs", job.id, len(outputs))


def job_counts() -> dict[str, int]:
    counts = dict.fromkeys(State.values, 0)
    for row in Job.objects.order_by().values("state").annotate(n=Count("id")):
        counts[row["state"]] = row["n"]
    return counts


def job_stages(*, job: Job) -> list[str]:
    """The stages the job has started, in order."""
    return rules.read_stages(job)["started"]


def job_tasks(*, job: Job) -> list[dict]:
    """One entry per makeflow rule of every stage the job has started, in stage order."""
    return rules.read_tasks(job)


def job_task_log(*, job: Job, task: str, stream: str, offset: int, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes of a rule's stdout or stderr from `offset`, and the file's size now.

    `task` is "<stage>:<rule>", or a rule id alone when one stage holds it. LookupError when the
    job has no such rule; (b"", 0) while the rule has not written the file."""
    stage, _, rule_id = task.rpartition(":")
    stages = [stage] if stage else rules.read_stages(job)["started"]
    found = [path for s in stages if (path := rules.task_log_file(job, s, rule_id, stream))]
    if len(found) != 1:
        raise LookupError(
            f"no task {task!r}"
            if not found
            else f"{task!r} names a rule of several stages: give <stage>:<rule>"
        )
    try:
        with found[0].open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(min(offset, size))
            return handle.read(limit), size
    except FileNotFoundError:
        return b"", 0


def job_live_log_append(
    *, job_id, token: str, stage: str, rule_id: str, stream: str, offset: int, data: bytes
) -> int:
    """Keep what a running rule's guard sent of its output (live logs); the live log's size
    after it. From offset 0 it starts over (a new attempt of the rule); from any other offset
    that is not the size kept so far it is refused (409, with that size to go on from)."""
    if not rules.live_log_token_valid(job_id, token):
        raise LiveLogRefused("not this job's token", 403)
    if stream not in rules.STREAMS or not _NAME.match(stage) or not _NAME.match(rule_id):
        raise LiveLogRefused("no such stage, rule or stream", 400)
    job = Job.objects.filter(pk=job_id).only("id", "state").first()
    if job is None or job.state not in ACTIVE_STATES:
        raise LiveLogRefused("the job is not running", 410)
    path = JobFolder.of(job).live_log(stage, rule_id, stream)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # one writer at a time (web threads and processes)
        size = os.fstat(handle.fileno()).st_size
        if offset == 0 and size:
            handle.truncate(0)
            size = 0
        if offset != size:
            raise LiveLogRefused(f"the live log holds {size} bytes", 409, size)
        if size + len(data) > settings.LIVE_LOG_MAX_BYTES:
            raise LiveLogRefused("the live log is full", 413, size)
        handle.write(data)
        return size + len(data)


def jobs_recover() -> dict[str, int]:
    """Requeue jobs whose controller stopped beating; give up after the allowed attempts.

    Only a row still stale at UPDATE time moves, so a controller that beats meanwhile keeps its
    job, and two schedulers cannot both requeue it.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.LMWEB_STALE_SECONDS)
    counts = {"requeued": 0, "failed": 0, "canceled": 0, "resent": 0}
    stale = Job.objects.filter(heartbeat_at__lt=stale_before)
    for job in stale.filter(state__in=HELD):
        where = {"heartbeat_at": job.heartbeat_at}
        if job.attempts >= settings.LMWEB_MAX_ATTEMPTS:
            message = f"the controller was lost {job.attempts} times; giving up"
            if Job.move(
                job.pk,
                State.SYSTEM_ERROR,
                sources=[job.state],
                where=where,
                error_code="controller_lost",
                error_message=message,
                finished_at=now,
                claimed_by="",
            ):
                counts["failed"] += 1
                log.error("job %s: %s", job.id, message)
            continue
        with transaction.atomic():
            if Job.move(job.pk, State.QUEUED, sources=[job.state], where=where, heartbeat_at=now):
                counts["requeued"] += 1
                log.warning("job %s: controller lost (no heartbeat); requeued", job.id)
                transaction.on_commit(partial(job_enqueue, job_id=job.id))
    counts["resent"] = _resend_lost_messages(now - timedelta(seconds=settings.LMWEB_STALE_SECONDS))
    for job in stale.filter(state=State.CANCELING):
        where = {"heartbeat_at": job.heartbeat_at}
        if Job.move(
            job.pk,
            State.CANCELED,
            sources=[State.CANCELING],
            where=where,
            finished_at=now,
            claimed_by="",
        ):
            counts["canceled"] += 1
    return counts


def _resend_lost_messages(before) -> int:
    """Send again the queued jobs that no broker message stands for any more (a Redis restart
    without persistence, a publish that failed after the commit)."""
    candidates = list(
        Job.objects.filter(state=State.QUEUED)
        .filter(
            models.Q(heartbeat_at__lt=before)
            | models.Q(heartbeat_at__isnull=True, submitted_at__lt=before)
        )
        .values_list("id", flat=True)[:1000]
    )
    if not candidates:
        return 0
    messages = dispatch.messages_in_queue()
    if messages is None:
        return 0
    resent = 0
    for job_id in candidates:
        if str(job_id).encode() in messages:
            continue
        Job.objects.filter(pk=job_id, state=State.QUEUED).update(heartbeat_at=timezone.now())
        if job_enqueue(job_id=job_id):
            resent += 1
            log.warning("job %s: queued but its message was lost; sent again", job_id)
    return resent
