"""Completion callbacks, in process, against a real HTTP receiver on this machine: which URLs are
taken, one delivery per finish, the HMAC-SHA256 signature with the owner's own secret, back-off
and giving up, refusing private addresses at the last moment, sending again, and the secret's
API. tests/integration/test_callbacks.py has the Celery housekeeper deliver them."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.utils import timezone

from jobs import callbacks
from jobs.models import CallbackDelivery, Job, State
from tests.support.factories import make_job

SELFTEST = {"workflow": "selftest", "params": {"tasks": 1, "seconds": 0}}


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers the next status given."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": dict(self.headers), "body": body})
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def signed_by(secret: str, request: dict) -> bool:
    headers = request["headers"]
    expected = hmac.new(
        secret.encode(),
        headers["X-Lmweb-Timestamp"].encode() + b"." + request["body"],
        hashlib.sha256,
    ).hexdigest()
    return hmac.compare_digest(headers["X-Lmweb-Signature"], f"sha256={expected}")


def finish(job: Job, state=State.COMPLETE) -> Job:
    """End a job as the controller does (the one conditional UPDATE)."""
    sources = [job.state]
    if state == State.COMPLETE and job.state == State.QUEUED:
        Job.move(job.pk, State.INITIALIZING, sources=sources)
        Job.move(job.pk, State.RUNNING, sources=[State.INITIALIZING])
        sources = [State.RUNNING]
    assert Job.move(job.pk, state, sources=sources)
    job.refresh_from_db()
    return job


@pytest.mark.django_db
class TestSubmission:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "https://10.1.2.3/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "https://user:pw@example.org/hook",
            "ftp://example.org/hook",
        ],
    )
    def test_a_private_or_odd_callback_url_is_a_400_naming_it(self, api, data_dir, url):
        response = api.post("/api/v1/jobs/", {**SELFTEST, "callback_url": url})
        assert response.status_code == 400, response.content
        assert "callback_url" in response.json()["errors"]
        assert Job.objects.count() == 0

    def test_a_public_url_is_kept_with_the_job(self, api):
        url = "https://93.184.216.34/hooks/lmweb"
        response = api.post("/api/v1/jobs/", {**SELFTEST, "callback_url": url})
        assert response.status_code == 201, response.content
        job = Job.objects.get(pk=response.json()["id"])
        assert job.callback_url == url and job.request["callback_url"] == url

    def test_the_operator_may_allow_private_addresses(self, api, settings):
        settings.CALLBACK_ALLOW_PRIVATE = True
        response = api.post("/api/v1/jobs/", {**SELFTEST, "callback_url": "http://10.0.0.5/h"})
        assert response.status_code == 201, response.content

    def test_a_wes_run_takes_it_as_a_tag(self, api, settings):
        settings.CALLBACK_ALLOW_PRIVATE = True
        data = {
            "workflow_url": "selftest",
            "tags": json.dumps({"callback_url": "http://10.0.0.5/h"}),
        }
        response = api.post("/ga4gh/wes/v1/runs", data, format="multipart")
        assert response.status_code == 200, response.content
        assert Job.objects.get(pk=response.json()["run_id"]).callback_url == "http://10.0.0.5/h"
        settings.CALLBACK_ALLOW_PRIVATE = False
        data["tags"] = json.dumps({"callback_url": "http://127.0.0.1/h"})
        response = api.post("/ga4gh/wes/v1/runs", data, format="multipart")
        assert response.status_code == 400 and "tags.callback_url" in response.json()["msg"]


@pytest.mark.django_db
class TestDelivery:
    def test_each_finish_gets_one_delivery(self, make_user):
        job = make_job(make_user("ana"), callback_url="https://93.184.216.34/h")
        job = finish(job)
        assert list(job.callbacks.values_list("reason", "job_state")) == [("finished", "COMPLETE")]
        assert callbacks.sweep()["created"] == 0  # nothing left out
        assert make_job(make_user("bo")).callbacks.count() == 0  # no URL, no callback

    def test_the_sweep_writes_a_delivery_a_crash_left_out(self, make_user):
        job = finish(make_job(make_user("ana"), callback_url="https://93.184.216.34/h"))
        job.callbacks.all().delete()
        assert callbacks.sweep()["created"] == 1
        assert job.callbacks.count() == 1

    def test_a_delivery_is_signed_with_the_owners_secret(self, make_user, settings, receiver):
        settings.CALLBACK_ALLOW_PRIVATE = True
        owner = make_user("ana")
        job = finish(make_job(owner, callback_url=receiver.url, tags={"k": "v"}))
        (delivery,) = job.callbacks.all()
        assert callbacks.deliver(delivery.id) == "delivered"
        (request,) = receiver.received
        assert signed_by(callbacks.secret_for(owner), request)
        assert not signed_by("another secret", request)
        body = json.loads(request["body"])
        assert body["event"] == "job.finished" and body["delivery"] == str(delivery.id)
        assert body["job"]["id"] == str(job.id) and body["job"]["state"] == "COMPLETE"
        assert body["job"]["tags"] == {"k": "v"}
        assert request["headers"]["X-Lmweb-Delivery"] == str(delivery.id)
        delivery.refresh_from_db()
        assert delivery.attempts == 1 and delivery.last_status_code == 200
        assert callbacks.deliver(delivery.id) == "gone"  # delivered: never sent twice from here
        assert len(receiver.received) == 1

    def test_a_failing_receiver_is_tried_again_later_then_given_up(self, make_user, settings):
        settings.CALLBACK_ALLOW_PRIVATE = True
        settings.CALLBACK_ATTEMPTS = 3
        server = Receiver(statuses=[503, 500, 502])
        try:
            job = finish(make_job(make_user("ana"), callback_url=server.url), State.CANCELED)
            (delivery,) = job.callbacks.all()
            before = timezone.now()
            assert callbacks.deliver(delivery.id) == "pending"
            delivery.refresh_from_db()
            assert delivery.last_status_code == 503 and "HTTP 503" in delivery.last_error
            waited = (delivery.next_attempt_at - before).total_seconds()
            assert (
                settings.CALLBACK_RETRY_SECONDS - 1 < waited < settings.CALLBACK_RETRY_SECONDS + 5
            )
            assert callbacks.deliver(delivery.id) == "pending"
            delivery.refresh_from_db()
            waited = (delivery.next_attempt_at - timezone.now()).total_seconds()
            assert waited > settings.CALLBACK_RETRY_SECONDS  # doubled
            assert callbacks.deliver(delivery.id) == "failed"
            assert len(server.received) == 3
        finally:
            server.close()

    def test_a_private_address_is_refused_at_delivery_too(self, make_user, settings, receiver):
        job = finish(make_job(make_user("ana"), callback_url=receiver.url))
        (delivery,) = job.callbacks.all()
        assert callbacks.deliver(delivery.id) == "failed"
        delivery.refresh_from_db()
        assert delivery.last_error.startswith("refused") and receiver.received == []

    def test_a_redirect_is_not_followed(self, make_user, settings):
        settings.CALLBACK_ALLOW_PRIVATE = True
        server = Receiver(statuses=[302])
        try:
            job = finish(make_job(make_user("ana"), callback_url=server.url))
            (delivery,) = job.callbacks.all()
            assert callbacks.deliver(delivery.id) == "pending"
            delivery.refresh_from_db()
            assert delivery.last_status_code == 302
        finally:
            server.close()


@pytest.mark.django_db
class TestApi:
    def test_a_finished_jobs_callback_can_be_sent_again(self, api, other_api):
        job = finish(make_job(api.user, callback_url="https://93.184.216.34/h"))
        response = api.post(f"/api/v1/jobs/{job.id}/callbacks/")
        assert response.status_code == 202, response.content
        assert response.json()["reason"] == "resend" and response.json()["status"] == "pending"
        listed = api.get(f"/api/v1/jobs/{job.id}/callbacks/").json()["results"]
        assert sorted(item["reason"] for item in listed) == ["finished", "resend"]
        assert other_api.post(f"/api/v1/jobs/{job.id}/callbacks/").status_code == 404
        queued = make_job(api.user, callback_url="https://93.184.216.34/h")
        assert api.post(f"/api/v1/jobs/{queued.id}/callbacks/").status_code == 409
        assert CallbackDelivery.objects.filter(job=queued).count() == 0

    def test_the_secret_is_the_callers_own_and_can_be_replaced(self, api, other_api):
        first = api.get("/api/v1/callback-secret/").json()["secret"]
        assert api.get("/api/v1/callback-secret/").json()["secret"] == first
        assert other_api.get("/api/v1/callback-secret/").json()["secret"] != first
        response = api.post("/api/v1/callback-secret/")
        assert response.status_code == 201 and response.json()["secret"] not in {first, ""}
        assert callbacks.secret_for(api.user) == response.json()["secret"]
