"""lmweb-worker: installed alone on a bare host, it serves live jobs past dead catalog records,
within its core and memory caps, and leaves nothing behind on SIGTERM."""

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.cctools import log as makeflowlog
from jobs.cctools.catalog import query_catalog
from jobs.cctools.pool import _listening
from jobs.cctools.processes import children, is_alive, send_signal, session_members
from jobs.cctools.projects import project_name

from .conftest import logged_rule, wait_until, write_dag

ROOT = Path(__file__).resolve().parents[2]
NO_DJANGO = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}


def test_one_pip_command_installs_the_agent_without_django(tmp_path):
    """A fresh virtualenv (no system site packages), the repository's worker/ distribution,
    pip's configured index: the command runs, and nothing of the service came with it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", str(ROOT / "worker")],
        capture_output=True, text=True, timeout=300, env=NO_DJANGO,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    helped = subprocess.run(
        [str(venv / "bin/lmweb-worker"), "--help"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=NO_DJANGO,
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "--catalog" in helped.stdout and "--memory" in helped.stdout
    found = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "import importlib.util as u, jobs.cctools.agent as a; "
         "print(a.__file__); print([m for m in ('django', 'celery', 'rest_framework', 'lmweb') "
         "if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=NO_DJANGO,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    where, service = found.stdout.splitlines()
    assert where.startswith(str(venv)), "the installed copy, not the checkout"
    assert service == "[]"


def workers_of(agent: subprocess.Popen) -> dict[int, list[str]]:
    """The agent's work_queue_worker children: pid -> command line."""
    found = {}
    for child in children(agent.pid):
        try:
            args = Path(f"/proc/{child.pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if args and args[0].endswith("work_queue_worker"):
            found[child.pid] = args
    return found


def option(args: list[str], name: str) -> int:
    (value,) = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}=")]
    return int(value)


@pytest.mark.integration
def test_the_agent_serves_a_live_job_past_dead_records_within_its_caps(procs, tmp_path):
    deployment = f"agent{secrets.token_hex(3)}"
    # Twenty makeflows of this deployment, killed -9 once the catalog lists them: their
    # records stay there, their ports answer no more.
    dead = []
    for n in range(20):
        folder = tmp_path / f"dead{n}"
        dag = write_dag(folder, [logged_rule("r", "sleep 60", [])])
        dead.append(procs.start(folder, dag, project=project_name(deployment, f"dead{n}", 1)))
    dead_projects = {run.project for run in dead}

    def listed() -> set[str]:
        return {str(record.get("project")) for record in query_catalog(procs.catalog)}

    wait_until(lambda: dead_projects <= listed(), timeout=30)
    for run in dead:
        assert run.makeflow is not None
        send_signal(run.makeflow, signal.SIGKILL)
    for run in dead:
        run.popen.wait(timeout=30)
        assert not _listening("127.0.0.1", run.port)

    output = tmp_path / "agent.out"
    with output.open("wb") as out:
        agent = procs.track(
            subprocess.Popen(
                [sys.executable, "-m", "jobs.cctools.agent", "--catalog", procs.catalog,
                 "--password-file", str(procs.password_file), "--deployment", deployment,
                 "--cores", "2", "--memory", "1000",
                 "--scratch-dir", str(tmp_path / "scratch")],
                cwd=ROOT, env=NO_DJANGO, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip

    # A live job of four one-second rules that could all run at once.
    live_dir = tmp_path / "live"
    dag = write_dag(live_dir, [logged_rule(f"r{n}", "sleep 1", []) for n in range(4)])
    live = procs.start(live_dir, dag, project=project_name(deployment, "live", 4))
    seen: dict[int, list[str]] = {}
    most = 0
    while live.poll() is None:
        current = workers_of(agent)
        seen.update(current)
        most = max(most, len(current))
        assert sum(option(args, "cores") for args in current.values()) <= 2
        assert sum(option(args, "memory") for args in current.values()) <= 1000
        assert time.time() - live.started_at < 90, output.read_text()
        time.sleep(0.05)
    assert makeflowlog.outcome(makeflowlog.read_progress(live.paths.makeflowlog)) == "success"
    assert {rule.state for rule in makeflowlog.read_rules(live_dir, dag)} == {"complete"}
    assert most == 2, "the caps allow two one-core workers of 500 MB, and the job used both"
    assert {(option(a, "cores"), option(a, "memory")) for a in seen.values()} == {(1, 500)}

    # The dead records are still in the catalog (the live job may have taken one's port),
    # and not one worker was started for any of them.
    assert len(dead_projects & listed()) >= 19
    said = output.read_text()
    served = set(re.findall(r"a worker for (\S+) at ", said))
    assert served == {live.project}, said

    # SIGTERM while a worker runs a task: the agent, its workers and their tasks all go.
    busy_dir = tmp_path / "busy"
    dag = write_dag(busy_dir, [logged_rule("r", "sleep 60", [])])
    busy = procs.start(busy_dir, dag, project=project_name(deployment, "busy", 1))

    def running_task() -> dict[int, list[str]]:
        current = workers_of(agent)
        return current if any(len(session_members(pid)) > 1 for pid in current) else {}

    workers = wait_until(running_task, timeout=30)
    sessions = [member for pid in workers for member in session_members(pid)]
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    assert [member for member in sessions if is_alive(member)] == []
    assert busy.poll() is None, "the manager stays: only the host's workers left"
