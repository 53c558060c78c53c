"""Celery tasks: an id in, a service call, nothing else."""

from celery import shared_task


@shared_task(name="jobs.run_job", acks_late=True, ignore_result=True)
def run_job(job_id: str) -> None:
    from .controller import job_run

    job_run(job_id=job_id)


@shared_task(name="jobs.recover", ignore_result=True)
def recover() -> dict[str, int]:
    from .services import jobs_recover

    return jobs_recover()
