"""Outages of the broker and the database: a Redis of the test's own is killed and restarted, and
PostgreSQL is reached through a TCP relay that the test cuts. The web runs as its own process."""

import contextlib
import secrets
import socket
import threading
import time

import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.support.ports import free_port
from tests.support.stack import QUICK_RECOVERY, Stack

from .conftest import FINISHED, database_url, wait_for

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


class MiniStack(Stack):
    """The stack with a Redis of its own and PostgreSQL through a relay, so both can fail."""

    def __init__(self, root):
        database = connection.settings_dict
        self.relay = Relay((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
        super().__init__(
            root,
            database_url=database_url(database["NAME"], via=self.relay.port),
            broker_url=None,  # its own Redis
            deployment=f"o{secrets.token_hex(3)}",
            controllers=2,
            env={**QUICK_RECOVERY, "DEBUG": "0", "LMWEB_HTTPS": "0"},
        )
        self.headers: dict[str, str] = {}

    def close(self, grace: float = 10) -> None:
        super().close(grace)
        self.relay.down()


@pytest.fixture
def mini(transactional_db, tmp_path, make_user):
    stack = MiniStack(tmp_path)
    try:
        stack.relay.up()
        stack.start_redis()
        stack.start_catalog()
        stack.start_web("--timeout", "60")
        for name in ("controller", "housekeeper", "scheduler"):
            stack.start(name)
        stack.start_workers("--no-factory", "--max-workers", "2")
        user = make_user(f"outage-{secrets.token_hex(3)}")
        stack.headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}
        yield stack
    finally:
        stack.close()


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
        logs = stack.log("controller")[-3000:]
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
