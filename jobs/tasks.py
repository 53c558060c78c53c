"""Celery tasks: an id in, a service call, nothing else."""

import os

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down


@shared_task(name="jobs.run_job", acks_late=True, ignore_result=True)
def run_job(job_id: str) -> None:
    from .controller import job_run

    job_run(job_id=job_id)


@shared_task(name="jobs.recover", ignore_result=True)
def recover() -> dict[str, int]:
    from .services import jobs_recover

    return jobs_recover()


@worker_shutting_down.connect
def _hand_back_running_jobs(**kwargs) -> None:
    from .controller import request_handback

    request_handback(os.getpid())


@worker_ready.connect
def _forget_old_hand_back(**kwargs) -> None:
    from .controller import clear_handback

    clear_handback(os.getpid())
