"""Completion callbacks delivered by the running stack's Celery housekeeper: a job with a
callback_url finishes, its receiver (on this machine, which the test stack allows) answers 503
first and is tried again a second later, the POST carries the owner's HMAC-SHA256 signature;
the delivery log says so, and sending again through the API reaches the receiver again."""

import json

import pytest

from jobs import callbacks
from tests.support.payloads import selftest
from tests.test_callbacks import Receiver, signed_by

from .conftest import wait_for, wait_until_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_finished_job_calls_back_signed_and_retried_and_again_on_request(live, settings):
    settings.CALLBACK_ALLOW_PRIVATE = True  # the submission's check, in this process
    receiver = Receiver(statuses=[503, 200, 200])
    try:
        response = live.post(
            "/api/v1/jobs/", {**selftest(tasks=1, seconds=0), "callback_url": receiver.url}
        )
        assert response.status_code == 201, response.content
        job_id = response.json()["id"]
        assert wait_until_finished(live, job_id, timeout=300)["state"] == "COMPLETE"
        wait_for(lambda: len(receiver.received) >= 2, 60)
        first, second = receiver.received[:2]
        assert first["headers"]["X-Lmweb-Delivery"] == second["headers"]["X-Lmweb-Delivery"]
        secret = callbacks.secret_for(live.user)
        assert signed_by(secret, first) and signed_by(secret, second)
        assert json.loads(second["body"])["job"] == {
            **json.loads(second["body"])["job"],
            "id": job_id,
            "state": "COMPLETE",
        }

        def logged():
            items = live.get(f"/api/v1/jobs/{job_id}/callbacks/").json()["results"]
            return items if items and items[0]["status"] == "delivered" else None

        (delivery,) = wait_for(logged, 30)
        assert delivery["attempts"] == 2 and delivery["last_status_code"] == 200

        again = live.post(f"/api/v1/jobs/{job_id}/callbacks/")
        assert again.status_code == 202, again.content
        wait_for(lambda: len(receiver.received) >= 3, 60)
        third = receiver.received[2]
        assert third["headers"]["X-Lmweb-Delivery"] == again.json()["id"]
        assert signed_by(secret, third)
    finally:
        receiver.close()
