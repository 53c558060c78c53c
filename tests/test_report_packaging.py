"""Packaging completes the worker's report with what only the controller knows, then catalogs
it with role `report`; user text stays text."""

import json
import zipfile

import pytest
from django.utils import timezone

from jobs.execution import packaging
from jobs.execution.folder import JobFolder
from jobs.models import Dataset, Job, State
from jobs.validation import validate_request
from translators.report import JOB_MARK, REPORT, report_files


@pytest.fixture
def finished_job(make_user, data_dir):
    request = validate_request(
        {
            "workflow": "selftest",
            "name": "<img src=x onerror=alert(1)>",
            "params": {"tasks": 2},
            "tags": {"note": "</pre><script>alert(2)</script>"},
        },
        datasets=Dataset.objects.none(),
    ).request
    job = Job.objects.create(
        owner=make_user("rosa"),
        workflow="selftest",
        name=request["name"],
        request=request,
        state=State.RUNNING,
        claimed_by="host:1",
        attempts=1,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    folder = JobFolder.of(job)
    (folder.root / "outputs").mkdir(parents=True)
    (folder.root / "outputs" / "selftest.txt").write_text("ok\n")
    config = json.loads(
        report_files("Self test", "selftest", {}, {}, [], ["outputs/selftest.txt"])[
            "work/config/report/report.json"
        ]
    )
    assert config["job_mark"] == JOB_MARK
    (folder.root / REPORT).write_text(f"<html><body><h1>T</h1>\n{JOB_MARK}\n<p>end</p></body>")
    return job, folder


def test_the_report_gets_the_request_versions_and_timings_escaped(finished_job):
    job, folder = finished_job
    outputs = packaging.package_job(job, folder)
    html = (folder.root / REPORT).read_text()
    assert JOB_MARK not in html, "filled once"
    assert "<h2>Request</h2>" in html and "<h2>Versions</h2>" in html
    assert "<h2>Timings</h2>" in html and "cctools" in html and "specify-lmpy" in html
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert html.endswith("<p>end</p></body>")
    (report,) = [o for o in outputs if o["path"] == "report.html"]
    assert report["role"] == "report"
    assert report["media_type"] == "text/html"
    assert report["size"] == (folder.root / REPORT).stat().st_size
    with zipfile.ZipFile(folder.package) as package:
        assert package.read("outputs/report.html").decode() == html
        manifest = json.loads(package.read("manifest.json"))
    assert {o["path"]: o["role"] for o in manifest["outputs"]} == {
        "report.html": "report",
        "selftest.txt": "result",
    }


def test_packaging_twice_fills_the_report_once(finished_job):
    job, folder = finished_job
    packaging.package_job(job, folder)
    first = (folder.root / REPORT).read_text()
    packaging.package_job(job, folder)
    assert (folder.root / REPORT).read_text() == first


def test_a_job_without_a_report_is_still_packaged(finished_job):
    job, folder = finished_job
    (folder.root / REPORT).unlink()
    outputs = packaging.package_job(job, folder)
    assert [o["path"] for o in outputs] == ["selftest.txt"]
