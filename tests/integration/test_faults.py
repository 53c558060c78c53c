"""Processes die; jobs do not: every crash below ends with the job COMPLETE."""

import pytest

from jobs.models import Job

from .conftest import wait_for, wait_until_finished
from .test_execution import submit

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_controller_stopped_with_sigterm_hands_its_job_back_unfailed(live):
    stack = live.stack
    job = submit(live, {"workflow": "selftest", "params": {"tasks": 6, "seconds": 2}})
    wait_for(lambda: Job.objects.get(pk=job["id"]).rules_done >= 1, timeout=60)
    stack.stop("controller")  # SIGTERM: a warm shutdown
    handed_back = Job.objects.get(pk=job["id"])
    try:
        assert handed_back.state == "QUEUED", (handed_back.state, handed_back.error_message)
        assert handed_back.error_message == ""
        assert handed_back.claimed_by == ""
    finally:
        stack.restart("controller")
    done = wait_until_finished(live, job["id"], timeout=120)
    assert done["state"] == "COMPLETE", done
    log = (stack.data_dir / "jobs" / job["id"] / "main.mf.json.makeflowlog").read_text()
    assert log.count("# STARTED") == 2  # the rerun resumed the same log
    print(f"\nSIGTERM hand-back: {done['attempts']} attempt(s) counted, makeflow started twice")
