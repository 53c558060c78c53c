"""Jobs run for real: Celery controller, makeflow, catalog server, Work Queue workers."""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import upload
from tests.support.payloads import selftest

from .conftest import wait_for, wait_until_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def submit(client, body) -> dict:
    response = client.post("/api/v1/jobs/", body)
    assert response.status_code == 201, response.content
    return response.json()


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_a_selftest_job_completes_with_outputs_tasks_and_a_package(live):
    job = submit(live, selftest(4, 0.2))
    done = wait_until_finished(live, job["id"], timeout=120)
    assert done["state"] == "COMPLETE", done
    assert done["progress"]["total"] == 5 and done["progress"]["done"] == 5
    assert done["started_at"] and done["finished_at"]

    tasks = live.get(f"/api/v1/jobs/{job['id']}/tasks/").json()["results"]
    assert len(tasks) == 5
    assert {t["state"] for t in tasks} == {"complete"}
    assert {t["exit_code"] for t in tasks} == {0}
    assert all(t["host"] and t["command"] and t["started_at"] for t in tasks)

    outputs = live.get(f"/api/v1/jobs/{job['id']}/outputs/").json()["results"]
    assert {o["path"]: o["role"] for o in outputs} == {
        "report.html": "report",
        "selftest.txt": "result",
    }
    (result,) = [o for o in outputs if o["path"] == "selftest.txt"]
    content = b"".join(live.get(result["url"]).streaming_content)
    assert content.decode().count(" ok") == 4
    assert hashlib.sha256(content).hexdigest() == result["sha256"]

    package = live.get(f"/api/v1/jobs/{job['id']}/package/")
    assert package.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(package.streaming_content))) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert archive.read("outputs/selftest.txt") == content
        report = archive.read("outputs/report.html").decode()
    assert manifest["request"]["params"]["tasks"] == 4
    assert len(manifest["rules"]) == 5
    assert manifest["versions"]["cctools"] != "unknown"
    # The report, completed by the controller: the request and every rule's timing.
    assert "<h2>Timings</h2>" in report and "5 rule(s)" in report and "task-00004" in report

    # The job folder holds no MPI leftovers once makeflow is done.
    assert not list((live.stack.data_dir / "jobs" / job["id"] / "tmp").glob("*/ompi*"))


def test_a_failing_rule_gives_executor_error_with_its_exit_code_and_stderr(live):
    body = selftest(3, 0, fail=1)
    job = submit(live, body)
    done = wait_until_finished(live, job["id"], timeout=120)
    assert done["state"] == "EXECUTOR_ERROR", done
    assert done["error"]["code"] == "rule_failed"
    message = done["error"]["message"]
    assert "task-00003" in message
    assert "exited with code 3" in message
    assert "fails on purpose" in message
    tasks = live.get(f"/api/v1/jobs/{job['id']}/tasks/").json()["results"]
    failed = [t for t in tasks if t["state"] == "failed"]
    assert [t["rule"] for t in failed] == ["task-00003"]
    assert failed[0]["exit_code"] == 3
    assert "fails on purpose" in failed[0]["stderr"]
    # One retry on purpose (LMWEB_RULE_RETRIES=1): two attempts, not makeflow's default six.
    assert failed[0]["attempts"] == 2


def test_cancel_mid_run_stops_makeflow_and_its_tasks(live):
    job = submit(live, selftest(3, 97.125))
    project = f"lmweb-{live.stack.deployment}-{job['id']}"
    wait_for(
        lambda: live.get(f"/api/v1/jobs/{job['id']}/").json()["progress"]["running"] > 0,
        timeout=60,
    )
    wait_for(lambda: processes_mentioning("97.125"), timeout=30)
    response = live.post(f"/api/v1/jobs/{job['id']}/cancel/")
    assert response.status_code == 202
    assert response.json()["state"] in {"CANCELING", "CANCELED"}
    done = wait_until_finished(live, job["id"], timeout=60)
    assert done["state"] == "CANCELED"
    # Within seconds nothing of the job runs: no makeflow, no task on any worker.
    wait_for(lambda: not processes_mentioning(project), timeout=15)
    wait_for(lambda: not processes_mentioning("97.125"), timeout=15)


ODD_NAMES = [
    "Heuchera ×brizoides",  # noqa: RUF001 (the hybrid sign is the point)
    "Mitella d'urville",
    'Tiarella "foam" flower',
    "Saxifraga $(touch pwned); rm -rf x",
    "Boykinia / elata",
    "Élodea naïve `id`",
]


def test_odd_species_names_reach_the_tools_as_one_argument_each(live):
    rows = ["species_name,x,y"]
    for number, name in enumerate(ODD_NAMES):
        quoted = '"' + name.replace('"', '""') + '"'
        rows += [f"{quoted},{-100 - number + i / 10},{40 + i / 10}" for i in range(3 + number)]
    dataset = upload(live, "odd names.csv", ("\n".join(rows) + "\n").encode()).json()
    body = {"workflow": "occurrence-cleaning", "inputs": {"occurrences": [dataset["id"]]}}
    job = submit(live, body)
    done = wait_until_finished(live, job["id"], timeout=300)
    assert done["state"] == "COMPLETE", done
    job_dir = live.stack.data_dir / "jobs" / job["id"]
    manifest = json.loads((job_dir / "outputs" / "species.json").read_text())
    assert sorted(entry["name"] for entry in manifest.values()) == sorted(ODD_NAMES)
    counts = {entry["name"]: entry["records_after_cleaning"] for entry in manifest.values()}
    assert counts == {name: 3 + number for number, name in enumerate(ODD_NAMES)}
    assert not list(live.stack.root.rglob("pwned"))
