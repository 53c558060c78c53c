"""Golden files pin the exact makeflow text each translator writes."""

import json
import shutil

import pytest
from support import assert_makeflow_accepts

import translators
from translators.base import canonical_json


def test_each_case_matches_its_golden_files(case, golden):
    stage = case.stage()
    golden(f"{case.name}.makeflow.json", stage.dumps())
    golden(f"{case.name}.files.json", canonical_json(stage.files))


def test_planning_the_same_request_twice_gives_the_same_text(case):
    first, second = case.stage(), case.stage()
    assert first.dumps() == second.dumps()
    assert first.files == second.files


def test_dumps_is_canonical_json_of_the_makeflow_document(case):
    stage = case.stage()
    text = stage.dumps()
    assert text.endswith("}\n")
    assert json.loads(text) == stage.makeflow
    assert text == json.dumps(stage.makeflow, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_a_completed_stage_is_not_planned_again(case):
    stage = case.stage()
    workflow = translators.get(case.workflow)
    assert workflow.plan(case.request(), dict(case.staged), [stage.name]) is None


def test_every_golden_file_belongs_to_a_case(cases, golden_dir):
    # Multi-stage workflows keep their cases in their own test modules; this list covers the
    # workflows whose cases live in conftest.py.
    prefixes = tuple(f"{case.workflow}-" for case in cases.values())
    names = {f"{name}.{kind}.json" for name in cases for kind in ("makeflow", "files")}
    on_disk = {path.name for path in golden_dir.iterdir() if path.name.startswith(prefixes)}
    assert on_disk <= names, f"stale golden files: {sorted(on_disk - names)}"


@pytest.mark.skipif(shutil.which("makeflow_analyze") is None, reason="CCTools not installed")
def test_makeflow_accepts_each_document(case, tmp_path):
    assert_makeflow_accepts(case.stage(), tmp_path)
