"""The real stack for execution tests: a private catalog server, a Celery controller process,
Work Queue workers, PostgreSQL and Redis. Nothing is mocked."""

import secrets
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support.factories import token_client
from tests.support.ports import listening
from tests.support.stack import QUICK_RECOVERY, Stack
from tests.support.waiting import wait_until

FINISHED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.2):
    return wait_until(predicate, timeout, interval)


def database_url(database_name: str, *, via: int | None = None) -> str:
    """The test database, for another process (through a local relay's port `via`, if given)."""
    database = django_settings.DATABASES["default"]
    address = f"127.0.0.1:{via}" if via else f"{database['HOST']}:{database['PORT']}"
    return f"postgres://{database['USER']}@{address}/{database_name}"


# Package scope: the stack's controller and scheduler work on the test database, so they stop
# before the tests after this package run. Left up, the controller took the jobs that later
# live-server tests submitted and wrote to them while the test database was being flushed (a
# deadlock, on a slower machine).
@pytest.fixture(scope="package")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    the_stack = Stack(
        tmp_path_factory.mktemp("stack"),
        database_url=database_url(connection.settings_dict["NAME"]),
        broker_url=django_settings.CELERY_BROKER_URL,
        deployment=f"t{secrets.token_hex(3)}",
        controllers=3,
        # Callbacks to this machine's own receivers (tests/integration/test_callbacks.py), tried
        # again after a second rather than ten.
        env={
            **QUICK_RECOVERY,
            "LMWEB_CALLBACK_ALLOW_PRIVATE": "1",
            "LMWEB_CALLBACK_RETRY_SECONDS": "1",
        },
    )
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    for queue in ("lmweb-jobs", "lmweb"):
        broker.delete(queue)
    try:
        the_stack.start_catalog()
        for name in ("controller", "housekeeper", "scheduler"):
            the_stack.start(name)
        the_stack.start_workers("--no-factory", "--max-workers", "3")
        yield the_stack
    finally:
        the_stack.close()


@pytest.fixture
def live(stack, settings, transactional_db, make_user):
    """An API client for a user, with this process's settings pointed at the stack."""
    settings.DATA_DIR = stack.data_dir
    settings.LMWEB_CATALOG = stack.catalog
    settings.LMWEB_WQ_PASSWORD_FILE = stack.password_file
    settings.LMWEB_DEPLOYMENT = stack.deployment
    client = token_client(make_user(f"researcher-{secrets.token_hex(3)}"))
    client.stack = stack
    return client


def wait_until_finished(client: APIClient, job_id: str, timeout: float) -> dict:
    def finished():
        body = client.get(f"/api/v1/jobs/{job_id}/").json()
        return body if body["state"] in FINISHED else None

    try:
        return wait_for(finished, timeout, interval=0.5)
    except AssertionError:
        body = client.get(f"/api/v1/jobs/{job_id}/").json()
        logs = client.stack.log("controller")[-4000:]
        raise AssertionError(f"job not finished in {timeout} s: {body}\n{logs}") from None


@pytest.fixture
def report(request, capsys):
    """Print a figure to the terminal even under output capture (fault tests state counts)."""

    def say(text: str) -> None:
        with capsys.disabled():
            print(f"\n[{request.node.name}] {text}", flush=True)

    return say


@pytest.fixture
def served(live):
    """The stack's web server (gunicorn as the Procfile starts it; once for the package's stack)
    and the `live` user's token, for clients in other processes."""
    stack = live.stack
    if "web" not in stack.processes:
        # Throttles high: the fuzzing of tests/integration/test_wes.py sends hundreds of
        # requests, some without a token, and tests of other processes share the counts.
        env = {
            "DEBUG": "0",
            "LMWEB_HTTPS": "0",
            "LMWEB_THROTTLE_ANON": "1000000/hour",
            "LMWEB_THROTTLE_USER": "1000000/hour",
        }
        stack.start("web", "--timeout", "60", env=env)
        wait_for(lambda: listening(stack.port), 60)
    token = Token.objects.get(user=live.user).key
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    return SimpleNamespace(
        url=stack.url, host=f"127.0.0.1:{stack.port}", token=token, session=session, live=live
    )
