"""Live logs on the running stack: a selftest rule that says how far it is every second, read
through the API while it runs (its guard sends its output to the web server as it grows), then
followed to its end with `lmweb logs -f`, which prints every line once."""

import time
import zipfile

import pytest

from .conftest import wait_for
from .test_client import LMWEB, lmweb

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TASK = "main:task-00001"


def test_a_running_rules_log_grows_and_logs_f_follows_it_to_the_end(served):
    response = served.live.post(
        "/api/v1/jobs/",
        {"workflow": "selftest", "params": {"tasks": 1, "seconds": 9, "progress": True}},
    )
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    url = f"/api/v1/jobs/{job_id}/tasks/{TASK}/log"

    def lines_while_running():
        job = served.live.get(f"/api/v1/jobs/{job_id}/").json()
        assert job["state"] not in {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}, job
        answer = served.live.get(url, {"stream": "stderr"})
        if answer.status_code != 200:
            return None
        text = answer.content.decode()
        return text if text.count("selftest: ") >= 2 else None

    seen = wait_for(lines_while_running, 60, interval=0.5)
    assert seen.startswith("selftest: 0 of 9 s\n")
    # From an offset: only what came after it.
    later = served.live.get(url, {"stream": "stderr", "offset": len(seen)})
    assert later.status_code == 200 and not later.content.startswith(b"selftest: 0 ")

    assert LMWEB.exists()
    started = time.monotonic()
    follow = lmweb(served, "logs", job_id, TASK, "-f", timeout=120)
    assert follow.returncode == 0, follow.stderr
    assert time.monotonic() - started > 1  # it waited for the rule to end
    lines = follow.stdout.splitlines()
    assert lines[0] == "selftest: 0 of 9 s" and lines[-1] == "selftest: 9 s done"
    assert len(lines) == len(set(lines))  # every line once
    final = served.live.get(url, {"stream": "stderr"}).content.decode()
    assert final == follow.stdout


def test_the_package_holds_no_live_log_token(served):
    response = served.live.post(
        "/api/v1/jobs/", {"workflow": "selftest", "params": {"tasks": 1, "seconds": 0}}
    )
    job_id = response.json()["id"]

    def complete():
        return served.live.get(f"/api/v1/jobs/{job_id}/").json()["state"] == "COMPLETE" or None

    wait_for(complete, 120)
    job_dir = served.live.stack.data_dir / "jobs" / job_id
    assert "LMWEB_LOG_TOKEN" in (job_dir / "main.mf.json").read_text()
    with zipfile.ZipFile(job_dir / "package.zip") as archive:
        packaged = archive.read("workflow/main.mf.json").decode()
    assert "LMWEB_RULE" in packaged and "LMWEB_LOG_TOKEN" not in packaged
