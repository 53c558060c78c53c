"""Processes die; jobs do not: every crash below ends with the job COMPLETE."""

import os
import signal
from pathlib import Path

import pytest

from jobs.models import Job
from tests.support.payloads import selftest

from .conftest import wait_for, wait_until_finished
from .test_execution import submit

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_controller_stopped_with_sigterm_hands_its_job_back_unfailed(live, report):
    stack = live.stack
    job = submit(live, selftest(6, 2))
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
    report(f"SIGTERM hand-back: {done['attempts']} attempt(s) counted, makeflow started twice")


def pids_of(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def rule_runs(client, job_id: str) -> list[int]:
    tasks = client.get(f"/api/v1/jobs/{job_id}/tasks/").json()["results"]
    return [task["attempts"] for task in tasks]


def test_kill_9_of_the_controller_in_the_middle_of_10_jobs_loses_nothing(live, report):
    stack = live.stack
    jobs = [submit(live, selftest(3, 1.5))["id"] for _ in range(10)]
    wait_for(lambda: Job.objects.filter(pk__in=jobs, rules_done__gte=1).count() >= 2, timeout=90)
    running = Job.objects.filter(pk__in=jobs, state__in=["INITIALIZING", "RUNNING"]).count()
    stack.kill("controller")
    stack.restart("controller")
    finished = [wait_until_finished(live, job_id, timeout=300) for job_id in jobs]
    states = [job["state"] for job in finished]
    runs = [n for job_id in jobs for n in rule_runs(live, job_id)]
    report(
        f"kill -9 controller: {running} jobs running at the kill; "
        f"{states.count('COMPLETE')}/10 COMPLETE; rule runs: max {max(runs)}, "
        f"{sum(1 for n in runs if n > 1)} of {len(runs)} rules ran twice"
    )
    assert states == ["COMPLETE"] * 10
    assert max(runs) <= 2


def test_kill_9_of_a_work_queue_worker_mid_rule_loses_nothing(live, report):
    job = submit(live, selftest(3, 4.25))
    wait_for(lambda: pids_of("4.25"), timeout=60)
    victims = pids_of("work_queue_worker")
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    done = wait_until_finished(live, job["id"], timeout=180)
    report(f"kill -9 worker: job {done['state']}, rule runs {rule_runs(live, job['id'])}")
    assert done["state"] == "COMPLETE"


def test_kill_9_of_makeflow_is_resumed_from_its_log(live, report):
    job = submit(live, selftest(4, 2))
    project = f"lmweb-{live.stack.deployment}-{job['id']}"
    wait_for(lambda: Job.objects.get(pk=job["id"]).rules_done >= 1, timeout=60)
    # Makeflow itself, not the bubblewrap around it (whose command line names it too).
    makeflows = [
        pid
        for pid in pids_of(project)
        if pid in pids_of("/usr/bin/makeflow") and pid not in pids_of("/usr/bin/bwrap")
    ]
    assert makeflows
    os.kill(makeflows[0], signal.SIGKILL)
    done = wait_until_finished(live, job["id"], timeout=180)
    log = (live.stack.data_dir / "jobs" / job["id"] / "main.mf.json.makeflowlog").read_text()
    runs = rule_runs(live, job["id"])
    report(
        f"kill -9 makeflow: job {done['state']}, "
        f"makeflow started {log.count('# STARTED')} times, rule runs {runs}"
    )
    assert done["state"] == "COMPLETE"
    assert log.count("# STARTED") == 2
    assert max(runs) <= 2
