"""The direct pool shares its workers fairly: the split itself (a pure function), then real
makeflows, where a second user's job gets a worker quickly from a wide job holding the pool,
and no rule is lost or run twice."""

import secrets
import time

import pytest

from jobs.cctools import log as makeflowlog
from jobs.cctools.pool import DirectPool, fair_shares
from jobs.cctools.projects import project_name, project_regex

from .conftest import logged_rule, write_dag


def test_each_user_gets_an_equal_part_split_among_their_jobs():
    demands = {"a1": 200, "a2": 200, "a3": 200, "b1": 20}
    users = {"a1": "ann", "a2": "ann", "a3": "ann", "b1": "bob"}
    assert fair_shares(12, demands, users) == {"a1": 2, "a2": 2, "a3": 2, "b1": 6}


def test_what_one_user_cannot_use_goes_to_the_others():
    demands = {"a1": 200, "a2": 200, "b1": 2}
    users = {"a1": "ann", "a2": "ann", "b1": "bob"}
    assert fair_shares(10, demands, users) == {"a1": 4, "a2": 4, "b1": 2}


def test_no_job_gets_more_than_its_demand_and_places_may_stay_free():
    assert fair_shares(10, {"a": 3, "b": 1}) == {"a": 3, "b": 1}
    assert fair_shares(5, {"a": 0, "b": 7}) == {"a": 0, "b": 5}


def test_without_users_each_job_is_its_own_user():
    assert fair_shares(5, dict.fromkeys("abcde", 20)) == dict.fromkeys("abcde", 1)
    # The same jobs of one user: the same split, among that user's jobs.
    assert fair_shares(5, dict.fromkeys("abcde", 20), dict.fromkeys("abcde", "u")) == (
        dict.fromkeys("abcde", 1)
    )


def test_an_odd_place_goes_to_the_job_listed_first_every_time():
    demands = {"old": 20, "new": 20}
    assert fair_shares(5, demands) == {"old": 3, "new": 2}
    assert fair_shares(5, demands) == {"old": 3, "new": 2}
    assert fair_shares(5, {"new": 20, "old": 20}) == {"new": 3, "old": 2}


def test_a_user_with_many_jobs_counts_once():
    demands = {f"a{n}": 200 for n in range(10)} | {"b": 20}
    users = {f"a{n}": "ann" for n in range(10)} | {"b": "bob"}
    shares = fair_shares(5, demands, users)
    assert shares["b"] == 2  # ann's ten jobs share the other 3 (ann was listed first)
    assert sum(shares.values()) == 5


def test_no_place_no_share():
    assert fair_shares(0, {"a": 3}) == {"a": 0}
    assert fair_shares(4, {}) == {}


def marked_rule(rule_id: str, seconds: float, marks) -> dict:
    """A rule that notes in `marks` (outside any sandbox) when it starts and when it ends."""
    return logged_rule(
        rule_id,
        f'echo "start {rule_id} $(date +%s.%N)" >> {marks} && sleep {seconds} && '
        f'echo "end {rule_id} $(date +%s.%N)" >> {marks}',
        [],
    )


def drive(pool: DirectPool, until, *, timeout: float) -> None:
    """What serve() does: a step every 0.25 s, leaving workers watched in between."""
    deadline = time.monotonic() + timeout
    next_step = 0.0
    while not until():
        assert time.monotonic() < deadline, pool.shares()
        if time.monotonic() >= next_step:
            pool.step()
            next_step = time.monotonic() + 0.25
        else:
            pool.watch()
        time.sleep(0.02 if pool.leaving else 0.05)


@pytest.mark.integration
def test_a_second_users_job_gets_a_worker_from_a_wide_job_quickly_and_no_rule_is_lost(
    procs, tmp_path
):
    deployment = f"fair{secrets.token_hex(3)}"
    marks = tmp_path / "marks.log"
    marks.touch()
    wide_dir, small_dir = tmp_path / "wide", tmp_path / "small"
    wide_dag = write_dag(wide_dir, [marked_rule(f"w{n}", 1.5, marks) for n in range(12)])
    small_dag = write_dag(small_dir, [marked_rule(f"s{n}", 0.5, marks) for n in range(2)])
    owners: dict[tuple[str, int], str] = {}
    pool = DirectPool(
        catalog=procs.catalog,
        project_regex=project_regex(deployment),
        spec=procs.spec(scratch_dir=tmp_path / "pool"),
        max_workers=2,
        trust=lambda: dict(owners),
    )
    try:
        wide = procs.start(wide_dir, wide_dag, project=project_name(deployment, "wide", 12))
        owners[(wide.project, wide.port)] = "ann"

        def wide_holds_the_pool() -> bool:
            return pool.shares().get(wide.project, (0, 0))[0] == 2 and all(
                pool._state[p.pid].look() for p in pool.workers[("127.0.0.1", wide.port)]
            )

        drive(pool, wide_holds_the_pool, timeout=30)
        small = procs.start(small_dir, small_dag, project=project_name(deployment, "small", 2))
        owners[(small.project, small.port)] = "bob"
        drive(pool, lambda: "start s" in marks.read_text(), timeout=30)
        first_small = time.time() - small.started_at
        assert pool.shares()[wide.project] == (1, 1)
        drive(pool, lambda: small.poll() is not None, timeout=60)
        # The small job is gone: the wide one takes its second worker back.
        drive(pool, lambda: pool.shares().get(wide.project) == (2, 2), timeout=10)
        drive(pool, lambda: wide.poll() is not None, timeout=90)
    finally:
        pool.stop()

    # Within the wide job's task length (1.5 s) and start-up, not after the wide job.
    assert first_small < 4.0, first_small
    for workdir, dag in ((wide_dir, wide_dag), (small_dir, small_dag)):
        assert makeflowlog.outcome(makeflowlog.read_progress(workdir / f"{dag}.makeflowlog")) == (
            "success"
        )
        assert {rule.state for rule in makeflowlog.read_rules(workdir, dag)} == {"complete"}
    lines = [line.split() for line in marks.read_text().splitlines()]
    ends = [rule for word, rule, _ in lines if word == "end"]
    starts = [rule for word, rule, _ in lines if word == "start"]
    assert sorted(ends) == sorted({*ends}) and len(ends) == 14, "each rule ended once"
    assert pool.taken_back["mid-task"] == 0
    # A worker taken back at the end of its task may have been sent the next one: that task
    # goes back to its manager's queue, and runs again if it had started.
    assert len(starts) - len(ends) <= pool.taken_back["between tasks"]
    assert pool.taken_back["between tasks"] + pool.taken_back["idle"] >= 1


@pytest.mark.integration
def test_a_job_that_narrowed_gives_its_idle_worker_to_a_waiting_job_at_once(procs, tmp_path):
    """A two-wide job whose short rule ended keeps one worker busy and one idle: a job that
    comes then gets the idle one, not a wait for the long rule, and the long rule runs once."""
    deployment = f"narrow{secrets.token_hex(3)}"
    marks = tmp_path / "marks.log"
    marks.touch()
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dag = write_dag(
        first_dir, [marked_rule("short", 0.2, marks), marked_rule("long", 8, marks)]
    )
    second_dag = write_dag(second_dir, [marked_rule("next", 0.5, marks)])
    pool = DirectPool(
        catalog=procs.catalog,
        project_regex=project_regex(deployment),
        spec=procs.spec(scratch_dir=tmp_path / "pool"),
        max_workers=2,
    )
    try:
        first = procs.start(first_dir, first_dag, project=project_name(deployment, "first", 2))
        drive(pool, lambda: "end short" in marks.read_text(), timeout=30)
        assert pool.shares()[first.project][0] == 2, "both its workers stay while none waits"
        second = procs.start(second_dir, second_dag, project=project_name(deployment, "next", 1))
        drive(pool, lambda: "end next" in marks.read_text(), timeout=30)
        waited = time.time() - second.started_at
        assert first.poll() is None, "the long rule still runs"
        drive(pool, lambda: first.poll() is not None, timeout=60)
    finally:
        pool.stop()

    assert waited < 5.0, waited  # the long rule had 6 s or more left
    assert pool.taken_back == {"idle": 1, "between tasks": 0, "mid-task": 0}
    lines = marks.read_text().split()
    assert lines.count("long") == 2 and lines.count("short") == 2, "each rule ran once"
    for workdir, dag in ((first_dir, first_dag), (second_dir, second_dag)):
        assert {rule.state for rule in makeflowlog.read_rules(workdir, dag)} == {"complete"}


@pytest.mark.integration
def test_the_last_resort_stops_a_rule_mid_run_counts_it_and_the_rule_runs_again(procs, tmp_path):
    """Rules far longer than the pool may wait: after `preempt_after` a worker is stopped in
    the middle of its rule, which makeflow gets back and runs again to the end."""
    deployment = f"preempt{secrets.token_hex(3)}"
    marks = tmp_path / "marks.log"
    marks.touch()
    long_dir, next_dir = tmp_path / "long", tmp_path / "next"
    long_dag = write_dag(long_dir, [marked_rule(f"l{n}", 6, marks) for n in range(2)])
    next_dag = write_dag(next_dir, [marked_rule("n", 0.2, marks)])
    pool = DirectPool(
        catalog=procs.catalog,
        project_regex=project_regex(deployment),
        spec=procs.spec(scratch_dir=tmp_path / "pool"),
        max_workers=2,
        preempt_after=1.0,
    )
    try:
        long = procs.start(long_dir, long_dag, project=project_name(deployment, "long", 2))
        drive(pool, lambda: marks.read_text().count("start") == 2, timeout=30)
        waiting = procs.start(next_dir, next_dag, project=project_name(deployment, "next", 1))
        drive(pool, lambda: "end n" in marks.read_text(), timeout=30)
        waited = time.time() - waiting.started_at
        drive(pool, lambda: long.poll() is not None, timeout=90)
    finally:
        pool.stop()

    assert waited < 5.0, waited  # not the 6 s of the long rules
    assert pool.taken_back["mid-task"] == 1 == pool.preempted
    lines = [line.split()[:2] for line in marks.read_text().splitlines()]
    assert sorted(rule for word, rule in lines if word == "end") == ["l0", "l1", "n"]
    starts = sorted(rule for word, rule in lines if word == "start")
    assert starts in (["l0", "l0", "l1", "n"], ["l0", "l1", "l1", "n"]), "one ran again"
    assert {rule.state for rule in makeflowlog.read_rules(long_dir, long_dag)} == {"complete"}
