"""Prometheus metrics, computed from the database and the catalog when scraped."""

from django.db.models import Count, DurationField, ExpressionWrapper, F, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from . import ops
from .models import Job, State


class ServiceCollector:
    def collect(self):
        jobs = GaugeMetricFamily(
            "lmweb_jobs", "Jobs by state and workflow.", labels=["state", "workflow"]
        )
        for row in Job.objects.order_by().values("state", "workflow").annotate(n=Count("id")):
            jobs.add_metric([row["state"], row["workflow"]], row["n"])
        yield jobs

        durations = SummaryMetricFamily(
            "lmweb_job_duration_seconds",
            "Start to finish of COMPLETE jobs.",
            labels=["workflow"],
        )
        took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        finished = Job.objects.filter(state=State.COMPLETE, started_at__isnull=False)
        for row in finished.order_by().values("workflow").annotate(n=Count("id"), total=Sum(took)):
            seconds = row["total"].total_seconds() if row["total"] else 0.0
            durations.add_metric([row["workflow"]], count_value=row["n"], sum_value=seconds)
        yield durations

        rules = CounterMetricFamily(
            "lmweb_rules_done", "Rules run to completion.", labels=["workflow"]
        )
        for row in Job.objects.order_by().values("workflow").annotate(n=Sum("rules_done")):
            rules.add_metric([row["workflow"]], row["n"] or 0)
        yield rules

        summary = ops.catalog_summary()
        for key, text in (
            ("managers", "Makeflow managers of this deployment seen by the catalog."),
            ("workers", "Work Queue workers connected to them (as last reported)."),
            ("cores", "Cores of those workers (as last reported)."),
            ("tasks_waiting", "Tasks waiting in those managers."),
        ):
            yield GaugeMetricFamily(f"lmweb_workqueue_{key}", text, value=summary.get(key, 0))
        yield GaugeMetricFamily(
            "lmweb_catalog_up",
            "1 when the catalog server answers.",
            value=int(summary["reachable"]),
        )
        depth = ops.queue_depth()
        yield GaugeMetricFamily(
            "lmweb_queue_depth", "Job messages waiting for a controller.", value=depth or 0
        )


def render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector())
    return generate_latest(registry)
