"""Fair limits per user: jobs waiting, jobs running at once, and the work a request may ask for."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from .models import Job, State
from .validation import RequestInvalid

# Jobs that hold a controller (and a makeflow) for their owner.
ACTIVE_STATES = (State.INITIALIZING, State.RUNNING, State.CANCELING)
# Clients told to come back after this long when their queue is full (a job takes minutes).
QUEUE_RETRY_AFTER = 60


class OverLimit(Exception):
    """A per-user limit is reached; try again after `retry_after` seconds (HTTP 429)."""

    def __init__(self, message: str, *, limit: str, maximum: int, retry_after: int):
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum
        self.retry_after = retry_after


def lock_user(user_id) -> None:
    """Serialize one user's submissions and claims (SELECT ... FOR UPDATE on the user's row, in
    the caller's transaction): two of them counting at once could each see room for one more."""
    list(get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk"))


def queued_check(*, owner: AbstractBaseUser) -> None:
    """Refuse another job while the owner already has LMWEB_USER_MAX_QUEUED waiting.
    Call inside the transaction that stores the job."""
    lock_user(owner.pk)
    maximum = settings.LMWEB_USER_MAX_QUEUED
    queued = Job.objects.filter(owner=owner, state=State.QUEUED).count()
    if queued >= maximum:
        raise OverLimit(
            f"you have {queued} jobs queued, the most allowed (LMWEB_USER_MAX_QUEUED={maximum});"
            " submit again when some have started",
            limit="queued_jobs",
            maximum=maximum,
            retry_after=QUEUE_RETRY_AFTER,
        )


def running_check(*, owner_id) -> None:
    """Refuse to start another of the owner's jobs while LMWEB_USER_MAX_RUNNING of them run.
    Call inside the transaction that claims the job."""
    lock_user(owner_id)
    maximum = settings.LMWEB_USER_MAX_RUNNING
    running = Job.objects.filter(owner_id=owner_id, state__in=ACTIVE_STATES).count()
    if running >= maximum:
        raise OverLimit(
            f"the owner has {running} jobs running (LMWEB_USER_MAX_RUNNING={maximum})",
            limit="running_jobs",
            maximum=maximum,
            retry_after=settings.LMWEB_USER_RETRY_SECONDS,
        )


def work_check(*, owner: AbstractBaseUser, workflow: str, request: dict) -> None:
    """Large selftests are for staff: tasks x seconds over LMWEB_SELFTEST_MAX_WORK is a 400."""
    if workflow != "selftest" or owner.is_staff:
        return
    params = request["params"]
    work = params["tasks"] * params["seconds"]
    maximum = settings.LMWEB_SELFTEST_MAX_WORK
    if work > maximum:
        raise RequestInvalid(
            {
                "params.tasks": [
                    f"tasks x seconds = {params['tasks']} x {params['seconds']} = {work:g}"
                    f" task-seconds; at most {maximum} (LMWEB_SELFTEST_MAX_WORK) for users"
                    " who are not staff"
                ]
            }
        )
