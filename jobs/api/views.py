"""Thin views: parse, call a service, serialize."""

import platform
from pathlib import Path
from urllib.parse import quote

import celery
import django
import django_filters
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import CharField, F, Value
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, parsers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

import lmweb
import translators
from lmweb.logs import job_context

from .. import callbacks as job_callbacks
from .. import metrics, ops, services
from ..execution.folder import JobFolder
from ..models import Dataset, Job, Output, State
from ..versions import tool_versions
from .errors import ConflictError, PayloadTooLarge
from .filters import UtcIsoDateTimeFilter
from .serializers import (
    CallbackDeliverySerializer,
    DatasetSerializer,
    DatasetUploadSerializer,
    JobRequestSerializer,
    JobRow,
    JobSerializer,
    OutputSerializer,
    TaskSerializer,
    WorkflowSerializer,
)
from .throttles import ScopedRateThrottle, UserRateThrottle

TASK_STREAMS = ("stdout", "stderr")
# The most of a log one response holds: a reader asks again from the offset after it.
TASK_LOG_BYTES = 1024 * 1024


class DatasetFilter(django_filters.FilterSet):
    # Not "format": DRF reads ?format= as the response format.
    file_format = django_filters.MultipleChoiceFilter(
        field_name="format", choices=Dataset.Format.choices
    )
    created_after = UtcIsoDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created", lookup_expr="lt")
    # A client uploads a file once: it asks first whether the caller has one of this content.
    sha256 = django_filters.CharFilter(help_text="the file's SHA-256, 64 hexadecimal digits")

    class Meta:
        model = Dataset
        fields = []


class DatasetViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Input files: upload once (multipart), then name them by id in job requests."""

    serializer_class = DatasetSerializer
    parser_classes = [parsers.MultiPartParser, parsers.FormParser]
    filterset_class = DatasetFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Dataset.objects.none()
        return services.visible_datasets(self.request.user).select_related("owner")

    @extend_schema(request=DatasetUploadSerializer, responses={201: DatasetSerializer})
    def create(self, request, *args, **kwargs):
        # Refuse before the body is read when the client says how big it is.
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > settings.UPLOAD_MAX_BYTES + 64 * 1024:
            raise PayloadTooLarge(f"uploads are limited to {settings.UPLOAD_MAX_BYTES} bytes")
        if len(request.FILES.getlist("file")) > 1:
            raise ValidationError({"file": ["one file per upload"]})
        upload = DatasetUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        dataset = services.dataset_create(
            owner=request.user,
            upload=upload.validated_data["file"],
            name=upload.validated_data.get("name", ""),
        )
        body = self.get_serializer(dataset).data
        # DRF's URL fields are Hyperlink objects; wsgiref (runserver) accepts only exact str.
        headers = {"Location": str(body["url"])}
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)

    def perform_destroy(self, instance):
        services.dataset_delete(dataset=instance)


class JobFilter(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=State.choices)
    workflow = django_filters.CharFilter()
    submitted_after = UtcIsoDateTimeFilter(field_name="submitted_at", lookup_expr="gte")
    submitted_before = UtcIsoDateTimeFilter(field_name="submitted_at", lookup_expr="lt")
    finished_after = UtcIsoDateTimeFilter(field_name="finished_at", lookup_expr="gte")
    finished_before = UtcIsoDateTimeFilter(field_name="finished_at", lookup_expr="lt")

    class Meta:
        model = Job
        fields = ["state", "workflow"]


class JobViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Jobs: submit a request, follow its state, cancel it, fetch its results."""

    serializer_class = JobSerializer
    filterset_class = JobFilter

    def initial(self, request, *args, **kwargs):
        # Lines logged while serving a job's URLs name the job.
        if "pk" in kwargs:
            self._job_log = job_context(kwargs["pk"])
            self._job_log.__enter__()
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        log_context = getattr(self, "_job_log", None)
        if log_context is not None:
            log_context.__exit__(None, None, None)
        return super().finalize_response(request, response, *args, **kwargs)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "detail": self.action == "retrieve"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Job.objects.none()
        # The owner's name as a column: a joined User object per job cost more than the name.
        # A user who is not staff sees only their own jobs: their name needs no join.
        user = self.request.user
        if user.is_staff:
            owner = F(f"owner__{get_user_model().USERNAME_FIELD}")
        else:
            owner = Value(user.get_username(), output_field=CharField())
        return services.visible_jobs(user).annotate(owner_username=owner)

    def list(self, request, *args, **kwargs):
        # A page's jobs as rows of the document's columns, not Job objects: building 50 model
        # instances was a third of a job list's time (bench/, B1; py-spy). The document is the
        # same (tests/test_job_representation.py).
        queryset = self.filter_queryset(self.get_queryset()).values(*JobRow.columns)
        page = self.paginate_queryset(queryset)
        serializer = self.get_serializer([JobRow(row) for row in page], many=True)
        return self.get_paginated_response(serializer.data)

    def get_throttles(self):
        if self.action == "create":
            self.throttle_scope = "submit"
            return [UserRateThrottle(), ScopedRateThrottle()]
        return super().get_throttles()

    @extend_schema(
        request=JobRequestSerializer,
        responses={201: JobSerializer, 200: JobSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description=(
                    "Send the same key with the same body again (after a time-out, say) to get "
                    "the job the first request made (200) instead of a second job; the same key "
                    "with another body is 409."
                ),
            )
        ],
    )
    def create(self, request, *args, **kwargs):
        key = request.headers.get("Idempotency-Key", "")
        if len(key) > 200 or not key.isprintable() or not key.isascii():
            raise ValidationError({"Idempotency-Key": ["at most 200 printable ASCII characters"]})
        job, created = services.job_submit(
            owner=request.user, payload=request.data, idempotency_key=key
        )
        body = self.get_serializer(job).data
        headers = {"Location": str(body["url"])}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(body, status=code, headers=headers)

    def perform_destroy(self, instance):
        services.job_delete(job=instance)

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = services.job_cancel(job=self.get_object())
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={200: CallbackDeliverySerializer(many=True), 202: CallbackDeliverySerializer},
        description=(
            "GET: the job's completion callbacks and what became of each. POST: send the "
            "callback of a finished job again (202)."
        ),
    )
    @action(detail=True, methods=["get", "post"])
    def callbacks(self, request, pk=None):
        job = self.get_object()
        if request.method == "POST":
            try:
                delivery = job_callbacks.resend(job)
            except job_callbacks.NotFinished as exc:
                raise ConflictError(str(exc)) from None
            return Response(
                CallbackDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED
            )
        page = self.paginate_queryset(job.callbacks.all())
        return self.get_paginated_response(CallbackDeliverySerializer(page, many=True).data)

    @extend_schema(responses={200: TaskSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def tasks(self, request, pk=None):
        job = self.get_object()
        page = self.paginate_queryset(services.job_tasks(job=job))
        return self.get_paginated_response(TaskSerializer(page, many=True).data)

    @extend_schema(responses={200: OutputSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def outputs(self, request, pk=None):
        job = self.get_object()
        page = self.paginate_queryset(job.outputs.all())
        serializer = OutputSerializer(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(serializer.data)

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def output_file(self, request, pk=None, path=None):
        """One output file (routed in urls.py: its path keeps no trailing slash)."""
        job = self.get_object()
        # Only cataloged paths are served, so no user string ever becomes a file system path.
        output = Output.objects.filter(job=job, path=path).first()
        if output is None:
            raise Http404("no such output")
        file_path = JobFolder.of(job).output(output.path)
        if not file_path.is_file():
            raise Http404("the output file is gone")
        return download(file_path, file_path.name, output.media_type)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "stream", OpenApiTypes.STR, enum=[*TASK_STREAMS], description="stdout or stderr"
            ),
            OpenApiParameter(
                "offset",
                OpenApiTypes.INT,
                description="the first byte to read; X-Log-Size gives the size so far",
            ),
        ],
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    def task_log(self, request, pk=None, task=None):
        """A rule's standard output or error from `offset` (routed in urls.py): `task` is
        "<stage>:<rule>" (a task's id in WES) or the rule's id alone."""
        job = self.get_object()
        stream = request.query_params.get("stream", "stderr")
        if stream not in TASK_STREAMS:
            raise ValidationError({"stream": [f"one of {', '.join(TASK_STREAMS)}"]})
        offset = request.query_params.get("offset", "0")
        if not offset.isdigit() or len(offset) > 18:
            raise ValidationError({"offset": ["a byte offset: a whole number, 0 or more"]})
        try:
            data, size = services.job_task_log(
                job=job, task=task, stream=stream, offset=int(offset), limit=TASK_LOG_BYTES
            )
        except LookupError as exc:
            raise Http404(str(exc)) from None
        response = HttpResponse(data, content_type="text/plain; charset=utf-8")
        response["X-Log-Size"] = str(size)
        response["X-Log-Next-Offset"] = str(min(int(offset), size) + len(data))
        return response

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def package(self, request, pk=None):
        job = self.get_object()
        package = JobFolder.of(job).package
        if job.state != State.COMPLETE or not package.is_file():
            raise Http404(f"no package: the job is {job.state}")
        return download(package, f"lmweb-{job.workflow}-{job.id}.zip", "application/zip")


def download(path: Path, filename: str, content_type: str) -> HttpResponse:
    """A file under DATA_DIR as an attachment, once the caller has checked the permission:
    streamed by Django, or handed to nginx with X-Accel-Redirect (LMWEB_X_ACCEL_REDIRECT)."""
    prefix = settings.LMWEB_X_ACCEL_REDIRECT
    if not prefix:
        return FileResponse(
            path.open("rb"), as_attachment=True, filename=filename, content_type=content_type
        )
    relative = path.resolve().relative_to(settings.DATA_DIR)
    response = HttpResponse(content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["X-Accel-Redirect"] = prefix + quote(relative.as_posix())
    return response


class WorkflowViewSet(viewsets.ViewSet):
    """The workflow catalog: what can be run, with each request's JSON Schema and an example."""

    serializer_class = WorkflowSerializer
    lookup_value_regex = r"[a-z0-9][a-z0-9-]*"

    def list(self, request):
        workflows = [translators.get(name) for name in translators.names()]
        serializer = WorkflowSerializer(workflows, many=True, context={"request": request})
        return Response(serializer.data)

    @extend_schema(responses=WorkflowSerializer)
    def retrieve(self, request, pk=None):
        try:
            workflow = translators.get(pk)
        except translators.UnknownWorkflow:
            raise Http404("no such workflow") from None
        return Response(WorkflowSerializer(workflow, context={"request": request}).data)


class ServiceInfoView(APIView):
    """What this service is and how busy it is."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        versions = tool_versions()
        return Response(
            {
                "name": "lmweb",
                "versions": {
                    "lmweb": lmweb.__version__,
                    "django": django.get_version(),
                    "celery": celery.__version__,
                    "python": platform.python_version(),
                    "lmpy": versions.get("specify-lmpy", "unknown"),
                    "cctools": versions.get("cctools", "unknown"),
                },
                "workflows": translators.names(),
                "job_states": services.job_counts(),
                "queue_depth": ops.queue_depth(),
                "workers": ops.catalog_summary(),
                "links": {
                    "jobs": reverse("job-list", request=request),
                    "datasets": reverse("dataset-list", request=request),
                    "workflows": reverse("workflow-list", request=request),
                    "docs": request.build_absolute_uri("/api/docs/"),
                },
            }
        )


class LiveLogView(APIView):
    """Where a running rule's guard sends its output (jobs/sandbox/guard.py, LogShipper): the
    job's own token (`Authorization: LiveLog <token>`), not a user's; the raw bytes, appended
    at `offset`. Not part of the public API."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(exclude=True)
    def post(self, request, job_id, stage, rule):
        kind, _, token = request.headers.get("Authorization", "").partition(" ")
        offset = request.query_params.get("offset", "")
        if kind != "LiveLog" or not offset.isdigit() or len(offset) > 18:
            return HttpResponse(status=400)
        try:
            size = services.job_live_log_append(
                job_id=job_id,
                token=token,
                stage=stage,
                rule_id=rule,
                stream=request.query_params.get("stream", ""),
                offset=int(offset),
                data=request.body,
            )
        except services.LiveLogRefused as exc:
            response = HttpResponse(str(exc), status=exc.status, content_type="text/plain")
            if exc.size is not None:
                response["X-Log-Size"] = str(exc.size)
            return response
        response = HttpResponse(status=204)
        response["X-Log-Size"] = str(size)
        return response


class CallbackSecretView(APIView):
    """Your key for the signature of your completion callbacks: GET shows it (made on first
    use), POST replaces it. A receiver checks `X-Lmweb-Signature` (`sha256=` and the hex
    HMAC-SHA256, with this key, of `X-Lmweb-Timestamp`, a dot, and the body)."""

    def _answer(self, secret: str, code=status.HTTP_200_OK) -> Response:
        return Response(
            {
                "secret": secret,
                "header": "X-Lmweb-Signature",
                "signed": "<X-Lmweb-Timestamp>.<body>",
                "algorithm": "HMAC-SHA256, hex, prefixed sha256=",
            },
            status=code,
        )

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return self._answer(job_callbacks.secret_for(request.user))

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        return self._answer(job_callbacks.rotate_secret(request.user), status.HTTP_201_CREATED)


@extend_schema(exclude=True)
def healthz(request):
    """For load balancers and operators: no credentials, no details beyond what failed."""
    failures = ops.health_failures()
    status_code = 503 if failures else 200
    return JsonResponse({"ok": not failures, "failed": failures}, status=status_code)


@extend_schema(exclude=True)
def readme(request):
    """The README, for people and for WES's auth_instructions_url ("Using the API" says how to
    get a token): no credentials, as it is public anyway."""
    path = settings.BASE_DIR / "README.md"
    if not path.is_file():
        raise Http404("no README in this installation")
    return FileResponse(path.open("rb"), content_type="text/markdown; charset=utf-8")


class MetricsView(APIView):
    """Prometheus metrics, for staff tokens (a scraper sends `Authorization: Token ...`)."""

    permission_classes = [IsAdminUser]

    @extend_schema(exclude=True)
    def get(self, request):
        return HttpResponse(
            metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8"
        )
