"""Datasets (uploaded inputs), jobs (one computation each) and their outputs."""

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models
from django.dispatch import Signal
from django.utils import timezone

# Sent after a job's state moved to a finished one (COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR,
# CANCELED), with `pk` and `state`: completion callbacks (jobs/callbacks.py) listen.
job_finished = Signal()


class Dataset(models.Model):
    """An uploaded input file, stored once under the data directory and reused by id."""

    class Format(models.TextChoices):
        LMM = "lmm", "lmpy matrix (.lmm)"
        CSV = "csv", "CSV table"
        NEXUS = "nexus", "Nexus tree"
        NEWICK = "newick", "Newick tree"
        GEOTIFF = "geotiff", "GeoTIFF raster"
        SHAPEFILE_ZIP = "shapefile-zip", "Zipped shapefile(s)"
        DWCA = "dwca", "Darwin Core Archive"
        ZIP = "zip", "Zip archive"
        JSON = "json", "JSON document"
        TEXT = "text", "Plain text"
        UNKNOWN = "unknown", "Unknown"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets"
    )
    name = models.CharField(max_length=200)
    original_name = models.CharField(max_length=255)
    # Relative to settings.DATA_DIR; the file name is ours, never the user's.
    path = models.CharField(max_length=500, editable=False)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    format = models.CharField(max_length=20, choices=Format.choices)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.format}, {self.size} bytes)"

    @property
    def absolute_path(self) -> Path:
        return settings.DATA_DIR / self.path

    @property
    def extension(self) -> str:
        return Path(self.path).suffix


class State(models.TextChoices):
    """GA4GH WES run states."""

    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"


FINISHED_STATES = frozenset(
    {State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED}
)
ACTIVE_STATES = frozenset({State.INITIALIZING, State.RUNNING, State.CANCELING})

# Every legal move. Requeue (back to QUEUED) is how recovery and operators retry a job.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.QUEUED: frozenset({State.INITIALIZING, State.CANCELED, State.SYSTEM_ERROR}),
    State.INITIALIZING: frozenset(
        {State.RUNNING, State.QUEUED, State.CANCELING, State.EXECUTOR_ERROR, State.SYSTEM_ERROR}
    ),
    State.RUNNING: frozenset(
        {
            State.COMPLETE,
            State.EXECUTOR_ERROR,
            State.SYSTEM_ERROR,
            State.CANCELING,
            State.QUEUED,
        }
    ),
    State.CANCELING: frozenset({State.CANCELED, State.SYSTEM_ERROR}),
    State.COMPLETE: frozenset(),
    State.EXECUTOR_ERROR: frozenset({State.QUEUED}),
    State.SYSTEM_ERROR: frozenset({State.QUEUED}),
    State.CANCELED: frozenset({State.QUEUED}),
}


class IllegalTransition(Exception):
    """A state change that the job's life does not allow, or that lost a race."""


class Job(models.Model):
    """One computation: a validated request, its state, its progress and where its files are."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs"
    )
    workflow = models.CharField(max_length=64, db_index=True)
    name = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    request = models.JSONField(help_text="The validated request, defaults filled in.")
    datasets = models.ManyToManyField(Dataset, through="JobInput", related_name="jobs")

    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    stage = models.CharField(max_length=64, blank=True)
    rules_total = models.PositiveIntegerField(default=0)
    rules_waiting = models.PositiveIntegerField(default=0)
    rules_running = models.PositiveIntegerField(default=0)
    rules_done = models.PositiveIntegerField(default=0)
    rules_failed = models.PositiveIntegerField(default=0)

    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    submitted_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Who holds the job right now (host:pid of the controller); empty when nobody does.
    claimed_by = models.CharField(max_length=200, blank=True)
    # A client's Idempotency-Key and the digest of the body it came with: a retried POST returns
    # the job it already made.
    idempotency_key = models.CharField(max_length=200, blank=True)
    # Called when the job finishes (jobs/callbacks.py); empty: no callback.
    callback_url = models.CharField(max_length=2000, blank=True)
    request_digest = models.CharField(max_length=64, blank=True)
    # The Work Queue manager of the makeflow running now (its project name, width suffix
    # included, and port), set at each start: the worker pool serves only managers known here,
    # not whatever a datagram to the catalog advertises.
    manager_project = models.CharField(max_length=200, blank=True)
    manager_port = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-submitted_at"]
        indexes = [
            models.Index(fields=["state", "heartbeat_at"]),
            # A user's job list, newest first, reads one page of this index, however many jobs.
            models.Index(fields=["owner", "-submitted_at"], name="job_owner_newest"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="one_job_per_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workflow} {self.id} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def directory(self) -> Path:
        return settings.DATA_DIR / "jobs" / str(self.id)

    @staticmethod
    def can_move(source: str, target: str) -> bool:
        return target in TRANSITIONS.get(source, frozenset())

    @staticmethod
    def stamped(target: str, fields: dict) -> dict:
        """`fields` with the times and holder that every move to `target` sets."""
        fields = dict(fields)
        now = timezone.now()
        if target == State.INITIALIZING:
            fields.setdefault("started_at", now)
        if target in FINISHED_STATES:
            fields.setdefault("finished_at", now)
        if target == State.QUEUED:
            fields.setdefault("finished_at", None)
            fields.setdefault("claimed_by", "")
        return fields

    @classmethod
    def move(cls, pk, target: str, *, sources, where: dict | None = None, **fields) -> bool:
        """The one conditional UPDATE of a job's state: from any of `sources` (each checked
        against TRANSITIONS) to `target`, only while the row still matches `where`.

        Returns whether the row moved; False means someone else moved it first. Raises
        IllegalTransition if the table forbids one of the moves (a bug, not a race).
        """
        sources = frozenset(sources)
        forbidden = sorted(source for source in sources if not cls.can_move(source, target))
        if forbidden or not sources:
            raise IllegalTransition(f"job {pk}: {forbidden} -> {target} is not allowed")
        changed = cls.objects.filter(pk=pk, state__in=sources, **(where or {})).update(
            state=target, **cls.stamped(target, fields)
        )
        if changed == 1 and target in FINISHED_STATES:
            job_finished.send(sender=cls, pk=pk, state=target)
        return changed == 1

    def transition(self, target: str, *, expect: str | None = None, **fields) -> None:
        """Move to `target` with a conditional UPDATE, so that two writers cannot both win.

        Raises IllegalTransition if the move is not allowed from the current state, or if the
        row changed underneath (someone else moved it first). On success the instance is updated.
        """
        source = expect or self.state
        if not self.can_move(source, target):
            raise IllegalTransition(f"job {self.id}: {source} -> {target} is not allowed")
        fields = self.stamped(target, fields)
        if not self.move(self.pk, target, sources=[source], **fields):
            raise IllegalTransition(f"job {self.id}: no longer {source}, cannot move to {target}")
        self.state = target
        for key, value in fields.items():
            setattr(self, key, value)


class JobInput(models.Model):
    """Which dataset a job uses under which input name."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="inputs")
    # A finished job keeps its staged copy, so its datasets may be deleted afterwards.
    dataset = models.ForeignKey(Dataset, on_delete=models.SET_NULL, null=True, related_name="uses")
    name = models.CharField(max_length=64)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "name", "position"], name="one_dataset_per_slot")
        ]

    def __str__(self) -> str:
        return f"{self.name}[{self.position}] = {self.dataset_id}"


class Output(models.Model):
    """A file a job produced, cataloged with its checksum."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outputs")
    path = models.CharField(max_length=500, help_text="Relative to the job's outputs folder.")
    role = models.CharField(max_length=64, blank=True)
    media_type = models.CharField(max_length=100)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["job", "path"], name="one_output_per_path")]

    def __str__(self) -> str:
        return self.path


class CallbackSecret(models.Model):
    """A user's own key for the HMAC-SHA256 signature of their completion callbacks."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="callback_secret"
    )
    secret = models.CharField(max_length=100)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"callback secret of {self.user}"


class CallbackDelivery(models.Model):
    """One completion callback: a POST of the finished job's document to its callback_url,
    retried with back-off until the receiver answers 2xx (at least once) or the attempts run out.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="callbacks")
    # "finished": sent because the job finished (once per finish); "resend": asked for again.
    reason = models.CharField(max_length=20, default="finished")
    job_state = models.CharField(max_length=20)
    job_finished_at = models.DateTimeField(null=True)
    url = models.CharField(max_length=2000)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "callback deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["job", "job_finished_at"],
                condition=models.Q(reason="finished"),
                name="one_callback_per_finish",
            )
        ]

    def __str__(self) -> str:
        return f"{self.job_id} -> {self.url} ({self.status}, {self.attempts} attempts)"
