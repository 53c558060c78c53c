"""The real stack for execution tests: a private catalog server, a Celery controller process,
Work Queue workers, PostgreSQL and Redis. Nothing is mocked."""

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs.cctools.catalog import start_catalog_server, wait_for_catalog
from jobs.cctools.processes import stop_process
from tests.runner.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
FINISHED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.2):
    return wait_until(predicate, timeout, interval)


class Stack:
    """Addresses and settings shared by the test process and the processes it started."""

    def __init__(self, root: Path, catalog: str, password_file: Path, deployment: str):
        self.root = root
        self.data_dir = root / "data"
        self.catalog = catalog
        self.password_file = password_file
        self.deployment = deployment
        self.processes: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}

    def env(self, database_name: str) -> dict[str, str]:
        database = django_settings.DATABASES["default"]
        url = f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database_name}"
        env = dict(os.environ)
        env.update(
            DATABASE_URL=url,
            CELERY_BROKER_URL=django_settings.CELERY_BROKER_URL,
            LMWEB_DATA_DIR=str(self.data_dir),
            LMWEB_CATALOG=self.catalog,
            LMWEB_WQ_PASSWORD_FILE=str(self.password_file),
            LMWEB_DEPLOYMENT=self.deployment,
            LMWEB_SCRATCH_DIR=str(self.root / "scratch"),
            LMWEB_POLL_MILLISECONDS="250",
            LMWEB_HEARTBEAT_SECONDS="1",
            # Recovery within seconds, for the fault tests.
            LMWEB_STALE_SECONDS="8",
            LMWEB_RECOVER_SECONDS="2",
            PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        )
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
        )
        self.processes[name] = popen
        self.commands[name] = (args, env)
        return popen

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything in its session, as a crash would."""
        popen = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)

    def restart(self, name: str) -> subprocess.Popen:
        args, env = self.commands[name]
        return self.start(name, args, env)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str) -> None:
        popen = self.processes.pop(name, None)
        if popen is not None:
            stop_process(popen, grace=15)


# Package scope: the stack's controller and scheduler work on the test database, so they stop
# before the tests after this package run. Left up, the controller took the jobs that later
# live-server tests submitted and wrote to them while the test database was being flushed (a
# deadlock, on a slower machine).
@pytest.fixture(scope="package")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    from django.db import connection

    root = tmp_path_factory.mktemp("stack")
    (root / "data").mkdir()
    password_file = root / "wq.password"
    password_file.write_text(secrets.token_hex(16) + "\n")
    password_file.chmod(0o600)
    port = free_port()
    catalog_server = start_catalog_server(
        port=port,
        history_dir=root / "catalog",
        log_path=root / "catalog.log",
        lifetime=300,
    )
    catalog = f"127.0.0.1:{port}"
    wait_for_catalog(catalog, timeout=10)
    the_stack = Stack(root, catalog, password_file, deployment=f"t{secrets.token_hex(3)}")
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    for queue in ("lmweb-jobs", "lmweb"):
        broker.delete(queue)
    env = the_stack.env(connection.settings_dict["NAME"])
    # As in the Procfile: workers under keep-running (a broker outage can make a Celery worker
    # exit), without gossip and mingle (broker chatter we do not use).
    keep = str(ROOT / "scripts" / "keep-running")
    celery = [keep, sys.executable, "-m", "celery", "-A", "lmweb", "worker", "-l", "INFO",
              "--without-gossip", "--without-mingle"]  # fmt: skip
    the_stack.start(
        "controller",
        [*celery, "-Q", "lmweb-jobs", "-c", "3", "-n", "controller@%h", "-O", "fair"],
        env,
    )
    the_stack.start("housekeeper", [*celery, "-Q", "lmweb", "-c", "1", "-n", "housekeeper@%h"], env)
    the_stack.start(
        "scheduler",
        [sys.executable, "-m", "celery", "-A", "lmweb", "beat", "-s", str(root / "beat")],
        env,
    )
    the_stack.start(
        "workers",
        [sys.executable, "manage.py", "lmweb_workers", "--no-factory", "--max-workers", "3"],
        env,
    )
    try:
        yield the_stack
    finally:
        for name in list(the_stack.processes):
            the_stack.stop(name)
        stop_process(catalog_server, grace=2)


@pytest.fixture
def live(stack, settings, transactional_db, make_user):
    """An API client for a user, with this process's settings pointed at the stack."""
    settings.DATA_DIR = stack.data_dir
    settings.LMWEB_CATALOG = stack.catalog
    settings.LMWEB_WQ_PASSWORD_FILE = stack.password_file
    settings.LMWEB_DEPLOYMENT = stack.deployment
    user = make_user(f"researcher-{secrets.token_hex(3)}")
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    client.user = user
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
