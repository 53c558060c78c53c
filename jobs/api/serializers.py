"""Serializers: output shapes, and the small input shapes the views read."""

from datetime import datetime

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, serializers
from rest_framework.reverse import reverse
from rest_framework.settings import api_settings

from .. import inspection, ops, validation
from ..models import CallbackDelivery, Dataset, Job, Output


class DatasetSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="dataset-detail")
    owner = serializers.CharField(source="owner.get_username", read_only=True)

    class Meta:
        model = Dataset
        fields = [
            "id",
            "url",
            "name",
            "original_name",
            "format",
            "size",
            "sha256",
            "owner",
            "created",
        ]
        read_only_fields = fields


class DatasetUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The file to upload.")
    name = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="Defaults to the file name."
    )


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField(source="rules_total")
    waiting = serializers.IntegerField(source="rules_waiting")
    running = serializers.IntegerField(source="rules_running")
    done = serializers.IntegerField(source="rules_done")
    failed = serializers.IntegerField(source="rules_failed")
    percent = serializers.SerializerMethodField()

    def get_percent(self, job: Job) -> float:
        return _percent(job)


class JobSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="job-detail")
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    progress = ProgressSerializer(source="*", read_only=True)
    error = serializers.SerializerMethodField()
    waiting = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "url",
            "workflow",
            "name",
            "tags",
            "state",
            "stage",
            "progress",
            "error",
            "waiting",
            "owner",
            "submitted_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "attempts",
            "request",
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    )
    def get_error(self, job: Job) -> dict | None:
        if not job.error_code and not job.error_message:
            return None
        return {"code": job.error_code, "message": job.error_message}

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "position": {"type": "integer", "nullable": True},
                "reason": {"type": "string"},
            },
        }
    )
    def get_waiting(self, job: Job) -> dict | None:
        # Only on a job's own page: the list would ask the catalog once per job.
        if not self.context.get("detail"):
            return None
        return ops.job_waiting(job)

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
    def get_links(self, job: Job) -> dict[str, str]:
        job_id = str(job.pk)
        return {name: url.replace(_PLACEHOLDER, job_id) for name, url in self._urls()[1].items()}

    def _urls(self) -> tuple[str, dict[str, str]]:
        """The job URLs with a placeholder id, reversed once per serializer (a page of a list
        shares one): reversing five URLs for each of 50 jobs cost more than the rest."""
        cached = getattr(self, "_url_templates", None)
        if cached is None:
            request = self.context.get("request")
            kwargs = {"pk": _PLACEHOLDER}
            links = {
                name: reverse(f"job-{name}", kwargs=kwargs, request=request)
                for name in ("cancel", "tasks", "outputs", "package")
            }
            cached = (reverse("job-detail", kwargs=kwargs, request=request), links)
            self._url_templates = cached
        return cached

    def _when(self, value: datetime | None) -> str | None:
        """DRF's ISO 8601 form of a time (DateTimeField.to_representation), with the time zone
        looked up once per serializer rather than four times per job."""
        if value is None:
            return None
        zone = self.__dict__.get("_zone")
        if zone is None:
            zone = self._zone = _DATETIME.default_timezone() or False  # False: USE_TZ is off
        if not zone or value.tzinfo is None or api_settings.DATETIME_FORMAT.lower() != ISO_8601:
            return _DATETIME.to_representation(value)
        try:
            text = value.astimezone(zone).isoformat()
        except OverflowError:
            return _DATETIME.to_representation(value)  # DRF's own error
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    def to_representation(self, job: "Job | JobRow") -> dict:
        """The same document as DRF's field-by-field path (a test holds the two equal), built
        directly: that path took most of a job list's time (see bench/, B1)."""
        when = self._when
        job_id = str(job.pk)
        detail, links = self._urls()
        return {
            "id": job_id,
            "url": detail.replace(_PLACEHOLDER, job_id),
            "workflow": job.workflow,
            "name": job.name,
            "tags": job.tags,
            "state": job.state,
            "stage": job.stage,
            "progress": {
                "total": job.rules_total,
                "waiting": job.rules_waiting,
                "running": job.rules_running,
                "done": job.rules_done,
                "failed": job.rules_failed,
                "percent": _percent(job),
            },
            "error": self.get_error(job),
            "waiting": self.get_waiting(job),
            "owner": _owner_name(job),
            "submitted_at": when(job.submitted_at),
            "started_at": when(job.started_at),
            "finished_at": when(job.finished_at),
            "heartbeat_at": when(job.heartbeat_at),
            "attempts": job.attempts,
            "request": job.request,
            "links": {name: url.replace(_PLACEHOLDER, job_id) for name, url in links.items()},
        }


class JobRow:
    """A job as the columns its document reads (a list's page), in place of a Job object."""

    columns = (
        "id",
        "workflow",
        "name",
        "tags",
        "state",
        "stage",
        "rules_total",
        "rules_waiting",
        "rules_running",
        "rules_done",
        "rules_failed",
        "error_code",
        "error_message",
        "owner_username",
        "submitted_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "attempts",
        "request",
    )

    def __init__(self, values: dict) -> None:
        self.__dict__ = values
        self.pk = values["id"]


# A job id that no real URL holds, replaced by each job's own in reversed URL templates.
_PLACEHOLDER = "00000000-0000-0000-0000-00000000beef"
_DATETIME = serializers.DateTimeField()


def _owner_name(job: Job) -> str:
    # The job views annotate it; a job fetched elsewhere reads its owner.
    name = getattr(job, "owner_username", None)
    return name if name is not None else job.owner.get_username()


def _percent(job: Job) -> float:
    if not job.rules_total:
        return 100.0 if job.state == "COMPLETE" else 0.0
    return round(100.0 * job.rules_done / job.rules_total, 1)


class JobRequestSerializer(serializers.Serializer):
    """The job request (documentation only: the workflow's JSON Schema validates it)."""

    workflow = serializers.CharField(help_text="A name from /api/v1/workflows/.")
    name = serializers.CharField(required=False, max_length=200)
    inputs = serializers.DictField(
        required=False, help_text="Input name to dataset id (or list of ids)."
    )
    params = serializers.DictField(required=False, help_text="As the workflow's schema says.")
    tags = serializers.DictField(child=serializers.CharField(), required=False)


class OutputSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Output
        fields = ["path", "role", "media_type", "size", "sha256", "url"]
        read_only_fields = fields

    def get_url(self, output: Output) -> str:
        return reverse(
            "job-output-file",
            kwargs={"pk": output.job_id, "path": output.path},
            request=self.context.get("request"),
        )


class WorkflowSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    url = serializers.SerializerMethodField()
    inputs = serializers.SerializerMethodField()
    schema = serializers.SerializerMethodField()
    limits = serializers.SerializerMethodField()
    example = serializers.JSONField()
    example_data = serializers.DictField(
        child=serializers.CharField(),
        help_text=(
            "Which file of the sample data each example dataset id stands for (a folder is "
            "uploaded as a zip)."
        ),
    )

    def get_url(self, workflow) -> str:
        return reverse(
            "workflow-detail", kwargs={"pk": workflow.name}, request=self.context.get("request")
        )

    @extend_schema_field({"type": "object"})
    def get_inputs(self, workflow) -> dict:
        return {
            name: {
                "formats": list(spec.formats),
                "many": spec.many,
                "required": spec.required,
                "description": spec.description,
            }
            for name, spec in workflow.dataset_inputs.items()
        }

    @extend_schema_field({"type": "object"})
    def get_schema(self, workflow) -> dict:
        return workflow.request_schema()

    @extend_schema_field(
        {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": (
                "What this workflow's inputs may hold and cost to inspect (an input over a limit "
                "is a 400 naming it): pam_cells, tree_tips, raster_pixels, raster_bands, "
                "csv_rows, zip_members, zip_unpacked_bytes, datasets_per_input, "
                "randomized_cells (randomizations or permutations x PAM cells), "
                "inspection_memory_bytes, inspection_seconds."
            ),
        }
    )
    def get_limits(self, workflow) -> dict:
        every = inspection.Limits.from_settings(settings)
        names: set[str] = set()
        for spec in workflow.dataset_inputs.values():
            names.update(inspection.LIMITS_BY_CONTENT.get(spec.content, ()))
            if spec.many:
                names.add("datasets_per_input")
        limits = {name: getattr(every, name) for name in sorted(names - {"datasets_per_input"})}
        if "datasets_per_input" in names:
            limits["datasets_per_input"] = settings.MAX_INPUT_DATASETS
        params = workflow.params_schema.get("properties", {})
        if any(name in params for name in validation.RANDOMIZATION_PARAMS):
            limits["randomized_cells"] = settings.MAX_RANDOMIZED_CELLS
        if names:
            limits["inspection_memory_bytes"] = every.inspection_memory_bytes
            limits["inspection_seconds"] = every.inspection_seconds
        return limits


class TaskSerializer(serializers.Serializer):
    """One makeflow rule of a job, read from makeflow's own logs."""

    stage = serializers.CharField()
    rule = serializers.CharField(help_text="The rule's id within its stage.")
    command = serializers.CharField()
    state = serializers.ChoiceField(choices=["waiting", "running", "complete", "failed", "aborted"])
    exit_code = serializers.IntegerField(allow_null=True)
    host = serializers.CharField(allow_blank=True)
    attempts = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    stdout = serializers.CharField(allow_blank=True, help_text="The last 4 KB of standard output.")
    stderr = serializers.CharField(allow_blank=True, help_text="The last 4 KB of standard error.")


class CallbackDeliverySerializer(serializers.ModelSerializer):
    """One completion callback: where, why, and what became of it."""

    class Meta:
        model = CallbackDelivery
        fields = [
            "id",
            "reason",
            "job_state",
            "url",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created",
            "delivered_at",
        ]
        read_only_fields = fields
