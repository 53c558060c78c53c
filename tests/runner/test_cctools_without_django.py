"""jobs.cctools runs on worker hosts, which have no Django: importing it, and its pool command."""

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cctools import log as makeflowlog
from jobs.cctools.processes import session_members
from jobs.cctools.projects import project_name

from .conftest import logged_rule, wait_until, write_dag

ROOT = Path(__file__).resolve().parents[2]
# The environment of a worker host: no Django settings module to find.
NO_DJANGO = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}


def test_the_cctools_package_imports_without_django_or_the_service():
    code = (
        "import sys, jobs.cctools.makeflow, jobs.cctools.pool, jobs.cctools.catalog, "
        "jobs.cctools.log; "
        "print(sorted(name for name in sys.modules if name.split('.')[0] in "
        "('django', 'rest_framework', 'celery', 'lmweb')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=NO_DJANGO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.integration
def test_the_pool_command_serves_a_deployment_without_django(procs, workdir, tmp_path):
    deployment = f"host{secrets.token_hex(3)}"
    output = tmp_path / "pool.out"
    with output.open("wb") as out:
        pool = procs.track(
            subprocess.Popen(
                [sys.executable, "-m", "jobs.cctools.pool", "--catalog", procs.catalog,
                 "--password-file", str(procs.password_file),
                 "--scratch-dir", str(tmp_path / "scratch"), "--deployment", deployment,
                 "--no-factory", "--max-workers", "2", "--task-env", "LMWEB_SEEN=by-the-task"],
                cwd=ROOT,
                env=NO_DJANGO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip
    rule = logged_rule("r", 'echo "$LMWEB_SEEN" > seen.txt', ["seen.txt"])
    dag = write_dag(workdir, [rule])
    run = procs.start(workdir, dag, project=project_name(deployment, "job"))
    run.wait(timeout=60)
    assert makeflowlog.outcome(makeflowlog.read_progress(run.paths.makeflowlog)) == "success"
    assert (workdir / "seen.txt").read_text() == "by-the-task\n"
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=30) == 0
    wait_until(lambda: session_members(pool.pid) == [], timeout=10)
    said = output.read_text()
    assert f"for ^lmweb-{deployment}-.*$" in said and "started 1 direct worker(s)" in said


def test_the_pool_command_refuses_a_missing_password_file(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cctools.pool", "--catalog", "127.0.0.1:9",
         "--password-file", str(tmp_path / "none"), "--scratch-dir", str(tmp_path)],
        cwd=ROOT, env=NO_DJANGO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no Work Queue password file" in done.stderr
