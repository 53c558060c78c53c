"""The direct pool serves only managers it trusts, whatever datagrams the catalog believed."""

import json
import secrets
import socket
import threading
import time

import pytest

from jobs.cctools import log as makeflowlog
from jobs.cctools.catalog import managers, query_catalog
from jobs.cctools.pool import DirectPool
from jobs.cctools.projects import project_name, project_regex

from .conftest import logged_rule, wait_until, write_dag

pytestmark = pytest.mark.integration


class Listener:
    """A TCP port that counts who connects: where a forged record sends workers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            peer.close()

    def close(self) -> None:
        self.server.close()


def advertise(catalog: str, record: dict) -> None:
    """One UDP datagram, as a manager sends its record (the catalog asks nothing more)."""
    host, port = catalog.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(json.dumps(record).encode(), (host, int(port)))


def forged_records(real: dict, deployment: str, ports: list[int]) -> list[dict]:
    """Copies of a real manager's record: one for a job that does not exist, one with the
    real job's project name but another port (the catalog keeps one record per address and
    port)."""
    return [
        dict(real, project=project_name(deployment, "forged", width=2), port=ports[0]),
        dict(real, port=ports[1]),
    ]


def serve_with_forgeries(procs, workdir, tmp_path, *, trusting: bool):
    deployment = f"trust{secrets.token_hex(3)}"
    dag = write_dag(workdir, [logged_rule(f"r{n}", "sleep 1", []) for n in range(2)])
    listeners = [Listener(), Listener()]
    run = procs.start(workdir, dag, project=project_name(deployment, "job", width=2))
    (real,) = wait_until(lambda: managers(procs.catalog, run.project), timeout=5)
    forgeries = forged_records(real, deployment, [listener.port for listener in listeners])
    for record in forgeries:
        advertise(procs.catalog, record)
    wanted = {(record["project"], record["port"]) for record in forgeries}

    def listed() -> bool:
        records = query_catalog(procs.catalog)
        return wanted <= {(record.get("project"), record.get("port")) for record in records}

    wait_until(listed, timeout=5)  # the catalog took them
    pool = DirectPool(
        catalog=procs.catalog,
        project_regex=project_regex(deployment),
        spec=procs.spec(scratch_dir=tmp_path / "pool"),
        max_workers=4,
        per_manager=2,
        trust=(lambda: {(run.project, run.port)}) if trusting else None,
    )
    try:
        while run.poll() is None:
            pool.step()
            time.sleep(0.2)
            assert time.time() - run.started_at < 30
        pool.step()
        connections = [listener.connections for listener in listeners]
        return run, connections, makeflowlog.read_rules(workdir, dag)
    finally:
        pool.stop()
        for listener in listeners:
            listener.close()


def test_forged_catalog_records_get_no_worker_and_the_real_job_gets_its_own(
    procs, workdir, tmp_path
):
    _, connections, rules = serve_with_forgeries(procs, workdir, tmp_path, trusting=True)

    assert connections == [0, 0]
    assert {rule.state for rule in rules} == {"complete"}
    assert len({rule.host for rule in rules}) == 2, "both of the real job's workers came"


def test_without_trust_a_forged_record_takes_workers(procs, workdir, tmp_path):
    """The twin of the test above: the forged records do reach an untrusting pool."""
    _, connections, _ = serve_with_forgeries(procs, workdir, tmp_path, trusting=False)

    assert all(connections)
