"""Outages of the broker and the database: a Redis of the test's own is killed and restarted, and
PostgreSQL is reached through a TCP relay that the test cuts. The web runs as its own process."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from jobs.cctools.catalog import start_catalog_server
from jobs.cctools.processes import stop_process
from tests.runner.conftest import free_port

from .conftest import FINISHED, ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault]


class Relay:
    """A TCP relay to PostgreSQL; cutting it drops every connection, as a network outage would."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self.server = None
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()

    def up(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        if self.server is not None:
            # shutdown() first: close() alone leaves a socket that a thread is blocked in
            # accept() on still listening.
            with contextlib.suppress(OSError):
                self.server.shutdown(socket.SHUT_RDWR)
            self.server.close()
            self.server = None
        with self.lock:
            links, self.links = self.links, []
        for link in links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)
                link.close()


class MiniStack:
    def __init__(self, root, database_name):
        self.root = root
        self.redis_port = free_port()
        self.web_port = free_port()
        self.catalog_port = free_port()
        database = connection.settings_dict
        self.relay = Relay((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
        self.env = dict(os.environ)
        self.env.update(
            DATABASE_URL=(
                f"postgres://{database['USER']}@127.0.0.1:{self.relay.port}/{database_name}"
            ),
            CELERY_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            LMWEB_DATA_DIR=str(root / "data"),
            LMWEB_CATALOG=f"127.0.0.1:{self.catalog_port}",
            LMWEB_WQ_PASSWORD_FILE=str(root / "wq.password"),
            LMWEB_DEPLOYMENT=f"o{secrets.token_hex(3)}",
            LMWEB_SCRATCH_DIR=str(root / "scratch"),
            LMWEB_POLL_MILLISECONDS="250",
            LMWEB_HEARTBEAT_SECONDS="1",
            LMWEB_STALE_SECONDS="8",
            LMWEB_RECOVER_SECONDS="2",
            DEBUG="0",
            LMWEB_HTTPS="0",
            PATH=f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}",
        )
        (root / "wq.password").write_text(secrets.token_hex(16) + "\n")
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name, args):
        log = (self.root / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True
        )

    def start_redis(self):
        (self.root / "redis").mkdir(exist_ok=True)
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.start(
            "redis",
            [redis_server, "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--dir", str(self.root / "redis"), "--appendonly", "yes",
             "--appendfsync", "always", "--save", ""],
        )  # fmt: skip
        wait_for(lambda: _answers(self.redis_port), timeout=10)

    def kill(self, name):
        popen = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)

    def stop_all(self):
        for name in list(self.processes):
            popen = self.processes.pop(name)
            stop_process(popen, grace=10)
        self.relay.down()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.web_port}"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def mini(transactional_db, tmp_path, make_user):
    stack = MiniStack(tmp_path, connection.settings_dict["NAME"])
    stack.relay.up()
    stack.start_redis()
    catalog = start_catalog_server(
        port=stack.catalog_port, history_dir=tmp_path / "catalog", log_path=tmp_path / "cat.log"
    )
    python = sys.executable
    celery = [str(ROOT / "scripts" / "keep-running"), python, "-m", "celery", "-A", "lmweb"]
    bind = f"127.0.0.1:{stack.web_port}"
    stack.start("web", [python, "-m", "gunicorn", "lmweb.wsgi", "-b", bind, "-w", "2", "-t", "60"])
    worker = [*celery, "worker", "--without-gossip", "--without-mingle"]
    stack.start("controller", [*worker, "-Q", "lmweb-jobs", "-c", "2", "-n", "c@%h"])
    stack.start("housekeeper", [*worker, "-Q", "lmweb", "-c", "1", "-n", "h@%h"])
    stack.start("scheduler", [*celery, "beat", "-s", str(tmp_path / "beat")])
    stack.start("workers", [python, "manage.py", "lmweb_workers", "--no-factory",
                            "--max-workers", "2"])  # fmt: skip
    user = make_user(f"outage-{secrets.token_hex(3)}")
    stack.headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}
    wait_for(lambda: _answers(stack.web_port), timeout=30)
    try:
        yield stack
    finally:
        stack.stop_all()
        stop_process(catalog, grace=2)


def _get(stack, path, timeout=10):
    return requests.get(stack.url + path, headers=stack.headers, timeout=timeout)


def _submit(stack, params):
    response = requests.post(
        stack.url + "/api/v1/jobs/",
        json={"workflow": "selftest", "params": params},
        headers=stack.headers,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _wait_finished(stack, job_id, timeout):
    def finished():
        try:
            body = _get(stack, f"/api/v1/jobs/{job_id}/").json()
        except (requests.RequestException, ValueError):
            return None
        return body if body.get("state") in FINISHED else None

    try:
        return wait_for(finished, timeout, interval=1)
    except AssertionError:
        logs = (stack.root / "controller.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"job {job_id} did not finish in {timeout} s\n{logs}") from None


def test_kill_9_and_restart_of_redis_loses_no_job(mini, report):
    running = _submit(mini, {"tasks": 3, "seconds": 3})
    wait_for(lambda: _get(mini, f"/api/v1/jobs/{running}/").json()["state"] == "RUNNING", 60)
    mini.kill("redis")
    # While the broker is down, submissions are still stored; recovery sends them later.
    during = _submit(mini, {"tasks": 2, "seconds": 0.5})
    time.sleep(2)
    mini.start_redis()
    finished = [_wait_finished(mini, job_id, timeout=240) for job_id in (running, during)]
    states = [job["state"] for job in finished]
    report(f"kill -9 Redis: jobs {states} (one running at the kill, one submitted meanwhile)")
    assert states == ["COMPLETE", "COMPLETE"]


def test_losing_the_database_answers_503_then_recovers(mini, report):
    assert _get(mini, "/healthz").status_code == 200
    assert _get(mini, "/api/v1/jobs/").status_code == 200
    mini.relay.down()
    during = [_get(mini, path, timeout=30) for path in ("/api/v1/jobs/", "/healthz")]
    mini.relay.up()
    codes = [response.status_code for response in during]
    assert codes == [503, 503], [r.text[:300] for r in during]
    assert "database" in during[1].json()["failed"]
    wait_for(lambda: _get(mini, "/api/v1/jobs/").status_code == 200, timeout=30)
    job_id = _submit(mini, {"tasks": 2, "seconds": 0.2})
    done = _wait_finished(mini, job_id, timeout=120)
    report(f"database outage: API answered {codes} during it, 200 after; a new job {done['state']}")
    assert done["state"] == "COMPLETE"
