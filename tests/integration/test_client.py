"""`lmweb`, the client and command line of client/, installed as users install it (its own
virtualenv, `make setup-test`), against the running stack: a submission that uploads its inputs
once, follows the job with a progress bar and downloads and verifies the package; the job list,
cancel, and a rule's log."""

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests import synthetic

from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
LMWEB = ROOT / "var" / "clients" / "lmweb" / "bin" / "lmweb"


def lmweb(served, *args: str, config: Path | None = None, timeout: float = 600):
    """The command, with the token from the environment (or from `config` only)."""
    assert LMWEB.exists(), "the lmweb client's virtualenv is missing: run make setup-test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMWEB_")}
    if config is None:
        env.update(LMWEB_URL=served.url, LMWEB_TOKEN=served.token)
    else:
        env.update(LMWEB_CONFIG=str(config))
    return subprocess.run(
        [str(LMWEB), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def inputs(tmp_path):
    names = synthetic.species_names(6)
    pam, tree = tmp_path / "heuchera.lmm", tmp_path / "heuchera.nwk"
    pam.write_bytes(synthetic.pam_bytes(species=6, side=5))
    tree.write_bytes(synthetic.newick(names))
    return pam, tree


def test_submit_uploads_once_waits_and_downloads_a_verified_package(served, inputs, tmp_path):
    pam, tree = inputs
    out = tmp_path / "out"
    args = ["submit", "pam-stats", "--pam", str(pam), "--tree", str(tree),
            "-p", "randomizations=10", "-p", "seed=4", "--name", "from the client",
            "--tag", "study=client", "--wait", "--download", str(out)]  # fmt: skip
    done = lmweb(served, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = done.stdout.strip().splitlines()[-1]
    assert "pam: heuchera.lmm -> dataset" in done.stderr and "uploaded" in done.stderr
    assert "COMPLETE" in done.stderr and "package verified" in done.stderr
    assert "rule" in done.stderr  # the progress bar's unit
    job = served.live.get(f"/api/v1/jobs/{job_id}/").json()
    assert job["state"] == "COMPLETE" and job["name"] == "from the client"
    assert job["tags"] == {"study": "client"} and job["request"]["params"]["seed"] == 4
    unpacked = out / job_id
    manifest = json.loads((unpacked / "manifest.json").read_text())
    assert {o["path"] for o in manifest["outputs"]} >= {"report.html"}
    assert (unpacked / "outputs" / "report.html").is_file()
    with zipfile.ZipFile(out / f"lmweb-pam-stats-{job_id}.zip") as archive:
        assert archive.testzip() is None

    # The same files again: no new upload, the same datasets.
    datasets = served.live.get("/api/v1/datasets/").json()["count"]
    again = lmweb(served, "submit", "pam-stats", "--pam", str(pam), "--tree", str(tree),
                  "-p", "randomizations=0")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("(already uploaded)") == 2
    assert served.live.get("/api/v1/datasets/").json()["count"] == datasets

    listed = lmweb(served, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert job_id in [item["id"] for item in json.loads(listed.stdout)]

    # The rules, and one rule's output, as the service has them.
    rules = lmweb(served, "logs", job_id)
    assert rules.returncode == 0, rules.stderr
    assert "main:report" in rules.stdout or ":report" in rules.stdout
    tasks = served.live.get(f"/api/v1/jobs/{job_id}/tasks/", {"page_size": 1000}).json()
    report = next(t for t in tasks["results"] if t["rule"] == "report")
    log = lmweb(served, "logs", job_id, f"{report['stage']}:report", "-f")
    assert log.returncode == 0, log.stderr
    assert log.stdout.endswith(report["stderr"])


def test_the_token_comes_from_the_config_file_and_cancel_stops_a_job(served, tmp_path):
    config = tmp_path / "config.ini"
    config.write_text(f"[lmweb]\nurl = {served.url}\ntoken = {served.token}\n")
    done = lmweb(served, "submit", "selftest", "-p", "tasks=2", "-p", "seconds=60", config=config)
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = done.stdout.strip()
    canceled = lmweb(served, "cancel", job_id, config=config)
    assert canceled.returncode == 0, canceled.stderr
    assert job_id in canceled.stdout

    def finished():
        state = served.live.get(f"/api/v1/jobs/{job_id}/").json()["state"]
        return state if state == "CANCELED" else None

    assert wait_for(finished, 120) == "CANCELED"
    waited = lmweb(served, "wait", job_id, config=config)
    assert waited.returncode == 1 and "CANCELED" in waited.stderr


def test_bad_input_is_said_without_a_traceback(served, tmp_path):
    missing = lmweb(served, "submit", "pam-stats", "--pam", str(tmp_path / "nope.lmm"))
    assert missing.returncode == 2 and "neither a file nor a dataset id" in missing.stderr
    unknown = lmweb(served, "submit", "pam-stats", "--pams", "x")
    assert unknown.returncode == 2 and "not an input of this workflow" in unknown.stderr
    refused = lmweb(served, "submit", "selftest", "-p", "tasks=-3")
    assert refused.returncode == 2 and "params.tasks" in refused.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr + refused.stderr
    no_token = subprocess.run(
        [str(LMWEB), "jobs"], env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert no_token.returncode == 2 and "no token" in no_token.stderr
