"""GA4GH WES 1.1.0 at /ga4gh/wes/v1/: thin views over the same services, jobs and rules as
/api/v1/ (a run is a job, a task is a makeflow rule), with the same authentication, ownership,
throttles and 404s; errors are WES ErrorResponse bodies."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import parsers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

import lmweb
import translators

from ... import services
from ...models import Job
from ...versions import tool_versions
from ..errors import exception_handler as native_exception_handler
from ..errors import one_message
from ..renderers import JSONRenderer
from ..throttles import ScopedRateThrottle, UserRateThrottle
from . import documents
from .documents import BadRequest


def exception_handler(exc, context):
    """The native API's answer to every error, in WES's ErrorResponse shape."""
    if isinstance(exc, BadRequest):
        return Response({"msg": str(exc), "status_code": 400}, status=400)
    response = native_exception_handler(exc, context)
    if response is None:
        return None
    message = one_message(response.data, documents.field_name)
    response.data = {"msg": message, "status_code": response.status_code}
    return response


class WesView(APIView):
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self):
        return exception_handler

    @staticmethod
    def engine_version() -> str:
        return tool_versions().get("cctools", "unknown")

    def get_job(self, run_id: str) -> Job:
        """The caller's job (staff: anyone's), else 404, as /api/v1/jobs/<id>/ answers."""
        job = services.visible_job(self.request.user, run_id)
        if job is None:
            raise Http404("no such run")
        return job

    def workflow_url(self, name: str) -> str:
        return reverse("workflow-detail", kwargs={"pk": name}, request=self.request)


@extend_schema(exclude=True)
class ServiceInfoView(WesView):
    """Open to all, as GA4GH service-info is: a client learns here how to authenticate."""

    permission_classes = [AllowAny]

    def get(self, request):
        readme = settings.LMWEB_WES_AUTH_INSTRUCTIONS_URL or reverse("readme", request=request)
        return Response(
            documents.service_info(
                workflows={name: self.workflow_url(name) for name in translators.names()},
                lmweb_version=lmweb.__version__,
                engine_version=self.engine_version(),
                state_counts=services.job_counts(),
                protocols=[request.scheme],
                auth_instructions_url=readme,
                service_id=settings.LMWEB_WES_SERVICE_ID,
                organization={
                    "name": settings.LMWEB_WES_ORGANIZATION,
                    "url": settings.LMWEB_WES_ORGANIZATION_URL,
                },
            )
        )


@extend_schema(exclude=True)
class RunsView(WesView):
    parser_classes = [parsers.MultiPartParser, parsers.FormParser, parsers.JSONParser]

    def get_throttles(self):
        if self.request.method == "POST":
            self.throttle_scope = "submit"
            return [UserRateThrottle(), ScopedRateThrottle()]
        return super().get_throttles()

    def get(self, request):
        """Newest first, paged over the runs as they were when the first page was asked for:
        the token holds that moment and the last run given."""
        size = documents.page_size(request.query_params.get("page_size"))
        token = request.query_params.get("page_token")
        runs = services.visible_jobs(request.user).order_by("-submitted_at", "-id")
        if token:
            position = documents.read_token(token)
            try:
                snapshot = datetime.fromisoformat(position["t"])
                last_time = datetime.fromisoformat(position["s"])
                last_id = uuid.UUID(position["i"])
            except (KeyError, TypeError, ValueError):
                raise BadRequest("page_token: not a token this service gave") from None
            runs = (
                runs.filter(submitted_at__lte=snapshot)
                .exclude(submitted_at__gt=last_time)
                .exclude(submitted_at=last_time, id__gte=last_id)
            )
        else:
            snapshot = timezone.now()
            runs = runs.filter(submitted_at__lte=snapshot)
        page = list(
            runs.only("id", "state", "started_at", "finished_at", "tags", "submitted_at")[
                : size + 1
            ]
        )
        next_token = ""
        if len(page) > size:
            page = page[:size]
            last = page[-1]
            next_token = documents.make_token(
                {"t": snapshot.isoformat(), "s": last.submitted_at.isoformat(), "i": str(last.id)}
            )
        return Response(
            {
                "runs": [documents.run_summary(job) for job in page],
                "next_page_token": next_token,
            }
        )

    def post(self, request):
        files = request.FILES
        stray = sorted(set(files) - {"workflow_attachment"})
        if stray:
            raise BadRequest(f"{stray[0]}: files go in workflow_attachment parts")
        fields = {key: request.data.get(key) for key in request.data if key not in files}
        payload = documents.run_request(fields, translators.names(), [self.engine_version()])
        attachments = files.getlist("workflow_attachment")
        if attachments:
            job = services.job_submit_with_files(
                owner=request.user, payload=payload, files=attachments
            )
        else:
            job, _ = services.job_submit(owner=request.user, payload=payload)
        return Response({"run_id": str(job.id)})


@extend_schema(exclude=True)
class RunView(WesView):
    def get(self, request, run_id):
        job = self.get_job(run_id)
        stages = services.job_stages(job=job)
        return Response(
            documents.run_log(
                job,
                workflow_url=self.workflow_url(job.workflow),
                engine_version=self.engine_version(),
                stages=stages,
                outputs=self.outputs(job),
                task_logs_url=reverse("wes-tasks", kwargs={"run_id": job.id}, request=request),
            )
        )

    def outputs(self, job: Job) -> dict:
        """A finished job's files, each with its URL and checksum, and its package."""
        if job.state != "COMPLETE":
            return {}
        files = {
            output.path: {
                "url": reverse(
                    "job-output-file",
                    kwargs={"pk": job.id, "path": output.path},
                    request=self.request,
                ),
                "sha256": output.sha256,
                "size": output.size,
                "media_type": output.media_type,
                "role": output.role,
            }
            for output in job.outputs.all()
        }
        package = reverse("job-package", kwargs={"pk": job.id}, request=self.request)
        return {"package": package, "files": files}


@extend_schema(exclude=True)
class RunStatusView(WesView):
    def get(self, request, run_id):
        return Response(documents.run_status(self.get_job(run_id)))


@extend_schema(exclude=True)
class RunCancelView(WesView):
    def post(self, request, run_id):
        job = services.job_cancel(job=self.get_job(run_id))
        return Response({"run_id": str(job.id)})


class _TaskViews(WesView):
    def log_url(self, job: Job):
        def url(task: str, stream: str) -> str:
            base = reverse(
                "job-task-log", kwargs={"pk": job.id, "task": task}, request=self.request
            )
            return f"{base}?stream={stream}"

        return url


@extend_schema(exclude=True)
class TasksView(_TaskViews):
    def get(self, request, run_id):
        job = self.get_job(run_id)
        size = documents.page_size(request.query_params.get("page_size"))
        token = request.query_params.get("page_token")
        start = 0
        if token:
            position = documents.read_token(token)
            start = position.get("o")
            if position.get("r") != str(job.id) or not isinstance(start, int) or start < 0:
                raise BadRequest("page_token: not a token of this run's tasks")
        tasks = services.job_tasks(job=job)
        page = tasks[start : start + size]
        following = start + len(page)
        next_token = (
            documents.make_token({"r": str(job.id), "o": following})
            if following < len(tasks)
            else ""
        )
        url = self.log_url(job)
        return Response(
            {
                "task_logs": [documents.task_log(task, url) for task in page],
                "next_page_token": next_token,
            }
        )


@extend_schema(exclude=True)
class TaskView(_TaskViews):
    def get(self, request, run_id, task_id):
        job = self.get_job(run_id)
        for task in services.job_tasks(job=job):
            if documents.task_id(task) == task_id:
                return Response(documents.task_log(task, self.log_url(job)))
        raise Http404("no such task")
