"""selftest: N sleeping tasks and a gather that stays small for any N."""

import shlex
from pathlib import Path

import pytest

import translators
from translators.selftest import workflow as selftest


def plan(**params):
    return translators.get("selftest").plan({"workflow": "selftest", "params": params}, {}, [])


def gathered(rule):
    """What a gather reads besides the report's configuration and script."""
    return [path for path in rule["inputs"] if not path.startswith("work/config/report/")]


def commands(stage):
    return [shlex.split(rule["command"]) for rule in stage.makeflow["rules"]]


def test_each_task_sleeps_then_writes_its_own_file():
    stage = plan(tasks=3, seconds=2.5)
    rules = stage.makeflow["rules"]
    assert len(rules) == 4
    for number, rule in enumerate(rules[:3], start=1):
        name = f"task-{number:05d}"
        tokens = shlex.split(rule["command"])
        body = tokens[tokens.index("{") + 1 : tokens.index(";")]
        assert body == ["sleep", "2.5", "&&", "echo", name, "ok", ">", f"work/{name}.txt"]
        assert rule["inputs"] == []
        assert rule["outputs"][0] == f"work/{name}.txt"
    gather = rules[-1]
    assert gathered(gather) == [f"work/task-{n:05d}.txt" for n in (1, 2, 3)]
    assert "outputs/selftest.txt" in gather["outputs"]
    assert "outputs/report.html" in gather["outputs"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "1"), (0, "0"), (0.5, "0.5"), (600, "600"), (1e-05, "0"), (0.1234, "0.123"), (10, "10")],
)
def test_seconds_are_written_without_exponents(seconds, text):
    assert selftest._seconds_arg(seconds) == text


def test_defaults_are_ten_one_second_tasks():
    stage = plan()
    sleeps = [c for c in commands(stage) if "sleep" in c]
    assert len(sleeps) == 10
    assert all(c[c.index("sleep") + 1] == "1" for c in sleeps)


def test_up_to_the_fan_in_one_gather_reads_every_task():
    stage = plan(tasks=selftest.GATHER_FANIN, seconds=0)
    rules = stage.makeflow["rules"]
    assert len(rules) == selftest.GATHER_FANIN + 1
    assert len(gathered(rules[-1])) == selftest.GATHER_FANIN


def test_past_the_fan_in_the_gather_goes_through_groups():
    stage = plan(tasks=selftest.GATHER_FANIN + 1, seconds=0)
    rules = stage.makeflow["rules"]
    assert len(rules) == selftest.GATHER_FANIN + 1 + 2 + 1
    assert gathered(rules[-1]) == ["work/gather-001.txt", "work/gather-002.txt"]


def test_the_largest_selftest_keeps_every_command_and_the_file_reasonable():
    stage = plan(tasks=10000, seconds=1)
    rules = stage.makeflow["rules"]
    assert len(rules) == 10000 + 100 + 1
    assert max(len(r["command"]) for r in rules) < 5000
    assert max(len(gathered(r)) for r in rules) <= selftest.GATHER_FANIN
    assert len(stage.dumps()) < 6_000_000
    task_outputs = {r["outputs"][0] for r in rules[:10000]}
    assert len(task_outputs) == 10000
    assert "work/task-10000.txt" in task_outputs


def test_failing_tasks_exit_non_zero_before_writing_their_file(tmp_path):
    import subprocess

    stage = translators.get("selftest").plan(
        {"workflow": "selftest", "params": {"tasks": 3, "seconds": 0, "fail": 1}}, {}, []
    )
    rules = {rule["outputs"][0]: rule["command"] for rule in stage.makeflow["rules"]}
    for number, expected in [(2, 0), (3, 3)]:
        target = f"work/task-{number:05d}.txt"
        done = subprocess.run(["/bin/sh", "-c", rules[target]], cwd=tmp_path, check=False)
        assert done.returncode == expected
        assert (tmp_path / target).exists() == (expected == 0)
    stderr = (tmp_path / "logs" / "task-00003.stderr").read_text()
    assert "fails on purpose" in stderr


def test_the_gather_also_writes_the_jobs_report(tmp_path):
    import subprocess
    import sys

    stage = plan(tasks=2, seconds=0)
    for name, text in stage.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    for rule in stage.makeflow["rules"]:
        done = subprocess.run(["/bin/sh", "-c", rule["command"]], cwd=tmp_path, env=env)
        assert done.returncode == 0, (tmp_path / "logs").joinpath("gather.stderr").read_text()
    report = (tmp_path / "outputs" / "report.html").read_text()
    assert "<h1>Self test</h1>" in report
    assert "selftest.txt" in report
    assert "<img" not in report, "selftest has nothing to draw"
