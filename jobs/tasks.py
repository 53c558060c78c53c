"""Celery tasks: an id in, a service call, nothing else."""

import os

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings

from . import callbacks, dispatch, services
from .execution import controller, handback
from .limits import OverLimit


# max_retries=None: a job over its owner's running limit waits as long as the owner's other
# jobs run (each is bounded by LMWEB_JOB_MAX_SECONDS); it stays QUEUED meanwhile.
@shared_task(bind=True, name=dispatch.RUN_JOB, acks_late=True, ignore_result=True, max_retries=None)
def run_job(self, job_id: str) -> None:
    try:
        controller.job_run(job_id=job_id)
    except OverLimit as exc:
        # A new message, then this one is acknowledged: the job is never without one.
        raise self.retry(countdown=settings.LMWEB_USER_RETRY_SECONDS, exc=exc) from None


@shared_task(name=dispatch.RECOVER, ignore_result=True)
def recover() -> dict[str, int]:
    return services.jobs_recover()


@shared_task(name=dispatch.DELIVER_CALLBACK, acks_late=True, ignore_result=True)
def deliver_callback(delivery_id: str) -> str:
    return callbacks.deliver(delivery_id)


@shared_task(name=dispatch.SWEEP_CALLBACKS, ignore_result=True)
def sweep_callbacks() -> dict[str, int]:
    return callbacks.sweep()


@worker_shutting_down.connect
def _hand_back_running_jobs(**kwargs) -> None:
    handback.request_handback(os.getpid())


@worker_ready.connect
def _forget_old_hand_back(**kwargs) -> None:
    handback.clear_handback(os.getpid())
