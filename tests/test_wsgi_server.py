"""The API contract tests once more, through a real WSGI server: Django's own (wsgiref-based, as
`manage.py runserver` serves), not the test client. wsgiref refuses what the test client lets
through, e.g. a header value that is a str subclass (DRF's Hyperlink in Location)."""

import json as jsonlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import requests
from rest_framework.authtoken.models import Token

from tests import test_catalog_api, test_datasets_api, test_jobs_api
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


class ServerResponse:
    """The parts of a test-client response the contract tests read."""

    def __init__(self, response: requests.Response):
        self.status_code = response.status_code
        self.content = response.content
        self.headers = response.headers
        self.streaming_content = [response.content]

    def json(self):
        return jsonlib.loads(self.content)

    def __getitem__(self, header: str) -> str:
        return self.headers[header]

    def has_header(self, header: str) -> bool:
        return header in self.headers

    def __contains__(self, header: str) -> bool:
        return header in self.headers


class ServerClient:
    """APIClient's calling convention, over HTTP to a running server."""

    def __init__(self, base_url: str, user=None):
        self.base_url = base_url
        self.user = user
        self.session = requests.Session()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            self.session.headers["Authorization"] = f"Token {token.key}"

    @staticmethod
    def _headers(extra: dict) -> dict:
        # Django's META names (HTTP_IDEMPOTENCY_KEY) back to header names.
        return {
            key[5:].replace("_", "-").title(): value
            for key, value in extra.items()
            if key.startswith("HTTP_")
        }

    def generic(self, method, path, data=b"", content_type=None, **extra):
        headers = self._headers(extra)
        if content_type:
            headers["Content-Type"] = content_type
        response = self.session.request(
            method, self.base_url + path, data=data, headers=headers, timeout=60
        )
        return ServerResponse(response)

    def _send(self, method, path, data=None, format=None, **extra):
        headers = self._headers(extra)
        url = self.base_url + path
        if method in {"GET", "HEAD"} or data is None:
            response = self.session.request(method, url, params=data, headers=headers, timeout=60)
        elif format == "multipart":
            files, fields = [], {}
            for key, value in data.items():
                for item in value if isinstance(value, list) else [value]:
                    if hasattr(item, "read"):
                        files.append((key, (Path(getattr(item, "name", key)).name, item.read())))
                    else:
                        fields[key] = item
            response = self.session.request(
                method, url, data=fields, files=files or None, headers=headers, timeout=60
            )
        else:
            headers["Content-Type"] = "application/json"
            body = jsonlib.dumps(data).encode()
            response = self.session.request(method, url, data=body, headers=headers, timeout=60)
        return ServerResponse(response)

    def get(self, path, data=None, **extra):
        return self._send("GET", path, data, **extra)

    def post(self, path, data=None, format=None, **extra):
        return self._send("POST", path, data, format, **extra)

    def delete(self, path, data=None, **extra):
        return self._send("DELETE", path, data, **extra)


# The same fixtures as tests/conftest.py, pointed at the live server (which needs committed
# rows: live_server makes each test transactional).
@pytest.fixture
def api(live_server, make_user, data_dir):
    return ServerClient(live_server.url, make_user("alice"))


@pytest.fixture
def other_api(live_server, make_user, data_dir):
    return ServerClient(live_server.url, make_user("bob"))


@pytest.fixture
def staff_api(live_server, make_user, data_dir):
    return ServerClient(live_server.url, make_user("operator", staff=True))


@pytest.fixture
def anon_api(live_server, db, data_dir):
    return ServerClient(live_server.url)


class TestSubmitOverWsgi(test_jobs_api.TestSubmit):
    # Captures the test thread's on-commit callbacks; the server commits in its own thread.
    test_it_sends_the_job_to_the_controller_queue_after_commit = None


class TestValidationOverWsgi(test_jobs_api.TestValidation):
    pass


class TestReadOverWsgi(test_jobs_api.TestRead):
    pass


class TestIdempotencyOverWsgi(test_jobs_api.TestIdempotency):
    pass


class TestDownloadsOverWsgi(test_jobs_api.TestDownloads):
    pass


class TestUploadOverWsgi(test_datasets_api.TestUpload):
    pass


class TestDatasetsReadAndDeleteOverWsgi(test_datasets_api.TestReadAndDelete):
    pass


class TestWorkflowsOverWsgi(test_catalog_api.TestWorkflows):
    pass


@pytest.mark.django_db(transaction=True)
def test_runserver_answers_201_to_an_upload_and_a_submission(tmp_path):
    """`manage.py runserver` itself (the newcomer's first command): 201, with a str Location."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    port = free_port()
    database = settings.DATABASES["default"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LMWEB_")},
        "DEBUG": "1",
        "LMWEB_DATA_DIR": str(tmp_path / "data"),
        "LMWEB_HTTPS": "0",
        # No controller should see this job: a broker that is not there (the submission still
        # answers 201; recovery would send it), and throttles in the test Redis.
        "CELERY_BROKER_URL": "redis://127.0.0.1:9/0",
        "LMWEB_CACHE_URL": settings.CELERY_BROKER_URL,
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}"
        ),
    }
    user = get_user_model().objects.create_user("newcomer")
    token = Token.objects.create(user=user).key
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": f"Token {token}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/workflows/", timeout=5)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "no runserver"
                time.sleep(0.2)
        files = {"file": ("tree.tre", b"((sp_a:1,sp_b:1):1);\n")}
        upload = requests.post(f"{base}/datasets/", headers=headers, files=files, timeout=60)
        assert upload.status_code == 201, upload.text
        assert upload.headers["Location"] == upload.json()["url"]
        body = {"workflow": "selftest", "params": {"tasks": 1, "seconds": 0}}
        job = requests.post(f"{base}/jobs/", headers=headers, json=body, timeout=60)
        assert job.status_code == 201, job.text
        assert job.headers["Location"] == job.json()["url"]
    finally:
        server.terminate()
        server.wait(timeout=15)
