"""Parsing makeflow and Work Queue logs recorded from real runs here (tests/runner/data).

j2: four rules, one succeeds, three fail after one retry (exit 3 with stderr, exit 5 without
logs, exit 4 with logs); R1: five rules, makeflow SIGKILLed after two, then resumed; j3: a rule
fails with a dependent, makeflow spins until SIGTERM (log ends ABORTED).
"""

import shutil
from pathlib import Path

import pytest

from jobs.cctools import log as makeflowlog
from jobs.cctools.log import (
    LogFollower,
    Marker,
    NodeChange,
    Progress,
    Record,
    node_change,
    outcome,
    read_progress,
    tokenize,
)

DATA = Path(__file__).parent / "data"
DAG = "dag.json"


def copy_of(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / name, target, symlinks=True)
    return target


def test_a_missing_log_reads_as_not_started(tmp_path):
    progress = read_progress(tmp_path / "nothing.makeflowlog")
    assert progress == Progress()
    assert outcome(progress) == "incomplete"


def test_a_completed_run_with_failed_rules_is_a_failure():
    progress = read_progress(DATA / "j2" / f"{DAG}.makeflowlog")
    assert (progress.total, progress.complete, progress.failed) == (4, 1, 3)
    assert progress.ended == "COMPLETED"
    assert outcome(progress) == "failed"


def test_a_resumed_run_counts_both_starts_and_succeeds():
    progress = read_progress(DATA / "R1" / f"{DAG}.makeflowlog")
    assert progress.runs == 2
    assert (progress.total, progress.complete, progress.ended) == (5, 5, "COMPLETED")
    assert outcome(progress) == "success"


def test_an_aborted_run_with_a_failed_rule_is_a_failure_not_an_abort():
    progress = read_progress(DATA / "j3" / f"{DAG}.makeflowlog")
    assert progress.ended == "ABORTED"
    assert (progress.waiting, progress.failed) == (1, 1)
    assert outcome(progress) == "failed"


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (Progress(total=3, complete=3, started=True, ended="COMPLETED"), "success"),
        (Progress(total=3, complete=2, failed=1, started=True, ended="COMPLETED"), "failed"),
        (Progress(total=3, complete=1, aborted=2, started=True, ended="ABORTED"), "aborted"),
        (Progress(total=3, complete=1, waiting=2, started=True, ended="ABORTED"), "aborted"),
        (Progress(total=3, complete=1, running=2, started=True), "incomplete"),
        (Progress(total=0, started=True, ended="COMPLETED"), "success"),
        (Progress(total=0, started=True, ended="FAILED"), "incomplete"),
    ],
)
def test_outcome_is_success_only_when_every_rule_completed(progress, expected):
    assert outcome(progress) == expected


def test_the_follower_reads_only_complete_lines_and_agrees_with_a_full_read(tmp_path):
    source = (DATA / "R1" / f"{DAG}.makeflowlog").read_bytes()
    log = tmp_path / "grow.makeflowlog"
    log.write_bytes(b"")
    follower = LogFollower(log)
    seen_runs = []
    # Append in odd-sized pieces so that lines arrive cut in the middle.
    for start in range(0, len(source), 37):
        with log.open("ab") as handle:
            handle.write(source[start : start + 37])
        seen_runs.append(follower.update().runs)
    assert follower.update() == read_progress(DATA / "R1" / f"{DAG}.makeflowlog")
    assert seen_runs == sorted(seen_runs)
    assert follower.states == dict.fromkeys(range(5), "complete")


def test_a_cut_last_line_is_not_read_until_it_is_whole(tmp_path):
    log = tmp_path / "cut.makeflowlog"
    log.write_text("# STARTED 1\n1795598938593856 3 1 1 3 1 0 0 0 4\n1795598938665692 0 2 3 1 2")
    follower = LogFollower(log)
    assert (follower.update().running, follower.update().complete) == (1, 0)
    with log.open("a") as handle:
        handle.write(" 1 0 0 4\n")
    assert (follower.update().running, follower.update().complete) == (2, 1)


def test_the_follower_starts_over_when_the_log_is_replaced(tmp_path):
    log = tmp_path / "again.makeflowlog"
    shutil.copy(DATA / "j2" / f"{DAG}.makeflowlog", log)
    follower = LogFollower(log)
    assert follower.update().failed == 3
    log.unlink()
    assert follower.update() == Progress()
    log.write_text("# STARTED 5\n")
    assert follower.update() == Progress(started=True, runs=1)


def test_stuck_needs_time_without_events(tmp_path):
    log = tmp_path / "stuck.makeflowlog"
    shutil.copy(DATA / "j3" / f"{DAG}.makeflowlog", log)
    text = log.read_text()
    # The same log as makeflow left it while it spun: before the ABORTED marker.
    log.write_text(text[: text.index("# ABORTED")])
    follower = LogFollower(log)
    assert follower.update().stuck
    first = follower.stuck_for()
    assert follower.update().stuck
    assert follower.stuck_for() >= first
    with log.open("a") as handle:
        handle.write("# ABORTED 1795598952853640\n")
    assert not follower.update().stuck
    assert follower.stuck_for() == 0.0


def test_rules_join_the_verbose_log_with_work_queue_transactions():
    rules = makeflowlog.read_rules(DATA / "j2", DAG)
    assert [rule.node_id for rule in rules] == [0, 1, 2, 3]
    first, second, third, fourth = rules
    assert (first.state, first.exit_code, first.attempts, first.rule) == (
        "complete",
        0,
        1,
        "node-0",
    )
    assert first.command == "echo a > a.txt"
    assert first.host == "127.0.0.1:60774"
    assert first.started_at <= first.finished_at
    assert (second.rule, second.state, second.exit_code, second.attempts) == ("r2", "failed", 3, 2)
    assert second.sources == ["a.txt"]
    assert set(second.targets) == {"b.txt", "logs/r2.stdout", "logs/r2.stderr"}
    assert (third.exit_code, third.result) == (5, "OUTPUT_MISS")
    assert (fourth.rule, fourth.exit_code) == ("r4", 4)


def test_rules_of_a_resumed_run_keep_the_last_task_and_count_only_real_attempts():
    rules = makeflowlog.read_rules(DATA / "R1", DAG)
    assert all(rule.state == "complete" and rule.exit_code == 0 for rule in rules)
    # Node 2 was running when makeflow was killed; 3 and 4 were submitted but never ran.
    assert [rule.attempts for rule in rules] == [1, 1, 2, 1, 1]
    # Task ids restart at 1 in the second run; hosts differ between the two runs' workers.
    assert [rule.task_id for rule in rules] == [5, 4, 3, 2, 1]
    assert rules[0].host != rules[4].host


def test_rules_of_a_missing_log_are_none(tmp_path):
    assert makeflowlog.read_rules(tmp_path, DAG) == []
    assert makeflowlog.failure_detail(tmp_path, DAG) is None


def test_failure_detail_gives_exit_code_and_stderr_of_the_first_failed_rule():
    detail = makeflowlog.failure_detail(DATA / "j2", DAG)
    assert detail is not None
    assert (detail.node_id, detail.rule, detail.exit_code, detail.attempts) == (1, "r2", 3, 2)
    assert detail.stderr_tail == "boom-line1\nboom-line2\n"
    assert "exit 3" in detail.command


def test_failure_detail_falls_back_on_the_task_output_makeflow_printed(tmp_path):
    workdir = copy_of("j2", tmp_path)
    shutil.rmtree(workdir / "makeflow.failed.1")
    shutil.rmtree(workdir / "makeflow.failed.3")
    # Only node 2 (no log files) is left failed if the others completed; fake that in the log.
    log = workdir / f"{DAG}.makeflowlog"
    log.write_text(log.read_text().replace("\n1795598938680280 1 3 ", "\n1795598938680280 1 2 "))
    log.write_text(log.read_text().replace("\n1795598938701287 3 3 ", "\n1795598938701287 3 2 "))
    detail = makeflowlog.failure_detail(workdir, DAG)
    assert (detail.node_id, detail.exit_code) == (2, 5)
    assert detail.stderr_tail == "nolog-out\nnolog-err"


def test_failure_detail_reads_the_exit_code_from_info_json_without_the_work_queue_log(tmp_path):
    workdir = copy_of("j2", tmp_path)
    (workdir / f"{DAG}.wqlog.tr").unlink()
    detail = makeflowlog.failure_detail(workdir, DAG)
    # INFO.json escapes single quotes as \' (not JSON): it must still be read.
    assert (detail.rule, detail.exit_code, detail.host) == ("r2", 3, None)


def test_failure_detail_tail_is_at_most_4_kb(tmp_path):
    workdir = copy_of("j2", tmp_path)
    stderr = workdir / "makeflow.failed.1" / "logs" / "r2.stderr"
    stderr.write_text("".join(f"line {n}\n" for n in range(5000)))
    detail = makeflowlog.failure_detail(workdir, DAG)
    assert len(detail.stderr_tail.encode()) <= 4096
    assert detail.stderr_tail.endswith("line 4999\n")


# ---------------------------------------------------------------------------------------------
# The one tokenizer, under the follower, read_rules and the transaction log alike.


def test_the_tokenizer_splits_a_marker_at_its_first_space_or_at_a_tab_before_it():
    assert tokenize("# STARTED 1795599070932383") == Marker("STARTED", "1795599070932383")
    assert tokenize("# NODE\t4\techo a b\tc") == Marker("NODE", "4\techo a b\tc")
    assert tokenize("# PARENTS\t4") == Marker("PARENTS", "4")


def test_the_tokenizer_reads_time_stamped_records_of_both_logs():
    assert tokenize("1795599070932383 11981 MANAGER START") == Record(
        1795599070932383, ("11981", "MANAGER", "START")
    )
    line = "1795599071000000 1 2 7 0 1 3 0 0 4"
    assert node_change(tokenize(line)) == NodeChange(1795599071000000, 1, 2, 7, (0, 1, 3, 0, 0, 4))
    # A transaction log record is no node change, though the tokenizer reads it the same way.
    assert node_change(tokenize("1795599070932383 11981 MANAGER START")) is None


@pytest.mark.parametrize(
    "line",
    ["", "#", "#NODE\t1", "x 1 2", "12ab 1 2", " 1 2"],
)
def test_the_tokenizer_skips_what_is_neither_a_marker_nor_a_record(line):
    assert tokenize(line) is None
