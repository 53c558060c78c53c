"""The running limit per user holds with the real Celery controller: one user's extra jobs wait
QUEUED (not failed, not lost) while another user's job runs."""

import time

import pytest

from jobs.models import Job, State
from tests.support.factories import token_client
from tests.support.payloads import selftest

from .conftest import FINISHED

pytestmark = pytest.mark.integration

ACTIVE = {State.INITIALIZING, State.RUNNING, State.CANCELING}


@pytest.fixture
def limited_controller(stack, live):
    """The stack's controller, replaced by one that runs at most 1 job per user (3 slots)."""
    stack.stop("controller")
    stack.start("controller", env={"LMWEB_USER_MAX_RUNNING": "1", "LMWEB_USER_RETRY_SECONDS": "1"})
    try:
        yield
    finally:
        stack.stop("controller")
        stack.start("controller")


def test_a_user_never_has_more_running_jobs_than_the_limit(live, limited_controller, make_user):
    other_api = token_client(make_user("other-researcher"))
    body = selftest(2, 1)
    mine = [live.post("/api/v1/jobs/", body).json()["id"] for _ in range(3)]
    theirs = other_api.post("/api/v1/jobs/", body).json()["id"]

    jobs = Job.objects.filter(pk__in=[*mine, theirs])
    most_at_once, overlapped = 0, False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = {str(pk): state for pk, state in jobs.values_list("id", "state")}
        running_mine = sum(states[job] in ACTIVE for job in mine)
        most_at_once = max(most_at_once, running_mine)
        overlapped |= running_mine >= 1 and states[theirs] in ACTIVE
        if all(state in FINISHED for state in states.values()):
            break
        time.sleep(0.1)
    assert set(jobs.values_list("state", flat=True)) == {State.COMPLETE}, states
    assert most_at_once == 1  # three controller slots were free; the limit held it to one
    assert overlapped  # another user's job ran beside this user's
    # Waiting was not an attempt: each job was claimed once.
    assert set(jobs.values_list("attempts", flat=True)) == {1}
