"""Publishing work to the controllers, by task name: no sender imports the tasks it sends."""

import logging
import time

from django.conf import settings

from lmweb.celery import app

log = logging.getLogger(__name__)

RUN_JOB = "jobs.run_job"
RECOVER = "jobs.recover"
DELIVER_CALLBACK = "jobs.deliver_callback"
SWEEP_CALLBACKS = "jobs.sweep_callbacks"
# The controllers' queue (`celery worker -Q lmweb-jobs`); every other task goes to the default
# queue. CELERY_TASK_ROUTES names it too, for the messages Celery itself sends again (retries).
JOB_QUEUE = "lmweb-jobs"


def send_callback(delivery_id, countdown: float = 0) -> None:
    """Publish one callback delivery (to the housekeeper's default queue)."""
    app.send_task(
        DELIVER_CALLBACK, args=[str(delivery_id)], countdown=max(0.0, countdown), retry=True
    )


def send_run_job(job_id) -> None:
    """Publish one job's message; raises if the broker cannot be reached (retried briefly,
    per CELERY_TASK_PUBLISH_RETRY_POLICY)."""
    app.send_task(RUN_JOB, args=[str(job_id)], queue=JOB_QUEUE, retry=True)


def queue_length(queue: str = JOB_QUEUE) -> int | None:
    """Messages waiting in `queue`; None when the broker does not answer."""
    try:
        with app.connection_for_read() as broker:
            return int(broker.default_channel.client.llen(queue))
    except Exception:
        return None


def broker_reachable() -> bool:
    try:
        with app.connection_for_read() as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


def messages_in_queue(queue: str = JOB_QUEUE) -> bytes | None:
    """Every message waiting in or taken from `queue` (raw bytes), or None if Redis is away."""
    try:
        with app.connection_for_read() as connection:
            client = connection.default_channel.client
            # Kombu keeps one list per priority step, and delivered-but-unacknowledged
            # messages in the "unacked" hash until the task acknowledges them.
            keys = [queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))]
            waiting = [item for key in keys for item in client.lrange(key, 0, -1)]
            # A message taken by a worker that then died stays in "unacked" until Redis's
            # visibility timeout (longer than the longest job): count only recent deliveries.
            recent = client.zrangebyscore(
                "unacked_index", time.time() - settings.LMWEB_STALE_SECONDS, "+inf"
            )
            taken = [item for item in client.hmget("unacked", recent) if item] if recent else []
    except Exception:
        log.warning("recovery: cannot read the broker's queue %s; not resending", queue)
        return None
    return b"\n".join(waiting + taken)
