"""Every planned stage is a closed DAG of relative paths that makeflow -T wq can ship."""

import pytest
from support import check_closed_dag, staged_paths

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


def test_golden_cases_are_closed_dags_of_relative_paths(case):
    for stage, staged in stages(case):
        made = check_closed_dag(stage, staged_paths(staged))
        assert any(p.startswith("outputs/") for p in made)


@pytest.mark.parametrize("index", range(len(EXTRA)))
def test_other_parameters_give_closed_dags_too(index):
    stage, staged = stages()[index]
    check_closed_dag(stage, staged_paths(staged))


def test_the_dag_check_itself_catches_an_input_from_nowhere(case):
    stage = case.stage()
    stage.makeflow["rules"][-1]["inputs"].append("work/never-made.lmm")
    with pytest.raises(AssertionError):
        check_closed_dag(stage, staged_paths(case.staged))


def test_the_dag_check_itself_catches_an_absolute_path(case):
    stage = case.stage()
    rule = stage.makeflow["rules"][0]
    rule["command"] = rule["command"].replace("logs/", "/tmp/logs/", 1)
    with pytest.raises(AssertionError):
        check_closed_dag(stage, staged_paths(case.staged))
