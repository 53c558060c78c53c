"""Bombs against a real gunicorn: each is a 400 naming its field within 10 s, the web process
grows by at most 100 MB, and other requests are served meanwhile (measured through /proc)."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.support.payloads import lmm_bytes
from tests.support.ports import free_port

from . import synthetic

ROOT = Path(__file__).resolve().parents[1]
MB = 1024**2
# Two limits lowered so that their bombs are quick to build; the others are the defaults.
SERVER_LIMITS = {"LMWEB_MAX_CSV_ROWS": "200000", "LMWEB_MAX_ZIP_UNPACKED": "256M"}
OCCURRENCE_PARAMS = {
    "species_column": "species_name",
    "x_column": "x",
    "y_column": "y",
    "grid": {"min_x": -130, "min_y": 20, "max_x": -60, "max_y": 55, "cell_size": 1, "epsg": 4326},
}


# ---------------------------------------------------------------------------------------------
# Bombs: small files that claim or unpack to a great deal


def _pam_bomb() -> bytes:
    """A real lmpy matrix of 30,000 x 40,000 zeros (1.2 GB as uint8) in about 2 MB."""
    shape = (30_000, 40_000)
    npz = io.BytesIO()
    archive = zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
    with archive, archive.open("arr_0.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "|u1", "fortran_order": False, "shape": shape}
        )
        zeros = bytes(40 * MB)
        for _ in range(shape[0] * shape[1] // len(zeros)):
            member.write(zeros)
    headers = {
        "headers": {
            "0": [[n, 0.5, 0.5] for n in range(shape[0])],
            "1": [f"sp_{n}" for n in range(shape[1])],
        },
        "metadata": {},
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("headers.json", json.dumps(headers))
        archive.writestr("data.npz", npz.getvalue())
    return out.getvalue()


def _tree_bomb() -> bytes:
    """A polytomy of a million tips: dendropy's parse of it is quadratic (hours)."""
    return b"(" + b",".join(b"t%d" % n for n in range(1_000_000)) + b");\n"


def _raster_bomb(path: Path) -> bytes:
    """A sparse GeoTIFF of 200,000 x 200,000 pixels in about 10 MB (its tile index)."""
    from osgeo import gdal

    gdal.UseExceptions()
    options = ["SPARSE_OK=TRUE", "TILED=YES", "BIGTIFF=YES"]
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), 200_000, 200_000, 1, gdal.GDT_Byte, options=options
    )
    dataset.SetGeoTransform([-180, 360 / 200_000, 0, 90, 0, -180 / 200_000])
    dataset = None
    return path.read_bytes()


def _csv_bomb() -> bytes:
    rows = b"".join(b"Heuchera alba,-100.5,%d.25\n" % (n % 90) for n in range(250_000))
    return b"species_name,x,y\n" + rows


def _members_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for n in range(10_001):
            archive.writestr(f"m/{n}.txt", b"")
    return out.getvalue()


def _unpacked_bomb() -> bytes:
    """300 MB of zeros in 300 KB, sizes declared honestly."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("meta.xml", b"<archive/>")
        with archive.open("occurrence.txt", "w", force_zip64=True) as member:
            zeros = bytes(50 * MB)
            for _ in range(6):
                member.write(zeros)
    return out.getvalue()


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("bombs")
    return {
        "pam": _pam_bomb(),
        "tree": _tree_bomb(),
        "raster": _raster_bomb(folder / "eco.tif"),
        "csv": _csv_bomb(),
        "members": _members_bomb(),
        "unpacked": _unpacked_bomb(),
    }


# ---------------------------------------------------------------------------------------------
# A real web server


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            fields[name] = int(value.split()[0]) * 1024
    return fields


class Server:
    def __init__(self, url: str, token: str, master: subprocess.Popen):
        self.url, self.master = url, master
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    @property
    def worker(self) -> int:
        children = Path(f"/proc/{self.master.pid}/task/{self.master.pid}/children").read_text()
        [pid] = children.split()
        return int(pid)

    def upload(self, name: str, content: bytes) -> requests.Response:
        files = {"file": (name, content)}
        return self.session.post(f"{self.url}/api/v1/datasets/", files=files, timeout=60)

    def stored(self, name: str, content: bytes) -> str:
        response = self.upload(name, content)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def submit(self, workflow: str, inputs: dict, params: dict) -> requests.Response:
        body = {"workflow": workflow, "inputs": inputs, "params": params}
        return self.session.post(f"{self.url}/api/v1/jobs/", json=body, timeout=60)


@pytest.fixture
def server(transactional_db, make_user, tmp_path):
    port = free_port()
    database = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=(
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}?application_name={APPLICATION}"
        ),
        LMWEB_DATA_DIR=str(tmp_path / "data"),
        LMWEB_HTTPS="0",
        LMWEB_LOG_LEVEL="WARNING",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        **SERVER_LIMITS,
    )
    log = (tmp_path / "gunicorn.log").open("ab")
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "lmweb.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
         "--worker-class", "gthread", "--timeout", "120"],
        cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    token, _ = Token.objects.get_or_create(user=make_user("alice"))
    server = Server(f"http://127.0.0.1:{port}", token.key, master)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if server.session.get(f"{server.url}/api/v1/workflows/", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.2)
        yield server
    finally:
        os.killpg(master.pid, signal.SIGKILL)
        master.wait(timeout=10)
        _end_server_sessions()


# The server's database sessions are named, so that they can be ended with it: a killed client's
# session lives on until PostgreSQL notices, and the flush after the test would wait on its
# locks (a deadlock, once).
APPLICATION = "lmweb-test-inspection-server"


def _end_server_sessions() -> None:
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                [APPLICATION],
            )
            if not cursor.fetchall():
                return
            time.sleep(0.1)


class Pinger(threading.Thread):
    """GETs the workflow catalog over and over, timing each answer."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.stop, self.answers = server, threading.Event(), []
        self.session = requests.Session()
        self.session.headers.update(server.session.headers)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status = self.session.get(f"{self.server.url}/api/v1/workflows/", timeout=30)
                code = status.status_code
            except requests.RequestException as exc:
                code = type(exc).__name__
            self.answers.append((code, time.monotonic() - started))
            time.sleep(0.1)


def test_bombs_of_each_kind_are_refused_quickly_while_the_web_stays_small_and_serving(
    server, bombs
):
    # Warm up: the first upload, zip upload and submission import what they need.
    pam = server.stored("pam.lmm", lmm_bytes())
    tree = server.stored("tree.tre", b"((sp_a:1,sp_b:1):1);\n")
    occurrences = server.stored("occ.csv", b"species_name,x,y\nHeuchera alba,-100.5,40.25\n")
    ecoregions = server.stored("eco.tif", synthetic.ecoregions_bytes())
    not_a_pam = server.stored("bad.lmm", lmm_bytes().replace(b"data.npz", b"data.npy"))
    assert server.submit("pam-stats", {"pam": not_a_pam}, {}).status_code == 400
    assert server.session.get(f"{server.url}/api/v1/datasets/", timeout=10).ok
    baseline = _status(server.worker)["VmHWM"]

    pinger = Pinger(server)
    pinger.start()
    timings = {}
    try:
        cases = [
            ("pam", "pam.lmm", "pam-stats", lambda bomb: {"pam": bomb}, {}, "inputs.pam"),
            (
                "tree",
                "tree.tre",
                "pam-stats",
                lambda bomb: {"pam": pam, "tree": bomb},
                {},
                "inputs.tree",
            ),
            (
                "raster",
                "eco.tif",
                "species-pam",
                lambda bomb: {"occurrences": [occurrences], "ecoregions": bomb},
                OCCURRENCE_PARAMS,
                "inputs.ecoregions",
            ),
            (
                "csv",
                "occ.csv",
                "species-pam",
                lambda bomb: {"occurrences": [bomb], "ecoregions": ecoregions},
                OCCURRENCE_PARAMS,
                "inputs.occurrences[0]",
            ),
        ]
        for kind, name, workflow, inputs, params, field in cases:
            started = time.monotonic()
            bomb = server.stored(name, bombs[kind])
            response = server.submit(workflow, inputs(bomb), params)
            timings[kind] = time.monotonic() - started
            assert response.status_code == 400, (kind, response.status_code, response.text[:500])
            assert field in response.json()["errors"], (kind, response.json())
        for kind, name in [("members", "many.zip"), ("unpacked", "dwca.zip")]:
            started = time.monotonic()
            response = server.upload(name, bombs[kind])
            timings[kind] = time.monotonic() - started
            assert response.status_code == 400, (kind, response.status_code, response.text[:500])
            assert "file" in response.json()["errors"], (kind, response.json())
    finally:
        pinger.stop.set()
        pinger.join(timeout=40)

    assert all(seconds < 10 for seconds in timings.values()), timings
    grown = _status(server.worker)["VmHWM"] - baseline
    assert grown <= 100 * MB, f"the web process grew by {grown / MB:.0f} MB"
    # A tree of the allowed size still passes through the same server afterwards.
    assert server.submit("pam-stats", {"pam": pam, "tree": tree}, {}).status_code == 201
    codes = {code for code, _ in pinger.answers}
    slowest = max(seconds for _, seconds in pinger.answers)
    assert codes == {200}, pinger.answers
    assert len(pinger.answers) >= 10 and slowest < 2, (len(pinger.answers), slowest)
