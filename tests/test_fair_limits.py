"""Fair limits per user: queued jobs (429 + Retry-After), running jobs (a claim waits), large
selftests (staff only); throttles shared across processes and keyed on the real client."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings

from jobs import limits
from jobs.models import Job, State
from jobs.services import job_claim
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"workflow": "selftest", "name": "small", "params": {"tasks": 2, "seconds": 0}}


@pytest.mark.django_db
class TestQueuedLimit:
    def test_over_the_queued_limit_a_submission_gets_429_with_retry_after(self, api, settings):
        settings.LMWEB_USER_MAX_QUEUED = 2
        for _ in range(2):
            assert api.post("/api/v1/jobs/", SMALL).status_code == 201
        refused = api.post("/api/v1/jobs/", SMALL)
        assert refused.status_code == 429, refused.content
        assert int(refused["Retry-After"]) > 0
        body = refused.json()
        assert body["limit"] == "queued_jobs" and body["maximum"] == 2
        assert "LMWEB_USER_MAX_QUEUED" in body["detail"]
        assert Job.objects.filter(owner=api.user).count() == 2  # nothing stored

    def test_the_limit_is_per_user_and_counts_only_waiting_jobs(self, api, other_api, settings):
        settings.LMWEB_USER_MAX_QUEUED = 1
        first = api.post("/api/v1/jobs/", SMALL).json()
        assert api.post("/api/v1/jobs/", SMALL).status_code == 429
        assert other_api.post("/api/v1/jobs/", SMALL).status_code == 201
        Job.objects.filter(pk=first["id"]).update(state=State.RUNNING)
        assert api.post("/api/v1/jobs/", SMALL).status_code == 201

    def test_an_idempotent_replay_is_not_refused(self, api, settings):
        settings.LMWEB_USER_MAX_QUEUED = 1
        key = {"HTTP_IDEMPOTENCY_KEY": "retry-1"}
        assert api.post("/api/v1/jobs/", SMALL, **key).status_code == 201
        assert api.post("/api/v1/jobs/", SMALL, **key).status_code == 200


@pytest.mark.django_db
class TestSelftestWork:
    LARGE = {"workflow": "selftest", "params": {"tasks": 100, "seconds": 10}}

    def test_a_large_selftest_from_a_user_is_a_400_naming_the_field_and_limit(self, api):
        response = api.post("/api/v1/jobs/", self.LARGE)
        assert response.status_code == 400, response.content
        message = response.json()["errors"]["params.tasks"][0]
        assert "1000" in message and "LMWEB_SELFTEST_MAX_WORK" in message
        assert str(django_settings.LMWEB_SELFTEST_MAX_WORK) in message
        assert not Job.objects.exists()

    def test_staff_may_run_a_large_selftest(self, staff_api):
        assert staff_api.post("/api/v1/jobs/", self.LARGE).status_code == 201

    def test_a_selftest_at_the_bound_is_allowed(self, api, settings):
        settings.LMWEB_SELFTEST_MAX_WORK = 1000
        assert api.post("/api/v1/jobs/", self.LARGE).status_code == 201


@pytest.mark.django_db
class TestRunningLimit:
    def test_a_claim_over_the_running_limit_leaves_the_job_queued(self, api, other_api, settings):
        settings.LMWEB_USER_MAX_RUNNING = 1
        first, second = (api.post("/api/v1/jobs/", SMALL).json()["id"] for _ in range(2))
        theirs = other_api.post("/api/v1/jobs/", SMALL).json()["id"]
        assert job_claim(job_id=first, controller="c1").state == State.INITIALIZING
        with pytest.raises(limits.OverLimit) as over:
            job_claim(job_id=second, controller="c2")
        assert over.value.limit == "running_jobs"
        second_job = Job.objects.get(pk=second)
        assert (second_job.state, second_job.claimed_by, second_job.attempts) == (
            State.QUEUED,
            "",
            0,
        )
        assert job_claim(job_id=theirs, controller="c3") is not None  # another user's runs
        Job.objects.filter(pk=first).update(state=State.COMPLETE)
        assert job_claim(job_id=second, controller="c2").state == State.INITIALIZING


class TestClientAddress:
    @pytest.fixture
    def request_from(self, rf):
        def make(remote, forwarded=None):
            extra = {"REMOTE_ADDR": remote}
            if forwarded is not None:
                extra["HTTP_X_FORWARDED_FOR"] = forwarded
            return rf.get("/", **extra)

        return make

    def test_without_trusted_proxies_x_forwarded_for_is_ignored(self, request_from):
        from jobs.api.throttles import client_address

        assert client_address(request_from("198.51.100.7", "203.0.113.1")) == "198.51.100.7"

    def test_from_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client(
        self, request_from, settings
    ):
        import ipaddress

        from jobs.api.throttles import client_address

        settings.TRUSTED_PROXY_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
        # The client wrote "1.2.3.4"; the proxies appended what they saw.
        request = request_from("10.0.0.2", "1.2.3.4, 203.0.113.5, 10.0.0.1")
        assert client_address(request) == "203.0.113.5"
        assert client_address(request_from("198.51.100.7", "1.2.3.4")) == "198.51.100.7"


def test_a_bad_trusted_proxy_list_stops_the_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMWEB_")}
    env.update(LMWEB_DATA_DIR=str(tmp_path), LMWEB_TRUSTED_PROXIES="10.0.0.0/8,not-an-address")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LMWEB_TRUSTED_PROXIES" in result.stderr


def _serve(tmp_path, name: str, **extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMWEB_")}
    env.update(
        LMWEB_DATA_DIR=str(tmp_path / "data"),
        LMWEB_HTTPS="0",
        LMWEB_THROTTLE_ANON="3/minute",
        LMWEB_LOG_LEVEL="WARNING",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        **extra,
    )
    log = (tmp_path / f"{name}.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "lmweb.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "2"],
        cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    return server, f"http://127.0.0.1:{port}"


def _get(url: str, forwarded: str) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/api/schema/", headers={"X-Forwarded-For": forwarded})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def _wait_up(url: str, server: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def test_two_processes_share_the_anonymous_throttle_and_x_forwarded_for_cannot_escape_it(
    tmp_path,
):
    (tmp_path / "data").mkdir()
    # The servers count in the broker's Redis under the default prefix; start from zero.
    cache = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    for key in cache.scan_iter("lmweb-cache:*throttle_anon_*"):
        cache.delete(key)
    servers = [
        _serve(tmp_path, "a"),
        _serve(tmp_path, "b"),
        _serve(tmp_path, "proxied", LMWEB_TRUSTED_PROXIES="127.0.0.1"),
    ]
    try:
        for url, server in ((url, server) for server, url in servers):
            _wait_up(url, server)
        (_, a), (_, b), (_, proxied) = servers
        # Three anonymous requests, alternating between the processes, each claiming to come
        # from somewhere else: one client, so one count of 3.
        for number, url in enumerate((a, b, a)):
            status, _ = _get(url, f"203.0.113.{number}")
            assert status == 200, number
        status, headers = _get(b, "203.0.113.99")
        assert status == 429
        assert int(headers["Retry-After"]) > 0
        # Behind a trusted proxy the forwarded address is the client, counted on its own.
        status, _ = _get(proxied, "198.51.100.20")
        assert status == 200
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(timeout=15)
        for key in cache.scan_iter("lmweb-cache:*throttle_anon_*"):
            cache.delete(key)
