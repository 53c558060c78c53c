"""The catalog, its JSON Schemas and the example requests."""

import copy

import pytest
from jsonschema import Draft202012Validator
from support import assert_refused_while_twin_passes, bounded, drop_at, request_validator, set_at

import translators
from translators import InvalidRequest, UnknownWorkflow


@pytest.fixture(params=translators.names())
def workflow(request):
    return translators.get(request.param)


def test_names_lists_the_catalog_sorted():
    assert {"pam-stats", "selftest", "occurrence-cleaning"} <= set(translators.names())
    assert translators.names() == sorted(translators.names())


def test_get_returns_the_workflow_of_that_name(workflow):
    assert translators.get(workflow.name) is workflow


@pytest.mark.parametrize("name", ["nope", "", "SELFTEST", "pam_stats"])
def test_get_raises_unknown_workflow_which_is_a_key_error(name):
    with pytest.raises(UnknownWorkflow):
        translators.get(name)
    with pytest.raises(KeyError):
        translators.get(name)


def test_each_workflow_describes_itself(workflow):
    assert workflow.title and len(workflow.title) <= 80
    assert len(workflow.description) > 80


def test_params_schema_documents_and_bounds_every_property(workflow):
    schema = workflow.params_schema
    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        bounded(name, prop)
        if name not in required:
            assert "default" in prop, name
            Draft202012Validator(prop).validate(prop["default"])


def test_inputs_schema_takes_dataset_ids_only(workflow):
    schema = workflow.inputs_schema
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(workflow.dataset_inputs)
    for name, prop in schema["properties"].items():
        one = prop["items"] if workflow.dataset_inputs[name].many else prop
        assert one["type"] == "string" and one["format"] == "uuid", name
        assert prop["description"], name
    expected = [n for n, spec in workflow.dataset_inputs.items() if spec.required]
    assert schema["required"] == expected


def test_the_example_is_a_valid_complete_request(workflow):
    example = workflow.example
    assert example["workflow"] == workflow.name
    assert {"workflow", "name", "params", "tags"} <= set(example)
    assert set(example["params"]) == set(workflow.params_schema["properties"])
    assert set(example.get("inputs", {})) == set(workflow.dataset_inputs)
    request_validator(workflow).validate(example)
    workflow.validate(example)


def test_inputs_and_params_are_required_only_when_something_in_them_is():
    assert translators.get("selftest").request_schema()["required"] == ["workflow"]
    assert translators.get("pam-stats").request_schema()["required"] == ["workflow", "inputs"]
    request_validator(translators.get("selftest")).validate({"workflow": "selftest"})


def test_with_defaults_fills_only_what_is_missing():
    workflow = translators.get("pam-stats")
    assert workflow.with_defaults({}) == {
        "randomizations": 100,
        "seed": None,
        "p_value_method": "fdr",
        "alpha": 0.05,
    }
    given = {"randomizations": 7}
    assert workflow.with_defaults(given)["randomizations"] == 7
    assert workflow.with_defaults(given)["alpha"] == 0.05
    assert given == {"randomizations": 7}
    assert translators.get("selftest").with_defaults(None) == {
        "tasks": 10,
        "seconds": 1,
        "fail": 0,
        "memory_mb": 0,
        "progress": False,
    }


BAD = {
    "selftest": {
        "tasks zero": set_at(("params", "tasks"), 0),
        "tasks above 10000": set_at(("params", "tasks"), 10001),
        "tasks fractional": set_at(("params", "tasks"), 2.5),
        "tasks as text": set_at(("params", "tasks"), "3"),
        "seconds negative": set_at(("params", "seconds"), -0.1),
        "seconds above 600": set_at(("params", "seconds"), 600.5),
        "unknown param": set_at(("params", "cores"), 2),
        "any input": set_at(("inputs", "pam"), "00000000-0000-0000-0000-000000000001"),
    },
    "pam-stats": {
        "randomizations negative": set_at(("params", "randomizations"), -1),
        "randomizations above 10000": set_at(("params", "randomizations"), 10001),
        "randomizations fractional": set_at(("params", "randomizations"), 1.5),
        "unknown method": set_at(("params", "p_value_method"), "holm"),
        "alpha zero": set_at(("params", "alpha"), 0),
        "alpha one": set_at(("params", "alpha"), 1),
        "alpha as text": set_at(("params", "alpha"), "0.05"),
        "unknown param": set_at(("params", "salt"), 1),
        "seed negative": set_at(("params", "seed"), -1),
        "seed above 2**32 - 1": set_at(("params", "seed"), 2**32),
        "seed as text": set_at(("params", "seed"), "1"),
        "no pam": drop_at(("inputs", "pam")),
        "no inputs": drop_at(("inputs",)),
        "pam not a uuid": set_at(("inputs", "pam"), "inputs/pam.lmm"),
        "pam a list": set_at(("inputs", "pam"), ["00000000-0000-0000-0000-000000000001"]),
        "unknown input": set_at(("inputs", "env"), "00000000-0000-0000-0000-000000000003"),
    },
    "any": {
        "other workflow": set_at(("workflow",), "mcpa"),
        "no workflow": drop_at(("workflow",)),
        "name too long": set_at(("name",), "x" * 201),
        "name not text": set_at(("name",), 5),
        "unknown field": set_at(("priority",), 1),
        "params not an object": set_at(("params",), []),
        "tag value not text": set_at(("tags", "n"), 1),
        "tag value too long": set_at(("tags", "n"), "v" * 257),
        "tag key too long": set_at(("tags", "k" * 65), "v"),
        "too many tags": set_at(("tags",), {f"k{i}": "v" for i in range(51)}),
    },
}
BAD_CASES = [(w, label) for w in ("selftest", "pam-stats") for label in {**BAD[w], **BAD["any"]}]


@pytest.mark.parametrize(("name", "label"), BAD_CASES)
def test_a_bad_request_fails_while_its_unchanged_twin_passes(name, label):
    change = {**BAD[name], **BAD["any"]}[label]
    assert_refused_while_twin_passes(translators.get(name), change)


def test_limits_themselves_are_accepted():
    workflow = translators.get("selftest")
    for params in ({"tasks": 1, "seconds": 0}, {"tasks": 10000, "seconds": 600}):
        workflow.validate({"workflow": "selftest", "params": params})
    workflow = translators.get("pam-stats")
    request = copy.deepcopy(workflow.example)
    request["params"] = {"randomizations": 10000, "alpha": 0.999}
    request["tags"] = {"k" * 64: "v" * 256, **{f"k{i}": "" for i in range(49)}}
    request["name"] = "x" * 200
    del request["inputs"]["tree"]
    workflow.validate(request)


def test_invalid_request_names_each_bad_field():
    workflow = translators.get("pam-stats")
    request = copy.deepcopy(workflow.example)
    request["params"]["alpha"] = 2
    request["params"]["randomizations"] = -5
    with pytest.raises(InvalidRequest) as caught:
        workflow.validate(request)
    assert len(caught.value.errors) == 2
    assert any(e.startswith("params/alpha:") for e in caught.value.errors)
    assert any(e.startswith("params/randomizations:") for e in caught.value.errors)
