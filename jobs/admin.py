"""The operators' view: jobs, datasets and outputs, with cancel and requeue."""

from django.contrib import admin, messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.clickjacking import xframe_options_sameorigin

from . import callbacks, ops, services
from .execution.folder import GRAPH_MAX_RULES, JobFolder
from .models import CallbackDelivery, Dataset, Job, JobInput, Output
from .rules import read_stages, read_tasks

RULES_SHOWN = 200
# The report is the job's own page, made from user data: shown to operators in a sandbox where
# no script runs and nothing but its inline images and style loads.
REPORT_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _seconds(started, finished) -> str:
    if not started or not finished:
        return ""
    return f"{(finished - started).total_seconds():.1f}"


class JobInputInline(admin.TabularInline):
    model = JobInput
    extra = 0
    can_delete = False
    readonly_fields = ["name", "position", "dataset"]


class OutputInline(admin.TabularInline):
    model = Output
    extra = 0
    can_delete = False
    readonly_fields = ["path", "role", "media_type", "size", "sha256"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "workflow",
        "name",
        "owner",
        "state",
        "progress_bar",
        "share",
        "submitted_at",
        "started_at",
        "finished_at",
    ]
    list_filter = ["state", "workflow", "submitted_at", "finished_at"]
    search_fields = ["id", "name", "owner__username", "error_message"]
    date_hierarchy = "submitted_at"
    list_select_related = ["owner"]
    readonly_fields = [f.name for f in Job._meta.fields] + [
        "progress_bar",
        "share",
        "rules",
        "graph",
        "report",
        "pictures",
        "package",
    ]
    inlines = [JobInputInline, OutputInline]
    actions = ["cancel_jobs", "requeue_jobs"]

    def has_add_permission(self, request):
        return False  # jobs are submitted through the API, where they are validated

    @admin.display(description="progress")
    def progress_bar(self, job: Job):
        percent = 100 * job.rules_done // job.rules_total if job.rules_total else 0
        return format_html(
            '<progress value="{}" max="100" title="{} of {} rules">{}%</progress> {}/{}',
            percent,
            job.rules_done,
            job.rules_total,
            percent,
            job.rules_done,
            job.rules_total,
        )

    @admin.display(description="share")
    def share(self, job: Job) -> str:
        """Workers the job's makeflow holds / its fair share of the worker pools, as the pools
        last reported them (blank when no pool serves it)."""
        found = ops.job_share(job)
        if found is None:
            return ""
        held, target = found
        return format_html('<span title="workers held / fair share">{} / {}</span>', held, target)

    def get_urls(self):
        graph = path(
            "<uuid:pk>/graph/<slug:stage>.svg",
            self.admin_site.admin_view(self.graph_svg),
            name="jobs_job_graph",
        )
        report = path(
            "<uuid:pk>/report.html",
            self.admin_site.admin_view(xframe_options_sameorigin(self.report_html)),
            name="jobs_job_report",
        )
        return [graph, report, *super().get_urls()]

    def report_html(self, request, pk):
        job = get_object_or_404(Job, pk=pk)
        output = job.outputs.filter(role="report").first()
        if output is None:
            raise Http404("this job has no report")
        source = JobFolder.of(job).output(output.path)
        if not source.is_file():
            raise Http404("the report is gone")
        response = FileResponse(source.open("rb"), content_type="text/html; charset=utf-8")
        response["Content-Security-Policy"] = REPORT_POLICY
        return response

    @admin.display(description="report")
    def report(self, job: Job):
        if not job.outputs.filter(role="report").exists():
            return "-"
        url = reverse("admin:jobs_job_report", args=[job.pk])
        return format_html(
            '<p><a href="{}" target="_blank" rel="noopener">open the report</a> '
            "(also outputs/report.html in the package)</p>"
            '<iframe src="{}" sandbox="" title="report" '
            'style="width:100%;height:40em;border:1px solid #ccc"></iframe>',
            url,
            url,
        )

    def graph_svg(self, request, pk, stage):
        job = get_object_or_404(Job, pk=pk)
        if stage not in read_stages(job)["started"]:
            raise Http404("no such stage")
        # Drawn when the stage was written (a page view starts no process).
        graph = JobFolder.of(job).graph(stage)
        if not graph.is_file():
            raise Http404("the graph could not be drawn")
        return HttpResponse(graph.read_bytes(), content_type="image/svg+xml")

    @admin.display(description="rules")
    def rules(self, job: Job):
        tasks = read_tasks(job)
        if not tasks:
            return "-"
        shown = tasks[:RULES_SHOWN]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    t["stage"],
                    t["rule"],
                    t["state"],
                    "" if t["exit_code"] is None else t["exit_code"],
                    t["attempts"],
                    t["host"],
                    _seconds(t["started_at"], t["finished_at"]),
                    t["command"][:160],
                )
                for t in shown
            ),
        )
        more = len(tasks) - len(shown)
        return format_html(
            '<table class="lmweb-rules"><thead><tr><th>stage</th><th>rule</th><th>state</th>'
            "<th>exit</th><th>attempts</th><th>host</th><th>seconds</th><th>command</th></tr>"
            "</thead><tbody>{}</tbody></table>{}",
            rows,
            f"and {more} more (GET /api/v1/jobs/{job.pk}/tasks/)" if more > 0 else "",
        )

    @admin.display(description="workflow graph")
    def graph(self, job: Job):
        stages = read_stages(job)["started"]
        if not stages:
            return "-"
        if job.rules_total > GRAPH_MAX_RULES:
            return f"{job.rules_total} rules: too many to draw"
        return format_html_join(
            "",
            '<figure style="margin:0 0 1em 0"><img src="{}" alt="{}" style="max-width:100%">'
            "<figcaption>stage {}</figcaption></figure>",
            (
                (reverse("admin:jobs_job_graph", args=[job.pk, stage]), stage, stage)
                for stage in stages
            ),
        )

    @admin.display(description="pictures")
    def pictures(self, job: Job):
        # The report's figures are shown in the report.
        images = (
            job.outputs.filter(media_type__startswith="image/")
            .exclude(media_type="image/tiff")
            .exclude(role="figures")
        )
        if not images:
            return "-"
        return format_html_join(
            "",
            '<figure style="display:inline-block;margin:0 1em 1em 0">'
            '<img src="{}" alt="{}" style="max-width:480px;border:1px solid #ccc">'
            "<figcaption>{}</figcaption></figure>",
            (
                (reverse("job-output-file", kwargs={"pk": job.pk, "path": o.path}), o.path, o.path)
                for o in images
            ),
        )

    @admin.display(description="package")
    def package(self, job: Job):
        if job.state != "COMPLETE":
            return "-"
        return format_html(
            '<a href="{}">download the package</a>', reverse("job-package", args=[job.pk])
        )

    @admin.action(description="Cancel the selected jobs")
    def cancel_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_cancel, "canceled")

    @admin.action(description="Requeue the selected jobs")
    def requeue_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_requeue, "requeued")

    def delete_model(self, request, obj):
        services.job_delete(job=obj)

    def delete_queryset(self, request, queryset):
        self._apply(request, queryset, services.job_delete, "deleted")

    def _apply(self, request, queryset, service, verb: str) -> None:
        done, refused = 0, []
        for job in queryset:
            try:
                service(job=job)
                done += 1
            except services.Conflict as exc:
                refused.append(f"{job.id}: {exc}")
        if done:
            self.message_user(request, f"{done} job(s) {verb}.", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner", "format", "size", "created"]
    list_filter = ["format", "created"]
    search_fields = ["id", "name", "original_name", "owner__username", "sha256"]
    readonly_fields = ["id", "path", "size", "sha256", "format", "original_name", "created"]

    def has_add_permission(self, request):
        return False  # uploads go through the API, which stores and checks the file

    def delete_model(self, request, obj):
        services.dataset_delete(dataset=obj)

    def delete_queryset(self, request, queryset):
        for dataset in queryset:
            try:
                services.dataset_delete(dataset=dataset)
            except services.Conflict as exc:
                self.message_user(request, f"{dataset.id}: {exc}", messages.WARNING)


@admin.register(Output)
class OutputAdmin(admin.ModelAdmin):
    list_display = ["path", "job", "role", "media_type", "size"]
    list_filter = ["role", "media_type"]
    search_fields = ["path", "job__id", "sha256"]
    readonly_fields = ["job", "path", "role", "media_type", "size", "sha256"]

    def has_add_permission(self, request):
        return False


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(admin.ModelAdmin):
    """The delivery log of completion callbacks: each POST's fate, and sending one again."""

    list_display = [
        "created", "job", "reason", "job_state", "url", "status", "attempts",
        "last_status_code", "delivered_at",
    ]  # fmt: skip
    list_filter = ["status", "reason", "created"]
    search_fields = ["job__id", "url", "job__owner__username"]
    readonly_fields = [field.name for field in CallbackDelivery._meta.fields]
    actions = ["send_again"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Send the selected callbacks again")
    def send_again(self, request, queryset):
        sent = 0
        for delivery in queryset.select_related("job"):
            try:
                callbacks.resend(delivery.job)
                sent += 1
            except callbacks.NotFinished as exc:
                self.message_user(request, f"{delivery.job_id}: {exc}", messages.WARNING)
        if sent:
            self.message_user(request, f"{sent} callback(s) sent again.", messages.SUCCESS)
