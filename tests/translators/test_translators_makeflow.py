"""The rule builder: quoting, log capture, path checks and DAG closure."""

import json
import shlex
import subprocess
import sys

import pytest

from translators.makeflow import Category, Command, Rule, check_path, render_makeflow

NASTY = [
    "with space",
    "it's",
    'say "hi"',
    "$HOME",
    "${PATH}",
    "$(touch pwned)",
    "`touch pwned`",
    "a;b",
    "x && touch pwned",
    "a|b",
    "star*",
    "~user",
    "back\\slash",
    "tab\there",
    "-n",
    "",
    "&&",
    "#not a comment",
    "ünï",
]
CATEGORIES = {"c": Category(cores=1, memory=10, disk=10)}


def expected_tokens(rule: Rule) -> list[str]:
    folders = sorted({p.rpartition("/")[0] for p in rule.all_outputs + rule.scratch} - {""})
    tokens = ["mkdir", "-p", "--", *folders, "&&", "{"]
    for index, command in enumerate(rule.commands):
        if index:
            tokens.append("&&")
        tokens += list(command.args)
        if command.stdout:
            tokens += [">", command.stdout]
    if rule.scratch:
        tokens += ["&&", "rm", "-f", "--", *rule.scratch]
    return [*tokens, ";", "}", ">", rule.logs[0], "2>", rule.logs[1]]


@pytest.mark.parametrize("value", NASTY)
def test_an_awkward_argument_stays_one_argument(value):
    rule = Rule("r", ["tool", value, "--flag", value], [], ["out/x"], "c")
    assert shlex.split(rule.command()) == expected_tokens(rule)
    assert shlex.split(Command(("tool", value)).render()) == ["tool", value]


@pytest.mark.parametrize("path", ["inputs/my pam.lmm", "inputs/it's $x;.lmm", 'inputs/"q".lmm'])
def test_an_awkward_path_stays_one_argument_everywhere(path):
    target = "outputs/" + path.split("/")[1]
    rule = Rule(
        "r",
        ["tool", path],
        [path],
        [target],
        "c",
        then=[Command(("cat", "--", path), stdout=target)],
        scratch=["work/" + path.split("/")[1]],
    )
    assert shlex.split(rule.command()) == expected_tokens(rule)
    assert rule.render()["inputs"] == [path]


def test_the_shell_hands_every_argument_over_unchanged(tmp_path):
    # A real /bin/sh run, as makeflow does it: nothing is expanded, split, or executed.
    script = "import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], 'w'))"
    rule = Rule(
        "echo-args",
        [sys.executable, "-c", script, "outputs/argv.json", *NASTY],
        [],
        ["outputs/argv.json", "outputs/echo.txt"],
        "c",
        then=[Command(("printf", "%s|", *NASTY), stdout="outputs/echo.txt")],
    )
    result = subprocess.run(
        ["/bin/sh", "-c", rule.command()], cwd=tmp_path, check=False, timeout=30
    )
    assert result.returncode == 0
    assert json.loads((tmp_path / "outputs/argv.json").read_text()) == NASTY
    assert (tmp_path / "outputs/echo.txt").read_text() == "".join(v + "|" for v in NASTY)
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "logs/echo-args.stdout").exists()
    assert (tmp_path / "logs/echo-args.stderr").exists()


def test_output_and_errors_land_in_the_rule_logs_and_a_failure_stops_the_chain(tmp_path):
    rule = Rule(
        "fails",
        ["sh", "-c", "echo out; echo err >&2; exit 3"],
        [],
        ["outputs/never.txt"],
        "c",
        then=[Command(("echo", "not reached"), stdout="outputs/never.txt")],
    )
    result = subprocess.run(["/bin/sh", "-c", rule.command()], cwd=tmp_path, check=False)
    assert result.returncode == 3
    assert (tmp_path / "logs/fails.stdout").read_text() == "out\n"
    assert (tmp_path / "logs/fails.stderr").read_text() == "err\n"
    assert not (tmp_path / "outputs/never.txt").exists()


def test_scratch_files_are_removed_after_success(tmp_path):
    rule = Rule(
        "tmp",
        ["touch", "work/a/scratch.txt"],
        [],
        ["outputs/done.txt"],
        "c",
        then=[["touch", "outputs/done.txt"]],
        scratch=["work/a/scratch.txt"],
    )
    subprocess.run(["/bin/sh", "-c", rule.command()], cwd=tmp_path, check=True)
    assert (tmp_path / "outputs/done.txt").exists()
    assert not (tmp_path / "work/a/scratch.txt").exists()


def test_a_rule_renders_its_logs_as_declared_outputs():
    rule = Rule("stats-observed", ["tool"], ["inputs/a"], ["outputs/b"], "c")
    assert rule.render() == {
        "command": rule.command(),
        "inputs": ["inputs/a"],
        "outputs": ["outputs/b", "logs/stats-observed.stdout", "logs/stats-observed.stderr"],
        "category": "c",
        "environment": {"LMWEB_RULE": "stats-observed"},
    }


@pytest.mark.parametrize(
    "path",
    ["/abs/file", "../up", "a/../b", "a/./b", "./a", "a//b", "a/", ".", "", "a\\b", "a\nb"],
)
def test_unsafe_paths_are_refused(path):
    with pytest.raises(ValueError):
        check_path(path)
    with pytest.raises(ValueError):
        Rule("r", ["tool"], [path], ["outputs/x"], "c")
    with pytest.raises(ValueError):
        Rule("r", ["tool"], [], [path], "c")


@pytest.mark.parametrize("rule_id", ["", "Upper", "a b", "-lead", "a/b", "x" * 101, "semi;colon"])
def test_unsafe_rule_ids_are_refused(rule_id):
    with pytest.raises(ValueError):
        Rule(rule_id, ["tool"], [], [], "c")
    Rule("fine-id_0.1", ["tool"], [], [], "c")


def test_a_redirect_must_target_a_declared_output():
    with pytest.raises(ValueError):
        Rule("r", ["echo"], [], [], "c", stdout="outputs/undeclared.txt")
    Rule("r", ["echo"], [], ["outputs/x.txt"], "c", stdout="outputs/x.txt")


def test_log_paths_are_reserved_for_the_rule_itself():
    with pytest.raises(ValueError):
        Rule("r", ["echo"], [], ["logs/r.stdout"], "c")


def test_an_overlong_command_is_refused_rather_than_failing_on_a_worker():
    paths = [f"work/file-{i:06d}.txt" for i in range(6000)]
    with pytest.raises(ValueError, match="too long"):
        Rule("r", ["cat", *paths], paths, ["outputs/all.txt"], "c").command()


def test_render_makeflow_accepts_a_closed_dag():
    rules = [
        Rule("a", ["tool"], ["inputs/x"], ["work/y"], "c"),
        Rule("b", ["tool"], ["work/y", "inputs/x"], ["outputs/z"], "c"),
    ]
    document = render_makeflow(rules, CATEGORIES, "c", sources=["inputs/x"])
    assert [r["outputs"][0] for r in document["rules"]] == ["work/y", "outputs/z"]
    assert document["categories"] == {
        "c": {
            "resources": {"cores": 1, "memory": 10, "disk": 10},
            "environment": {"LMWEB_GDAL_DRIVERS": "", "LMWEB_GDAL_VSI": ""},
        }
    }
    assert document["default_category"] == "c"


@pytest.mark.parametrize(
    ("rules", "sources"),
    [
        ([Rule("a", ["t"], ["inputs/missing"], ["work/y"], "c")], ["inputs/x"]),
        (
            [
                Rule("b", ["t"], ["work/y"], ["outputs/z"], "c"),
                Rule("a", ["t"], ["inputs/x"], ["work/y"], "c"),
            ],
            ["inputs/x"],
        ),
        (
            [
                Rule("a", ["t"], ["inputs/x"], ["work/y"], "c"),
                Rule("b", ["t"], ["inputs/x"], ["work/y"], "c"),
            ],
            ["inputs/x"],
        ),
        ([Rule("a", ["t"], [], ["inputs/x"], "c")], ["inputs/x"]),
        (
            [
                Rule("a", ["t"], [], ["work/y"], "c", scratch=["work/s"]),
                Rule("b", ["t"], ["work/s"], ["outputs/z"], "c"),
            ],
            [],
        ),
        (
            [Rule("a", ["t"], [], ["work/y"], "c"), Rule("a", ["t"], [], ["work/z"], "c")],
            [],
        ),
        ([Rule("a", ["t"], [], ["work/y"], "nope")], []),
    ],
    ids=[
        "input from nowhere",
        "input made by a later rule",
        "two writers",
        "overwrites a source",
        "reads another rule's scratch",
        "duplicate id",
        "unknown category",
    ],
)
def test_render_makeflow_refuses_a_broken_dag(rules, sources):
    with pytest.raises(ValueError):
        render_makeflow(rules, CATEGORIES, "c", sources=sources)


def test_parallel_width_counts_the_widest_level_of_the_dag():
    from translators.makeflow import parallel_width

    def rule(out, *inputs):
        return {"command": "true", "outputs": [out], "inputs": list(inputs)}

    chain = {"rules": [rule("a"), rule("b", "a"), rule("c", "b")]}
    fan = {"rules": [rule("a"), *(rule(f"f{n}", "a") for n in range(5)), rule("z", "f0", "f1")]}
    # Named outputs ({"dag_name": ...}) and sources no rule makes count as in makeflow.
    named = {
        "rules": [
            {"command": "true", "outputs": [{"dag_name": "x", "task_name": "x"}], "inputs": ["in"]},
            rule("y", {"dag_name": "x", "task_name": "x"}),
            rule("w", "in"),
        ]
    }
    assert parallel_width({"rules": []}) == 0
    assert parallel_width(chain) == 1
    assert parallel_width(fan) == 5
    assert parallel_width(named) == 2
    # Rules listed before the rules they depend on are placed by their producers all the same.
    assert parallel_width({"rules": list(reversed(fan["rules"]))}) == 5
