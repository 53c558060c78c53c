"""Real makeflow, Work Queue workers and catalog server, driven through jobs.cctools."""

import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from jobs.cctools import log as makeflowlog
from jobs.cctools.catalog import managers, start_catalog_server, wait_for_catalog
from jobs.cctools.makeflow import MakeflowRun, prepare_resume
from jobs.cctools.pool import PROBE_SECONDS, DirectPool
from jobs.cctools.processes import (
    ProcessId,
    StartupError,
    children,
    is_alive,
    process_id,
    session_members,
    stop_process,
)
from jobs.cctools.projects import is_width_variant, project_name, project_regex, width_hint
from jobs.cctools.workers import WORKER, start_worker
from tests.support.ports import free_port

from .conftest import logged_rule, wait_until, write_dag

pytestmark = pytest.mark.integration


def follow_to_end(run: MakeflowRun, timeout: float = 30.0) -> makeflowlog.Progress:
    follower = makeflowlog.LogFollower(run.paths.makeflowlog)
    deadline = time.monotonic() + timeout
    while run.poll() is None:
        follower.update()
        assert time.monotonic() < deadline, f"makeflow still running after {timeout} s"
        time.sleep(0.05)
    return follower.update()


def marker_rule(rule_id: str, markers: Path, script: str = "true", inputs=()) -> dict:
    """A rule that appends its pid to markers/<id> each time it runs, so runs can be counted."""
    record = f"echo $$ >> {markers / rule_id}"
    return logged_rule(
        rule_id, f"{record}; {script}; echo {rule_id} > {rule_id}.out", [f"{rule_id}.out"], inputs
    )


def runs_of(markers: Path, rule_id: str) -> int:
    path = markers / rule_id
    return len(path.read_text().split()) if path.exists() else 0


def makeflow_processes_of(run: MakeflowRun) -> list[ProcessId]:
    return [p for p in [*run._helpers, process_id(run.pid)] if p and is_alive(p)]


def test_a_five_rule_makeflow_completes_and_progress_reaches_total(procs, workdir, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    first = [marker_rule(f"r{n}", markers) for n in range(4)]
    last = marker_rule("r4", markers, inputs=[f"r{n}.out" for n in range(4)])
    dag = write_dag(workdir, [*first, last])

    run = procs.start(workdir, dag)
    run.add_workers(2, procs.spec())
    # Advertised to our private catalog under the job's own project name.
    record = wait_until(lambda: managers(procs.catalog, run.project), timeout=5)
    assert record[0]["port"] == run.port
    progress = follow_to_end(run)

    assert run.returncode == 0
    assert (progress.total, progress.complete, progress.ended) == (5, 5, "COMPLETED")
    assert makeflowlog.outcome(progress) == "success"
    rules = makeflowlog.read_rules(workdir, dag)
    assert [rule.rule for rule in rules] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(rule.exit_code == 0 and rule.attempts == 1 and rule.host for rule in rules)
    assert rules[4].parents and rules[4].started_at >= max(r.finished_at for r in rules[:4])
    assert all(runs_of(markers, f"r{n}") == 1 for n in range(5))
    assert (workdir / "logs" / "r4.stdout").exists()


def test_direct_workers_run_the_first_rule_within_a_second_or_two(procs, workdir):
    dag = write_dag(workdir, [{"command": "echo x > x.txt", "inputs": [], "outputs": ["x.txt"]}])
    run = procs.start(workdir, dag)
    run.add_workers(1, procs.spec())
    follow_to_end(run)
    (rule,) = makeflowlog.read_rules(workdir, dag)
    assert rule.started_at.timestamp() - run.started_at < 2.0
    # --single-shot: the worker left with its manager.
    assert run.workers == []


def test_a_failed_rule_is_a_failure_with_its_exit_code_and_stderr_tail(procs, workdir):
    noisy = "i=0; while [ $i -lt 600 ]; do echo noise-$i-abcdefgh >&2; i=$((i+1)); done"
    failing = logged_rule("bad", f"{noisy}; echo last-words >&2; exit 3", ["bad.txt"])
    fine = logged_rule("good", "echo ok > good.txt", ["good.txt"])
    dag = write_dag(workdir, [failing, fine])

    run = procs.start(workdir, dag)
    run.add_workers(1, procs.spec())
    progress = follow_to_end(run)

    # Makeflow calls this a success: exit 0 and COMPLETED.
    assert (run.returncode, progress.ended) == (0, "COMPLETED")
    assert makeflowlog.outcome(progress) == "failed"
    detail = makeflowlog.failure_detail(workdir, dag)
    assert (detail.rule, detail.exit_code) == ("bad", 3)
    assert detail.stderr_tail.endswith("last-words\n")
    assert len(detail.stderr_tail.encode()) <= 4096 and "noise-599" in detail.stderr_tail
    # The failed rule's declared outputs come back, moved aside by node id.
    assert (workdir / f"makeflow.failed.{detail.node_id}" / "logs" / "bad.stderr").exists()
    assert not (workdir / "logs" / "bad.stderr").exists()


def test_a_failed_rule_with_dependents_leaves_makeflow_stuck_and_the_follower_sees_it(
    procs, workdir
):
    failing = logged_rule("bad", "exit 3", ["bad.txt"])
    child = logged_rule("child", "cat bad.txt > child.txt", ["child.txt"], ["bad.txt"])
    dag = write_dag(workdir, [failing, child])

    run = procs.start(workdir, dag)
    run.add_workers(1, procs.spec())
    follower = makeflowlog.LogFollower(run.paths.makeflowlog)
    wait_until(lambda: follower.update() and follower.stuck_for() > 1.5, timeout=15)
    assert run.poll() is None, "makeflow was expected to spin, not to exit"

    run.stop(grace=5)
    progress = follower.update()
    assert progress.ended == "ABORTED"
    assert makeflowlog.outcome(progress) == "failed"
    assert makeflowlog.failure_detail(workdir, dag).exit_code == 3


def test_the_retry_count_bounds_the_attempts(procs, workdir, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    dag = write_dag(workdir, [marker_rule("flaky", markers, script="exit 7")])

    run = procs.start(workdir, dag, retry_count=2)
    run.add_workers(1, procs.spec())
    follow_to_end(run)

    assert runs_of(markers, "flaky") == 3
    (rule,) = makeflowlog.read_rules(workdir, dag)
    assert (rule.attempts, rule.exit_code, rule.state) == (3, 7, "failed")


def test_stop_mid_run_leaves_no_makeflow_orted_or_task_and_the_log_ends_aborted(
    procs, workdir, tmp_path, caplog
):
    markers = tmp_path / "markers"
    markers.mkdir()
    sleepers = [marker_rule(f"s{n}", markers, script="sleep 60") for n in range(2)]
    dag = write_dag(workdir, sleepers)
    run = procs.start(workdir, dag)
    run.add_workers(2, procs.spec())
    wait_until(lambda: runs_of(markers, "s0") and runs_of(markers, "s1"), timeout=10)
    shells = [int((markers / f"s{n}").read_text()) for n in range(2)]
    tasks = [p for shell in shells for p in [process_id(shell), *children(shell)]]
    assert tasks and all(is_alive(p) for p in tasks if p)
    own = makeflow_processes_of(run)
    assert len(own) == (3 if run.confined else 2), "(bubblewrap,) makeflow and its orted"
    assert run.makeflow in own
    workers = list(run.workers)

    code = run.stop(grace=10)

    # Makeflow notices SIGTERM only when its 5-second wait for Work Queue returns; it then
    # exits by itself (1) within the grace: never SIGKILLed (-9), never said to ignore SIGTERM.
    assert code == 1
    assert "ignored SIGTERM" not in caplog.text
    wait_until(lambda: not any(is_alive(p) for p in tasks if p), timeout=5)
    assert not any(is_alive(p) for p in own)
    assert all(worker.poll() is not None for worker in workers)
    progress = makeflowlog.read_progress(run.paths.makeflowlog)
    assert progress.ended == "ABORTED"
    assert makeflowlog.outcome(progress) == "aborted"


def test_resume_after_sigkill_skips_completed_rules(procs, workdir, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    ids = [f"r{n}" for n in range(5)]
    dag = write_dag(workdir, [marker_rule(i, markers, script="sleep 0.4") for i in ids])

    run = procs.start(workdir, dag)
    run.add_workers(1, procs.spec())
    follower = makeflowlog.LogFollower(run.paths.makeflowlog)

    def two_done_and_the_rule_in_flight_begun() -> bool:
        # Makeflow logs a rule running when it hands it to the worker, before its shell runs:
        # killed in between, that attempt would leave no marker (it failed here under load).
        progress = follower.update()
        running = [node for node, state in follower.states.items() if state == "running"]
        return progress.complete >= 2 and all(runs_of(markers, f"r{n}") for n in running)

    wait_until(two_done_and_the_rule_in_flight_begun, timeout=15)
    os.killpg(run.pid, signal.SIGKILL)
    assert run.wait(timeout=5) == -signal.SIGKILL
    done_before = {node for node, state in follower.states.items() if state == "complete"}
    assert follower.update().ended is None

    again = procs.start(workdir, dag)
    again.add_workers(1, procs.spec())
    progress = follow_to_end(again)

    assert makeflowlog.outcome(progress) == "success"
    assert progress.runs == 2
    for rule in makeflowlog.read_rules(workdir, dag):
        assert runs_of(markers, rule.rule) == (1 if rule.node_id in done_before else rule.attempts)
    # One worker with one core: at most the one rule in flight ran twice.
    assert 5 <= sum(runs_of(markers, i) for i in ids) <= 6


def test_two_makeflows_started_at_the_same_moment_both_come_up(procs, tmp_path):
    dags = []
    for name in ("one", "two"):
        folder = tmp_path / name
        dags.append((folder, write_dag(folder, [logged_rule("r", "echo r > r.txt", ["r.txt"])])))
    barrier = threading.Barrier(2)
    runs, errors = [], []

    def start(folder, dag):
        barrier.wait()
        try:
            # Not tied to this thread: a parent-death signal fires when the starting thread
            # ends, which here is at once (the test follows the runs from the main thread).
            runs.append(procs.start(folder, dag, port_range=(20500, 20510), die_with_parent=False))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=item) for item in dags]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len({run.port for run in runs}) == 2
    for run in runs:
        run.add_workers(1, procs.spec())
    for run in runs:
        assert makeflowlog.outcome(follow_to_end(run)) == "success"


def test_start_gives_up_after_its_retries_when_no_port_is_free(procs, workdir, caplog):
    dag = write_dag(workdir, [logged_rule("r", "true", [])])
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StartupError, match="Could not create work_queue") as raised:
            procs.start(workdir, dag, port_range=(port, port), attempts=3)
    # Three starts, each logged, then it gave up.
    assert "after 3 attempts" in str(raised.value)
    assert [f"start {n}/3 failed" in caplog.text for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert not (workdir / f"{dag}.makeflowlog").exists()


def test_a_broken_workflow_fails_at_once_with_makeflow_words(procs, workdir, caplog):
    (workdir / "broken.mf.json").write_text('{"rules": [ {"command": ')
    # Makeflow raises SIGTERM on itself (143 in a shell).
    with pytest.raises(StartupError, match=r"exit code -15: .*parse error") as raised:
        procs.start(workdir, "broken.mf.json", attempts=3)
    # A parse error is not retried: the first start's failure is final (its twin above shows
    # that retries are logged and counted).
    assert "attempts" not in str(raised.value)
    assert "start 1/3 failed" not in caplog.text, "a parse error is not retried"


def test_a_worker_with_a_wrong_password_never_runs_a_task(procs, workdir, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    dag = write_dag(workdir, [marker_rule("r", markers)])
    run = procs.start(workdir, dag)
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    intruder = procs.track(
        start_worker(
            host="127.0.0.1",
            port=run.port,
            password_file=wrong,
            cores=1,
            scratch_dir=tmp_path / "intruder",
            idle_timeout=30,
        )
    )
    # And one with no password at all (started by hand: the service never starts such a worker).
    (tmp_path / "anonymous").mkdir()
    anonymous = procs.track(
        subprocess.Popen(
            [WORKER, "--idle-timeout=30", "-s", str(tmp_path / "anonymous"),
             "127.0.0.1", str(run.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    )  # fmt: skip
    time.sleep(3)
    assert runs_of(markers, "r") == 0
    assert makeflowlog.read_progress(run.paths.makeflowlog).complete == 0
    assert anonymous.poll() is None or anonymous.returncode != 0
    events = [line for line in run.paths.transactions.read_text().splitlines() if line[:1] != "#"]
    assert not [line for line in events if " WORKER " in line or " RUNNING " in line]
    assert intruder.poll() is None, "it keeps knocking; it is stopped by the fixture"

    run.add_workers(1, procs.spec())
    assert makeflowlog.outcome(follow_to_end(run)) == "success"
    assert runs_of(markers, "r") == 1


def test_the_tmpdir_holds_mpi_leftovers_until_cleanup(procs, workdir):
    dag = write_dag(workdir, [logged_rule("r", "true", [])])
    run = procs.start(workdir, dag)
    run.add_workers(1, procs.spec())
    follow_to_end(run)
    run.stop()
    assert any(path.name.startswith("ompi.") for path in run.tmpdir.iterdir())
    run.cleanup_tmp()
    assert not run.tmpdir.exists()


def test_a_catalog_worker_finds_a_manager_already_advertised(procs, workdir, tmp_path):
    # A deployment of its own: records of the managers of earlier tests outlive them in the
    # catalog, and a worker trying those first would be late.
    deployment = f"catalog{secrets.token_hex(3)}"
    dag = write_dag(workdir, [logged_rule("r", "true", [])])
    run = procs.start(workdir, dag, project=project_name(deployment, "job"))
    wait_until(lambda: managers(procs.catalog, run.project), timeout=5)
    worker = procs.track(
        start_worker(
            catalog=procs.catalog,
            project_regex=project_regex(deployment),
            password_file=procs.password_file,
            cores=1,
            scratch_dir=tmp_path / "catalog-worker",
            idle_timeout=30,
        )
    )
    assert makeflowlog.outcome(follow_to_end(run, timeout=20)) == "success"
    stop_process(worker, grace=1)
    assert session_members(worker.pid) == []


def test_stopping_the_factory_leaves_none_of_its_workers(procs, workdir, tmp_path):
    deployment = f"factory{secrets.token_hex(3)}"
    dag = write_dag(workdir, [logged_rule("r", "true", [])])
    run = procs.start(workdir, dag, project=project_name(deployment, "job"))
    wait_until(lambda: managers(procs.catalog, run.project), timeout=5)
    factory = procs.factory(deployment, tmp_path, idle_timeout=30)
    assert makeflowlog.outcome(follow_to_end(run, timeout=20)) == "success"
    workers = [p for p in session_members(factory.pid) if p.pid != factory.pid]
    assert workers, "the factory's minimum worker should be running"
    stop_process(factory, grace=2)
    assert not any(is_alive(p) for p in workers)


def test_worker_arguments_must_pick_one_way_to_find_managers(tmp_path):
    with pytest.raises(ValueError, match="either"):
        start_worker(
            catalog="127.0.0.1:1",
            project_regex=".*",
            host="127.0.0.1",
            port=1,
            password_file=tmp_path / "pw",
            cores=1,
            scratch_dir=tmp_path,
            idle_timeout=1,
        )


def test_prepare_resume_removes_failed_folders_only_without_a_log(workdir):
    dag = "x.mf.json"
    (workdir / "makeflow.failed.3").mkdir()
    (workdir / f"{dag}.port").write_text("9999\n")
    (workdir / f"{dag}.makeflowlog").write_text("# STARTED 1\n")
    prepare_resume(workdir, dag)
    assert (workdir / "makeflow.failed.3").exists()
    assert not (workdir / f"{dag}.port").exists()
    (workdir / f"{dag}.makeflowlog").unlink()
    prepare_resume(workdir, dag)
    assert not (workdir / "makeflow.failed.3").exists()


def small_pool(procs, deployment: str, tmp_path) -> DirectPool:
    """Three places, two per manager, for this deployment's managers."""
    return DirectPool(
        catalog=procs.catalog,
        project_regex=project_regex(deployment),
        spec=procs.spec(scratch_dir=tmp_path / "pool"),
        max_workers=3,
        per_manager=2,
    )


def test_the_direct_pool_serves_a_new_manager_within_seconds(procs, workdir, tmp_path):
    deployment = f"pool{secrets.token_hex(3)}"
    rules = [logged_rule(f"r{n}", "sleep 0.3", []) for n in range(4)]
    dag = write_dag(workdir, rules)
    pool = small_pool(procs, deployment, tmp_path)
    try:
        run = procs.start(workdir, dag, project=project_name(deployment, "job"))
        started, shown = [], []
        while run.poll() is None:
            # Whether the catalog showed the manager with work before this step.
            records = managers(procs.catalog, run.project)
            shown.append(any(r.get("tasks_waiting") or r.get("tasks_running") for r in records))
            started.append(pool.step())
            time.sleep(0.2)
            assert time.time() - run.started_at < 20
        assert sum(started) == 2, "two workers for this manager, not one per step"
        # Served at once: by the first step that saw its work, not a later round.
        assert True in shown, "the catalog never showed the manager's work"
        assert sum(started[: shown.index(True) + 1]) >= 1, (shown, started)
        rules = makeflowlog.read_rules(workdir, dag)
        assert {r.state for r in rules} == {"complete"}
        # Its workers left with their manager, and its stale record starts nothing new.
        wait_until(lambda: pool.step() == 0 and not pool._reap(), timeout=10)
    finally:
        pool.stop()


def test_the_direct_pool_sizes_a_fan_out_from_the_width_hint(procs, workdir, tmp_path):
    """One rule, then four: the manager's catalog record says 1 task for a minute, the width
    hint in its project name says 4, and the pool gives it its two places at once."""
    deployment = f"fan{secrets.token_hex(3)}"
    first = logged_rule("first", "sleep 0.5 && echo x > first.txt", ["first.txt"])
    fan = [
        logged_rule(
            f"fan{n}", f"sleep 1 && cat first.txt > fan{n}.txt", [f"fan{n}.txt"], ["first.txt"]
        )
        for n in range(4)
    ]
    dag = write_dag(workdir, [first, *fan])
    pool = small_pool(procs, deployment, tmp_path)
    try:
        run = procs.start(workdir, dag, project=project_name(deployment, "job", width=4))
        while run.poll() is None:
            pool.step()
            time.sleep(0.2)
            assert time.time() - run.started_at < 30
        rules = {r.rule: r for r in makeflowlog.read_rules(workdir, dag)}
        hosts = {rules[f"fan{n}"].host for n in range(4)}
        assert len(hosts) == 2, "the fan-out ran on two workers"
    finally:
        pool.stop()


def test_project_names_carry_the_width_hint_and_still_match():
    name = project_name("dep", "123e4567-e89b-12d3-a456-426614174000", width=21)
    assert name == "lmweb-dep-123e4567-e89b-12d3-a456-426614174000-w21"
    assert width_hint(name) == 21
    assert width_hint(project_name("dep", "job")) is None
    assert re.fullmatch(project_regex("dep"), name)
    base = project_name("dep", "123e4567-e89b-12d3-a456-426614174000")
    assert is_width_variant(name, base)
    assert not is_width_variant(base + "-w21x", base)
    assert not is_width_variant(base + "0-w1", base)


def test_the_direct_pool_frees_the_places_of_a_manager_that_died(procs, workdir, tmp_path):
    deployment = f"gone{secrets.token_hex(3)}"
    dag = write_dag(workdir, [logged_rule(f"r{n}", "sleep 30", []) for n in range(2)])
    pool = DirectPool(
        catalog=procs.catalog,
        project_regex=project_regex(deployment),
        spec=procs.spec(scratch_dir=tmp_path / "pool", connect_timeout=120, idle_timeout=120),
        max_workers=2,
    )
    try:
        run = procs.start(workdir, dag, project=project_name(deployment, "job"))
        wait_until(lambda: pool.step() or pool._reap() == 2, timeout=10)
        workers = [p for popens in pool.workers.values() for p in popens]
        assert len(workers) == 2
        os.killpg(run.pid, signal.SIGKILL)  # the manager dies without a word to its workers
        run.popen.wait(timeout=10)
        # Within a probe period the pool stops those workers and has room again.
        wait_until(lambda: (pool.step(), pool._reap())[1] == 0, timeout=PROBE_SECONDS + 5)
        assert all(worker.poll() is not None for worker in workers)
    finally:
        pool.stop()


def _listen_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, from /proc/net/tcp (IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port_hex = fields[1].split(":")
        if fields[3] == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # noqa: S104 (on purpose)
def test_the_catalog_server_listens_where_configured(tmp_path, host):
    port = free_port()
    server = start_catalog_server(
        port=port, host=host, history_dir=tmp_path / "history", log_path=tmp_path / "log"
    )
    try:
        wait_for_catalog(f"127.0.0.1:{port}", timeout=10)
        assert _listen_addresses(port) == {host}
    finally:
        stop_process(server, grace=2)
