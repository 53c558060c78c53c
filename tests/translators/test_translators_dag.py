"""Every planned stage is a closed DAG of relative paths that makeflow -T wq can ship."""

import posixpath
import shlex

import pytest

import translators

TREE = {"pam": "inputs/pam.lmm", "tree": "inputs/tree.nex"}
EXTRA = [
    ("selftest", {"tasks": 1, "seconds": 0}, {}),
    ("selftest", {"tasks": 101, "seconds": 2}, {}),
    ("pam-stats", {"randomizations": 1}, {"pam": "inputs/pam.lmm"}),
    ("pam-stats", {"randomizations": 401, "p_value_method": "bonferroni"}, TREE),
    ("pam-stats", {"randomizations": 7}, {"pam": "inputs/a b/$p;'.lmm", "tree": "inputs/t 1.tre"}),
]


def plan(workflow_name, params, staged):
    workflow = translators.get(workflow_name)
    uuids = {key: f"00000000-0000-0000-0000-00000000000{i}" for i, key in enumerate(staged, 1)}
    request = {"workflow": workflow_name, "params": params}
    if staged:
        request["inputs"] = uuids
    return workflow.plan(request, staged, [])


def stages(case=None):
    if case is not None:
        return [(case.stage(), case.staged)]
    return [(plan(*args), args[2]) for args in EXTRA]


def check_stage(stage, staged):
    sources = set(staged.values()) | set(stage.files)
    made = set()
    ids = set()
    for rule in stage.makeflow["rules"]:
        paths = rule["inputs"] + rule["outputs"]
        for path in paths:
            assert not path.startswith("/"), path
            assert ".." not in path.split("/"), path
            assert posixpath.normpath(path) == path, path
        for token in shlex.split(rule["command"]):
            assert not token.startswith("/"), (token, rule["command"])
            assert ".." not in token.split("/"), (token, rule["command"])
        missing = [p for p in rule["inputs"] if p not in sources and p not in made]
        assert not missing, f"inputs made by no earlier rule: {missing}"
        for path in rule["outputs"]:
            assert path not in made and path not in sources, f"{path} written twice"
            assert path.split("/")[0] in ("work", "outputs", "logs"), path
            made.add(path)
        rule_id = rule["command"].rsplit("2> logs/", 1)[1].removesuffix(".stderr")
        assert rule_id not in ids
        ids.add(rule_id)
        assert f"logs/{rule_id}.stdout" in rule["outputs"]
        assert f"logs/{rule_id}.stderr" in rule["outputs"]
        assert rule["category"] in stage.makeflow["categories"]
    for category in stage.makeflow["categories"].values():
        assert set(category["resources"]) == {"cores", "memory", "disk"}
    assert stage.makeflow["default_category"] in stage.makeflow["categories"]
    return made


def test_golden_cases_are_closed_dags_of_relative_paths(case):
    for stage, staged in stages(case):
        made = check_stage(stage, staged)
        assert any(p.startswith("outputs/") for p in made)


@pytest.mark.parametrize("index", range(len(EXTRA)))
def test_other_parameters_give_closed_dags_too(index):
    stage, staged = stages()[index]
    check_stage(stage, staged)


def test_the_dag_check_itself_catches_an_input_from_nowhere(case):
    stage = case.stage()
    stage.makeflow["rules"][-1]["inputs"].append("work/never-made.lmm")
    with pytest.raises(AssertionError):
        check_stage(stage, case.staged)


def test_the_dag_check_itself_catches_an_absolute_path(case):
    stage = case.stage()
    rule = stage.makeflow["rules"][0]
    rule["command"] = rule["command"].replace("logs/", "/tmp/logs/", 1)
    with pytest.raises(AssertionError):
        check_stage(stage, case.staged)
