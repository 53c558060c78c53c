"""Supply Work Queue workers to every job's makeflow on this host (jobs.cctools.pool.serve).

Two sources side by side: work_queue_factory (workers that find managers through the catalog,
the standard way, 20 s to 2 min late) and a direct pool that reads the catalog itself every
second and points single-shot workers straight at each new manager (under a second).
The direct pool serves only the managers the database knows as running jobs, shares its
workers fairly between their owners (then between each owner's jobs), and stores each job's
share (workers held, target) in Redis for the admin.
"""

import logging
import os
import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from jobs import ops
from jobs.cctools import pool, projects
from jobs.models import Job, State

log = logging.getLogger(__name__)


def running_managers() -> dict[tuple[str, int], str]:
    """(project, port) of every makeflow that this deployment's controllers run now, and the
    owner of its job (the pool's unit of fairness).

    Anyone can advertise a manager to the catalog with one UDP datagram; the controller
    records each makeflow it starts on the job's row. Nothing is trusted while the database
    does not answer (the pool then starts no worker).
    """
    try:
        return {
            (project, port): f"user {owner}"
            for project, port, owner in Job.objects.filter(
                state__in=[State.INITIALIZING, State.RUNNING], manager_port__isnull=False
            ).values_list("manager_project", "manager_port", "owner_id")
        }
    except DatabaseError as exc:
        log.warning("direct pool: no running jobs from the database: %s", exc)
        connection.close()  # the next step connects again
        return {}


def rule_environment() -> dict[str, str]:
    """What every worker of this host hands its tasks: the rules' guard sandboxes each one
    (bubblewrap, as settings.LMWEB_RULE_SANDBOX says) and hides these paths from it."""
    return {
        "LMWEB_RULE_SANDBOX": settings.LMWEB_RULE_SANDBOX,
        "LMWEB_RULE_HIDE": os.pathsep.join(settings.LMWEB_RULE_HIDE),
    }


class Command(BaseCommand):
    help = "Run Work Queue workers for this deployment's jobs (factory and direct pool)."

    def add_arguments(self, parser):
        parser.add_argument("--max-workers", type=int, default=settings.LMWEB_MAX_WORKERS)
        parser.add_argument("--cores", type=int, default=settings.LMWEB_WORKER_CORES)
        parser.add_argument("--no-factory", action="store_true", help="direct pool only")
        parser.add_argument("--no-direct", action="store_true", help="factory only")
        # How often the direct pool reads the catalog: a new job waits half of it on average.
        parser.add_argument("--interval", type=float, default=0.25)

    def handle(self, *args, max_workers, cores, no_factory, no_direct, interval, **options):
        host = f"{socket.gethostname()}:{os.getpid()}"
        said = pool.say_changes(self.stdout.write)

        def report(shares: dict[str, tuple[int, int]]) -> None:
            said(shares)
            ops.worker_shares_record(shares, host=host)

        try:
            pool.serve(
                catalog=settings.LMWEB_CATALOG,
                project_regex=projects.project_regex(settings.LMWEB_DEPLOYMENT),
                password_file=settings.LMWEB_WQ_PASSWORD_FILE,
                scratch_dir=settings.LMWEB_SCRATCH_DIR,
                max_workers=max_workers,
                cores=cores,
                idle_timeout=settings.LMWEB_WORKER_IDLE_SECONDS,
                interval=interval,
                factory=not no_factory,
                direct=not no_direct,
                task_env=rule_environment(),
                trust=running_managers,
                report=report,
                say=self.stdout.write,
            )
        except pool.PoolError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            ops.worker_shares_record({}, host=host)
