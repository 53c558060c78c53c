"""What operators ask of the running service: is it healthy, what do the workers look like."""

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from django.conf import settings
from django.db import connection

from lmweb.celery import app

from . import dispatch
from .cctools import catalog, projects
from .models import Job, State

log = logging.getLogger(__name__)


def _database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _broker() -> bool:
    return dispatch.broker_reachable()


def _catalog() -> bool:
    try:
        catalog.query_catalog(settings.LMWEB_CATALOG, timeout=2.0)
        return True
    except Exception:
        return False


def _data_dir() -> bool:
    folder = Path(settings.DATA_DIR)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


CHECKS = {"database": _database, "broker": _broker, "catalog": _catalog, "data_dir": _data_dir}


def health_failures() -> list[str]:
    """The names of the parts that do not answer (empty when all is well)."""
    failed = [name for name, check in CHECKS.items() if not check()]
    if failed:
        log.warning("health: failing %s", ", ".join(failed))
    return failed


def catalog_summary() -> dict:
    """This deployment's managers as the catalog last heard of them (figures up to 60 s old)."""
    try:
        records = catalog.query_catalog(settings.LMWEB_CATALOG, timeout=2.0)
    except Exception:
        return {"reachable": False}
    prefix = projects.deployment_prefix(settings.LMWEB_DEPLOYMENT)
    managers = [
        r
        for r in records
        if r.get("type") in catalog.MANAGER_TYPES and str(r.get("project", "")).startswith(prefix)
    ]

    def total(key: str) -> int:
        return sum(int(r.get(key, 0) or 0) for r in managers)

    return {
        "reachable": True,
        "managers": len(managers),
        "workers": total("workers_connected"),
        "cores": total("cores_total"),
        "tasks_waiting": total("tasks_waiting"),
        "tasks_running": total("tasks_running"),
    }


def queue_depth() -> int | None:
    """Job messages waiting for a controller; None when the broker does not answer."""
    return dispatch.queue_length()


def job_waiting(job) -> dict | None:
    """Why a job is not making progress yet, in words a user can act on; None if it is."""
    if job.state == State.QUEUED:
        ahead = Job.objects.filter(state=State.QUEUED, submitted_at__lt=job.submitted_at).count()
        busy = Job.objects.filter(state__in=[State.INITIALIZING, State.RUNNING]).count()
        reason = (
            f"{ahead} job(s) ahead of it in the queue"
            if ahead
            else f"waiting for a free controller ({busy} job(s) running)"
        )
        return {"position": ahead + 1, "reason": reason}
    if job.state == State.RUNNING and job.rules_waiting and not job.rules_running:
        project = projects.project_name(settings.LMWEB_DEPLOYMENT, str(job.id))
        try:
            records = catalog.managers(settings.LMWEB_CATALOG, project, timeout=2.0)
        except Exception:
            return {"position": None, "reason": "the catalog server does not answer"}
        if records and not any(int(r.get("workers_connected", 0) or 0) for r in records):
            return {"position": None, "reason": "no worker connected to this job yet"}
        return {"position": None, "reason": "rules wait for a free worker"}
    return None


# The direct pools' shares (workers held, target) per manager project: one Redis key per pool
# host, refreshed every few seconds and gone soon after its pool stops; the admin shows them
# beside each running job. Redis is never the source of truth: a lost key only blanks a column.
SHARES_SECONDS = 15
_shares_cache: dict = {"at": 0.0, "shares": {}}


def _shares_key(host: str) -> str:
    return f"lmweb:{settings.LMWEB_DEPLOYMENT}:worker-shares:{host}"


def worker_shares_record(shares: Mapping[str, tuple[int, int]], *, host: str) -> None:
    """Store one pool host's shares (a warning, not an error, when Redis is away)."""
    try:
        with app.connection_for_write() as broker:
            broker.default_channel.client.set(
                _shares_key(host), json.dumps(dict(shares)), ex=SHARES_SECONDS
            )
    except Exception as exc:
        log.warning("worker shares: not stored: %s", exc)


def worker_shares() -> dict[str, tuple[int, int]]:
    """(workers held, target) per manager project, summed over the pool hosts; read at most
    once a second (the admin's job list asks once per row)."""
    now = time.monotonic()
    if now - _shares_cache["at"] < 1.0:
        return _shares_cache["shares"]
    shares: dict[str, tuple[int, int]] = {}
    try:
        with app.connection_for_read() as broker:
            client = broker.default_channel.client
            keys = list(client.scan_iter(match=_shares_key("*"), count=100))
            values = client.mget(keys) if keys else []
    except Exception as exc:
        log.warning("worker shares: not read: %s", exc)
        values = []
    for value in values:
        try:
            found = json.loads(value or b"{}")
            for project, (held, target) in found.items():
                before = shares.get(project, (0, 0))
                shares[project] = (before[0] + int(held), before[1] + int(target))
        except (ValueError, TypeError, AttributeError):
            continue
    _shares_cache.update(at=now, shares=shares)
    return shares


def job_share(job: Job) -> tuple[int, int] | None:
    """(workers held, target) of a running job's makeflow, or None when no pool reports it."""
    if job.state not in (State.INITIALIZING, State.RUNNING) or not job.manager_project:
        return None
    return worker_shares().get(job.manager_project)
