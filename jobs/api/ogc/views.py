"""OGC API - Processes - Part 1 at /ogcapi/: the catalog as processes, jobs as OGC jobs. Thin views
over the same services as /api/v1/: the same jobs, owners, checks and throttles. The landing
page, conformance, the process list and descriptions and the `echo` process are open to all (OGC's
conformance suite runs without credentials); executing a catalog process and the jobs need a
token, as /api/v1/ does. Errors are OGC exceptions (problem details)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import parsers
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

import translators

from ... import services
from ...models import Job, Output
from ..errors import exception_handler as native_exception_handler
from ..errors import one_message
from ..renderers import JSONRenderer
from ..throttles import ScopedRateThrottle, UserRateThrottle
from . import documents
from .documents import ECHO, BadRequest

MAX_LIMIT = 1000


class NoSuchProcess(NotFound):
    default_detail = "no such process"


class NoSuchJob(NotFound):
    default_detail = "no such job"


class ResultNotReady(NotFound):
    default_detail = "the job has no results yet"


_KINDS = {
    NoSuchProcess: "no-such-process",
    NoSuchJob: "no-such-job",
    ResultNotReady: "result-not-ready",
}


def exception_handler(exc, context):
    """The native API's answer to every error, as an OGC exception."""
    if isinstance(exc, BadRequest):
        body = documents.exception("", "Bad request", 400, str(exc))
        return Response(body, status=400, content_type="application/problem+json")
    kind = next((name for cls, name in _KINDS.items() if isinstance(exc, cls)), "")
    response = native_exception_handler(exc, context)
    if response is None:
        return None
    detail = one_message(response.data, documents.field_name)
    response.data = documents.exception(
        kind, response.status_text or "Error", response.status_code, detail
    )
    response.content_type = "application/problem+json"
    return response


class OgcView(APIView):
    renderer_classes = [JSONRenderer]
    parser_classes = [parsers.JSONParser]

    def get_exception_handler(self):
        return exception_handler

    def url(self, path: str) -> str:
        return self.request.build_absolute_uri(f"/ogcapi/{path}")

    def workflow(self, process_id: str):
        try:
            return translators.get(process_id)
        except translators.UnknownWorkflow:
            raise NoSuchProcess(f"no process {process_id!r}") from None

    def get_job(self, job_id: str) -> Job:
        job = services.visible_job(self.request.user, job_id)
        if job is None:
            raise NoSuchJob(f"no job {job_id!r}")
        return job

    def status(self, job: Job) -> dict:
        native = reverse("job-detail", kwargs={"pk": job.id}, request=self.request)
        return documents.status_info(job, self.url, native)


@extend_schema(exclude=True)
class LandingView(OgcView):
    permission_classes = [AllowAny]

    def get(self, request):
        return Response(documents.landing(self.url, reverse("readme", request=request)))


@extend_schema(exclude=True)
class ConformanceView(OgcView):
    permission_classes = [AllowAny]

    def get(self, request):
        return Response({"conformsTo": documents.CONFORMANCE})


@extend_schema(exclude=True)
class ProcessesView(OgcView):
    permission_classes = [AllowAny]

    def get(self, request):
        processes = [documents.echo_summary(self.url)]
        processes += [
            documents.process_summary(translators.get(name), self.url)
            for name in translators.names()
        ]
        return Response(
            {"processes": processes, "links": [documents.link(self.url("processes"), "self")]}
        )


@extend_schema(exclude=True)
class ProcessView(OgcView):
    permission_classes = [AllowAny]

    def get(self, request, process_id):
        if process_id == ECHO:
            return Response(documents.echo_description(self.url))
        workflow = self.workflow(process_id)
        datasets = reverse("dataset-list", request=request)
        return Response(documents.process_description(workflow, self.url, datasets))


@extend_schema(exclude=True)
class ExecutionView(OgcView):
    """POST /processes/{id}/execution. A catalog process runs as a job: 201, Location and the
    job's status (every catalog process is async-execute, with or without `Prefer:
    respond-async`). `echo` answers at once with its results (sync-execute)."""

    def get_permissions(self):
        if self.kwargs.get("process_id") == ECHO:
            return [AllowAny()]
        return [IsAuthenticated()]

    def get_throttles(self):
        if self.kwargs.get("process_id") != ECHO:
            self.throttle_scope = "submit"
            return [UserRateThrottle(), ScopedRateThrottle()]
        return super().get_throttles()

    def post(self, request, process_id):
        if process_id == ECHO:
            return Response(documents.echo(request.data))
        workflow = self.workflow(process_id)
        payload = documents.execute_request(request.data, workflow)
        job, _ = services.job_submit(owner=request.user, payload=payload)
        headers = {"Location": self.url(f"jobs/{job.id}")}
        if "respond-async" in request.headers.get("Prefer", ""):
            headers["Preference-Applied"] = "respond-async"
        return Response(self.status(job), status=201, headers=headers)


@extend_schema(exclude=True)
class JobsView(OgcView):
    def get(self, request):
        try:
            limit = int(request.query_params.get("limit", 50))
            offset = int(request.query_params.get("offset", 0))
        except ValueError:
            raise BadRequest("limit and offset: whole numbers") from None
        if limit < 1 or offset < 0:
            raise BadRequest("limit: at least 1; offset: 0 or more")
        limit = min(limit, MAX_LIMIT)
        jobs = list(
            services.visible_jobs(request.user).order_by("-submitted_at", "-id")[
                offset : offset + limit + 1
            ]
        )
        links = [documents.link(self.url(f"jobs?limit={limit}&offset={offset}"), "self")]
        if len(jobs) > limit:
            jobs = jobs[:limit]
            following = self.url(f"jobs?limit={limit}&offset={offset + limit}")
            links.append(documents.link(following, "next"))
        return Response({"jobs": [self.status(job) for job in jobs], "links": links})


@extend_schema(exclude=True)
class JobView(OgcView):
    def get(self, request, job_id):
        return Response(self.status(self.get_job(job_id)))

    def delete(self, request, job_id):
        """Dismiss: a job that has not finished is canceled; a finished one is removed with its
        files. Either way its status says `dismissed`."""
        job = self.get_job(job_id)
        if job.is_finished:
            services.job_delete(job=job)
            job.state = "CANCELED"
        else:
            job = services.job_cancel(job=job)
        document = self.status(job)
        document["status"] = "dismissed"
        return Response(document)


@extend_schema(exclude=True)
class ResultsView(OgcView):
    def get(self, request, job_id):
        job = self.get_job(job_id)
        if job.state != "COMPLETE":
            if job.is_finished:
                raise ResultNotReady(f"the job ended {job.state}: it has no results")
            raise ResultNotReady(f"the job is {job.state}: its results are not ready")
        results = {
            "package": {
                "href": reverse("job-package", kwargs={"pk": job.id}, request=request),
                "type": "application/zip",
            }
        }
        report = Output.objects.filter(job=job, role="report").first()
        if report is not None:
            results["report"] = {
                "href": reverse(
                    "job-output-file", kwargs={"pk": job.id, "path": report.path}, request=request
                ),
                "type": report.media_type,
            }
        return Response(results)
