"""Bounded work, end to end: a rule over its declared memory, a job over LMWEB_JOB_MAX_SECONDS."""

import time

import pytest

from jobs.execution import controller
from jobs.models import Dataset, State
from jobs.validation import validate_request
from tests.support.factories import make_job
from tests.support.payloads import selftest

from .conftest import wait_until_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def submit(client, body) -> dict:
    response = client.post("/api/v1/jobs/", body)
    assert response.status_code == 201, response.content
    return response.json()


def test_a_rule_over_its_memory_ends_the_job_naming_the_rule_and_the_limit(live):
    # selftest tasks declare 64 MB; this one fills 300 MB on its worker.
    job = submit(live, selftest(1, 1, memory_mb=300))
    done = wait_until_finished(live, job["id"], timeout=120)
    assert done["state"] == "EXECUTOR_ERROR", done
    message = done["error"]["message"]
    assert "rule task-00001" in message
    assert "over its limit of 64 MB (memory)" in message

    # Its twin within the limit completes.
    twin = submit(live, selftest(1, 0.2, memory_mb=16))
    assert wait_until_finished(live, twin["id"], timeout=120)["state"] == "COMPLETE"


def test_a_job_over_lmweb_job_max_seconds_is_stopped_and_says_so(live, settings):
    # The controller runs in this process, with a 3-second limit: a job stored without a broker
    # message, so that the stack's own controller never takes it.
    request = selftest(2, 60)
    valid = validate_request(request, datasets=Dataset.objects.none())
    job = make_job(live.user, name="", tags={}, request=valid.request)
    settings.JOB_MAX_SECONDS = 3
    started = time.monotonic()
    controller.job_run(job_id=str(job.id))
    took = time.monotonic() - started
    job.refresh_from_db()
    assert job.state == State.EXECUTOR_ERROR, (job.state, job.error_message)
    assert job.error_code == "time_limit"
    assert "LMWEB_JOB_MAX_SECONDS" in job.error_message and "3 s" in job.error_message
    assert took < 30  # stopped, not run out: its tasks sleep 60 s
