"""Every package holds ro-crate-metadata.json: the job as a Workflow Run RO-Crate. Checked here
with RO-Crate's own tools, each in a virtualenv of its own (`make setup-test`): crs4's
rocrate-validator (the Workflow Run Crate profile, offline, every requirement of severity
REQUIRED) and ro-crate-py, which reads it as a client would. A package of every workflow's
example run is checked the same way in tests/integration/test_workflows.py."""

import datetime as dt
import json
import re
import subprocess
import zipfile

import pytest
from django.utils import timezone

from jobs.execution import packaging, rocrate
from jobs.execution.folder import JobFolder
from jobs.models import Dataset, Job, JobInput, State
from jobs.validation import validate_request
from tests.support.crates import read_with_ro_crate_py, validate
from tests.support.factories import upload
from tests.support.payloads import lmm_bytes


@pytest.fixture
def packaged(api, data_dir, tmp_path):
    """A job whose rules have succeeded (packaging comes before COMPLETE), with an input
    dataset, packaged."""
    pam = upload(api, "heuchera.lmm", lmm_bytes(), name="Heuchera PAM").json()
    job = Job.objects.create(
        owner=api.user,
        workflow="selftest",
        name="crate",
        request=validate_request(
            {"workflow": "selftest", "params": {"tasks": 1}}, datasets=Dataset.objects.none()
        ).request,
        state=State.RUNNING,
        started_at=timezone.now() - dt.timedelta(seconds=30),
    )
    JobInput.objects.create(job=job, dataset_id=pam["id"], name="pam", position=0)
    folder = JobFolder.of(job)
    (folder.root / "outputs").mkdir(parents=True)
    (folder.root / "outputs" / "selftest.txt").write_text("ok\n")
    (folder.root / "main.mf.json").write_text('{"rules": []}\n')
    (folder.root / "stages.json").write_text(json.dumps({"done": [], "started": ["main"]}))
    packaging.package_job(job, folder)
    unzipped = tmp_path / "package"
    with zipfile.ZipFile(folder.package) as archive:
        archive.extractall(unzipped)
    return job, pam, unzipped


def test_the_package_is_a_workflow_run_crate_of_the_job(api, packaged):
    _, pam, unzipped = packaged
    assert sorted(p.relative_to(unzipped).as_posix() for p in unzipped.rglob("*.json")) == [
        "manifest.json",
        "ro-crate-metadata.json",
        "workflow/main.mf.json",
    ]
    validate(unzipped)
    seen = read_with_ro_crate_py(unzipped)
    assert seen["main"] == "workflow/main.mf.json"
    assert "ComputationalWorkflow" in seen["main_type"]
    assert seen["actions"] == ["#run"]  # this job has no rule in makeflow's log
    manifest = json.loads((unzipped / "manifest.json").read_text())
    for output in manifest["outputs"]:
        assert seen["files"][f"outputs/{output['path']}"] == output["sha256"]
    assert seen["files"][f"urn:uuid:{pam['id']}"] == pam["sha256"]
    crate = json.loads((unzipped / "ro-crate-metadata.json").read_text())
    entities = {entity["@id"]: entity for entity in crate["@graph"]}
    assert entities[f"urn:uuid:{pam['id']}"]["name"] == "Heuchera PAM"  # the user's name for it
    lmpy = manifest["versions"]["specify-lmpy"]
    assert entities[f"https://pypi.org/project/specify-lmpy/{lmpy}/"]["version"] == lmpy
    cctools = entities["https://cctools.readthedocs.io/"]
    assert cctools["description"] == manifest["versions"]["cctools"]
    assert cctools["version"] in manifest["versions"]["cctools"]
    assert entities["#lmweb"]["version"] == manifest["versions"]["lmweb"]
    run = entities["#run"]
    assert run["instrument"] == {"@id": "workflow/main.mf.json"}
    assert run["actionStatus"] == rocrate.COMPLETED  # packaged: every rule succeeded
    assert {"@id": "#pv-tasks"} in run["object"]
    assert entities["./"]["author"] == {"@id": "#owner"}
    assert entities["#owner"]["name"] == api.user.get_username()
    assert entities[entities["./"]["publisher"]["@id"]]["@type"] == "Organization"


def test_the_package_says_what_it_holds_to_a_person_and_to_sha256sum(packaged):
    job, pam, unzipped = packaged
    readme = (unzipped / "README.md").read_text()
    assert readme.startswith(f"# lmweb job {job.id}: selftest (crate)\n")
    assert f"| pam | Heuchera PAM | {pam['id']} | {pam['sha256']} |" in readme
    assert "| tasks | 1 |" in readme
    sums = (unzipped / "SHA256SUMS").read_text().splitlines()
    manifest = json.loads((unzipped / "manifest.json").read_text())
    assert sums == [f"{o['sha256']}  outputs/{o['path']}" for o in manifest["outputs"]] != []
    for output in manifest["outputs"]:
        assert f"| outputs/{output['path']} | " in readme
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=unzipped, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (unzipped / "outputs" / "selftest.txt").write_text("tampered\n")
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=unzipped).returncode


def test_each_rule_is_an_action_with_its_command_host_times_and_exit_code():
    start = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    tasks = [
        {
            "stage": "main", "rule": "rand-001", "command": "python3 chunk.py 1 2",
            "state": "complete", "exit_code": 0, "host": "10.0.0.2:9123", "attempts": 1,
            "started_at": start, "finished_at": start + dt.timedelta(seconds=9),
        },
        {
            "stage": "main", "rule": "p-values", "command": "python3 p.py",
            "state": "failed", "exit_code": 3, "host": "10.0.0.3:9123", "attempts": 2,
            "started_at": start, "finished_at": start + dt.timedelta(seconds=1),
        },
    ]  # fmt: skip
    crate = rocrate.metadata(
        job={"id": "j", "workflow": "pam-stats", "name": "", "owner": "rosa", "state": "COMPLETE"},
        request={"params": {"randomizations": 10}},
        versions={},
        stages=["main"],
        tasks=tasks,
        outputs=[],
        inputs=[],
        files=[],
    )
    entities = {entity["@id"]: entity for entity in crate["@graph"]}
    chunk, failed = entities["#rule-main-rand-001"], entities["#rule-main-p-values"]
    assert chunk["@type"] == "CreateAction" and chunk["description"] == "python3 chunk.py 1 2"
    assert chunk["agent"] == {"@id": "#owner"}  # on whose behalf it ran
    assert chunk["location"] == {"@id": "#worker-10.0.0.2:9123"}
    assert entities["#worker-10.0.0.2:9123"]["name"] == "Work Queue worker 10.0.0.2:9123"
    assert chunk["startTime"] == "2026-01-02T03:04:05+00:00"
    assert chunk["endTime"] == "2026-01-02T03:04:14+00:00"
    assert chunk["exitCode"] == 0 and chunk["actionStatus"] == rocrate.COMPLETED
    assert failed["exitCode"] == 3 and failed["actionStatus"] == rocrate.FAILED
    assert {"@id": "#rule-main-p-values"} in entities["./"]["mentions"]


def test_the_readme_keeps_user_text_as_text():
    hostile = "<img src=x onerror=alert(1)> | [x](javascript:alert(1)) `code`\nnext"
    text = rocrate.readme(
        job={"id": "j", "workflow": "pam-stats", "name": hostile, "owner": "rosa"},
        request={"params": {"label": hostile}},
        versions={},
        outputs=[],
        inputs=[{"slot": "pam", "name": hostile, "id": "d", "sha256": "0" * 64}],
    )
    # Every character markup would read is escaped.
    assert not re.search(r"(?<!\\)[<>\[\]`|]", text.split("## Inputs")[0].split(":", 1)[1])
    assert (
        "\\<img src=x onerror=alert(1)\\> \\| \\[x\\](javascript:alert(1)) \\`code\\` next" in text
    )
    # One line per table row, with the header's 4 cells.
    (row,) = [line for line in text.splitlines() if line.startswith("| pam |")]
    assert row.replace("\\|", "").count("|") == 5
