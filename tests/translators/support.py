"""Shared by the translator tests: rules read back, the closed-DAG check, request mutators."""

import copy
import io
import json
import posixpath
import shlex
import subprocess
import zipfile
from collections.abc import Iterable

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from translators import InvalidRequest
from translators.makeflow import MAX_COMMAND_CHARS, check_path


def rule_id(rule) -> str:
    """A rendered rule's id, taken from its own stderr log name."""
    return rule["command"].rsplit("2> logs/", 1)[1].removesuffix(".stderr")


def rules_by_id(stage) -> dict:
    """A stage's rules by their id (taken from the rule's own stderr log name)."""
    return {rule_id(rule): rule for rule in stage.makeflow["rules"]}


def steps(rule) -> list[list[str]]:
    """The argument lists of a rule's commands, between `{` and `;`."""
    tokens = shlex.split(rule["command"])
    body = tokens[tokens.index("{") + 1 : len(tokens) - 1 - tokens[::-1].index(";")]
    commands, current = [], []
    for token in body:
        if token == "&&":
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [*commands, current]


def assert_makeflow_accepts(stage, folder) -> None:
    """makeflow_analyze -k finds the stage's document well formed."""
    path = folder / f"{stage.name}.json"
    path.write_text(stage.dumps(), encoding="utf-8")
    result = subprocess.run(
        ["makeflow_analyze", "-k", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Syntax OK" in result.stdout + result.stderr


def staged_paths(staged: dict) -> set[str]:
    """Every path of staged inputs (an input is one path or a list of them)."""
    return {p for v in staged.values() for p in (v if isinstance(v, list) else [v])}


def check_closed_dag(stage, sources: Iterable[str]) -> set[str]:
    """Check that a stage is a closed DAG of clean relative paths that makeflow -T wq can ship;
    return what its rules make. `sources` are the files present before it runs (staged inputs,
    an earlier stage's products); the stage's own written files count too."""
    available = set(sources) | set(stage.files)
    made: set[str] = set()
    ids: set[str] = set()
    for rule in stage.makeflow["rules"]:
        for path in rule["inputs"] + rule["outputs"]:
            assert check_path(path) == path
            assert not path.startswith("/"), path
            assert ".." not in path.split("/"), path
            assert posixpath.normpath(path) == path, path
        for token in shlex.split(rule["command"]):
            assert not token.startswith("/"), (token, rule["command"])
            assert ".." not in token.split("/"), (token, rule["command"])
        assert len(rule["command"]) < MAX_COMMAND_CHARS
        missing = [p for p in rule["inputs"] if p not in available and p not in made]
        assert not missing, f"inputs made by no earlier rule: {missing}"
        for path in rule["outputs"]:
            assert path not in made and path not in available, f"{path} written twice"
            assert path.split("/")[0] in ("work", "outputs", "logs"), path
            made.add(path)
        name = rule_id(rule)
        assert name not in ids
        ids.add(name)
        assert f"logs/{name}.stdout" in rule["outputs"]
        assert f"logs/{name}.stderr" in rule["outputs"]
        assert rule["category"] in stage.makeflow["categories"]
    for category in stage.makeflow["categories"].values():
        assert set(category["resources"]) == {"cores", "memory", "disk"}
    assert stage.makeflow["default_category"] in stage.makeflow["categories"]
    for path in stage.files:
        assert posixpath.normpath(path) == path
        assert path.startswith(("work/config/", "outputs/")), path
    return made


def request_validator(workflow) -> Draft202012Validator:
    """A validator of the workflow's request schema, itself checked to be a valid schema."""
    schema = workflow.request_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_refused_while_twin_passes(workflow, change) -> None:
    """The workflow's example passes; changed by `change`, the schema and validate refuse it."""
    twin = copy.deepcopy(workflow.example)
    request_validator(workflow).validate(twin)
    workflow.validate(twin)
    change(twin)
    with pytest.raises(ValidationError):
        request_validator(workflow).validate(twin)
    with pytest.raises(InvalidRequest):
        workflow.validate(twin)


def bounded(name: str, prop: dict) -> None:
    """A schema property is described, and a number or string in it is bounded."""
    assert prop.get("description"), name
    kinds = set(prop["type"]) - {"null"} if isinstance(prop["type"], list) else {prop["type"]}
    if kinds & {"integer", "number"}:
        assert {"minimum", "exclusiveMinimum"} & set(prop), name
        assert {"maximum", "exclusiveMaximum"} & set(prop), name
    elif "string" in kinds:
        assert "enum" in prop or "maxLength" in prop, name


# Request mutators: each returns a function that changes a request in place, so that a bad
# request and its unchanged twin share their setup.


def set_at(path: tuple, value):
    """Set the value at `path` (keys into nested objects), making missing objects on the way."""

    def change(request):
        target = request
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value

    return change


def drop_at(path: tuple):
    """Remove the value at `path`."""

    def change(request):
        target = request
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def set_param(name: str, value):
    """Set one parameter."""
    return set_at(("params", name), value)


def write_lmm(path, data, rows, columns):
    """An lmpy matrix file, as Matrix.save writes it."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, np.asarray(data, dtype=float))
    with zipfile.ZipFile(path, "w") as archive:
        headers = {"headers": {"0": rows, "1": columns}, "metadata": {}, "version": "1.0"}
        archive.writestr("headers.json", json.dumps(headers))
        archive.writestr("data.npz", buffer.getvalue())
