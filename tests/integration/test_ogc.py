"""OGC API - Processes at /ogcapi/ against the running stack, driven by OWSLib (in a virtualenv of
its own, as a user installs it): the landing page, conformance, the processes and a description,
`echo` at once, and pam-stats as an asynchronous job followed to `successful`, its results
downloaded, then dismissed."""

import json
import subprocess
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from tests import synthetic
from tests.conftest import upload

from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PYTHON = ROOT / "var" / "clients" / "owslib" / "bin" / "python"

SCRIPT = """
import json, sys
from owslib.ogcapi.processes import Processes

url, token, pam = sys.argv[1:]
api = Processes(url, headers={"Authorization": "Token " + token})
conformance = api.conformance()
processes = [process["id"] for process in api.processes()]
description = api.process("pam-stats")
echo = api.execute("echo", {"message": "hello", "n": 2})
job = api.execute("pam-stats", {"pam": pam, "randomizations": 10, "seed": 2}, async_=True)
print(json.dumps({
    "landing": api.links,
    "conformance": conformance,
    "processes": processes,
    "description": description,
    "echo": echo,
    "job": job,
    "location": api.response_headers.get("Location"),
}))
"""


def test_owslib_lists_describes_and_runs_processes(served, tmp_path):
    assert CLIENT_PYTHON.exists(), "OWSLib's virtualenv is missing: run make setup-test"
    pam = upload(served.live, "pam.lmm", synthetic.pam_bytes(species=6, side=5)).json()["id"]
    done = subprocess.run(
        [str(CLIENT_PYTHON), "-c", SCRIPT, f"{served.url}/ogcapi/", served.token, pam],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    assert any(link["rel"].endswith("/processes") for link in seen["landing"])
    assert any(c.endswith("/conf/core") for c in seen["conformance"]["conformsTo"])
    assert {"echo", "pam-stats", "mcpa"} <= set(seen["processes"])
    assert seen["description"]["inputs"]["pam"]["minOccurs"] == 1
    assert seen["echo"] == {"message": "hello", "n": 2}
    job_id = seen["job"]["jobID"]
    assert seen["job"]["status"] == "accepted"
    assert seen["location"].endswith(f"/ogcapi/jobs/{job_id}")

    def finished():
        status = served.session.get(seen["location"], timeout=30).json()
        return status if status["status"] in {"successful", "failed", "dismissed"} else None

    status = wait_for(finished, 600, interval=0.5)
    assert status["status"] == "successful", status
    assert status["progress"] == 100
    results_url = next(link["href"] for link in status["links"] if link["rel"].endswith("results"))
    results = served.session.get(results_url, timeout=30).json()
    package = served.session.get(results["package"]["href"], timeout=60)
    assert package.status_code == 200
    with zipfile.ZipFile(BytesIO(package.content)) as archive:
        assert "ro-crate-metadata.json" in archive.namelist()
    assert served.session.get(results["report"]["href"], timeout=60).status_code == 200

    dismissed = served.session.delete(seen["location"], timeout=30)
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    gone = served.session.get(seen["location"], timeout=30)
    assert gone.status_code == 404 and gone.json()["type"].endswith("/no-such-job")
