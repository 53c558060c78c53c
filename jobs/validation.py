"""Check a job request against its workflow schema and the caller's datasets, naming bad fields."""

import functools
import re
import uuid
from dataclasses import dataclass

import jsonschema
from django.conf import settings
from django.db.models import QuerySet
from jsonschema.validators import extend

import translators

from . import callbacks, inspection
from .models import Dataset

# Deeply nested or huge requests are refused before the schema walks them.
MAX_DEPTH = 12

# JSON Schema counts 3.0 as an integer, but the translators use integers as counts (range(),
# file names): a float accepted here would only crash the job once it ran.
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)
)


@functools.lru_cache(maxsize=256)
def _ecma_pattern(pattern: str) -> re.Pattern:
    """`pattern` with its end anchors as JSON Schema (ECMA-262) means them: Python's `$` also
    matches before a final newline, so "hypSide\\n" would pass "^[A-Za-z0-9_]+$"."""
    out, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
    return re.compile("".join(out))


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _ecma_pattern(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = extend(
    jsonschema.Draft202012Validator, validators={"pattern": _pattern}, type_checker=_TYPES
)


class RequestInvalid(Exception):
    """A request a user can fix; `errors` maps JSON paths (e.g. params.alpha) to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True)
class ValidRequest:
    workflow: "translators.Workflow"
    request: dict
    inputs: list[tuple[str, int, Dataset]]


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request"


def _depth(value, limit: int) -> int:
    stack, deepest = [(value, 1)], 1
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _unstorable(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate ("\ud800" is valid JSON)
        return True
    return False


def _text_errors(payload: dict) -> dict[str, list[str]]:
    """NUL characters and unpaired surrogates in any key or string: valid JSON, but PostgreSQL
    cannot store them (a 500 at INSERT time) nor can a response carry them back."""
    errors: dict[str, list[str]] = {}
    message = "holds a NUL character or an unpaired surrogate, which cannot be stored"
    stack: list[tuple[object, list]] = [(payload, [])]
    while stack:
        item, parts = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if _unstorable(key):
                    # The key itself cannot appear in the (UTF-8) response: name its parent.
                    errors.setdefault(_path(parts), []).append(f"a key {message}")
                else:
                    stack.append((child, [*parts, key]))
        elif isinstance(item, list):
            stack.extend((child, [*parts, index]) for index, child in enumerate(item))
        elif isinstance(item, str) and _unstorable(item):
            errors.setdefault(_path(parts), []).append(message)
    return errors


def _schema_errors(schema: dict, payload: dict) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    validator = _Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for error in validator.iter_errors(payload):
        parts = list(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - allowed):
                errors.setdefault(_path([*parts, extra]), []).append("unknown field")
            continue
        if error.validator == "required":
            present = set(error.instance) if isinstance(error.instance, dict) else set()
            for missing in error.validator_value:
                if missing in present:
                    continue
                # A missing object with required members of its own: name those members.
                nested = error.schema.get("properties", {}).get(missing, {}).get("required", [])
                for field in [[*parts, missing, n] for n in nested] or [[*parts, missing]]:
                    errors.setdefault(_path(field), []).append("this field is required")
            continue
        message = error.message
        if len(message) > 300:
            message = message[:300] + "..."
        errors.setdefault(_path(parts), []).append(message)
    return errors


def validate_request(payload, *, datasets: QuerySet[Dataset]) -> ValidRequest:
    """Validate `payload`; `datasets` is what the caller may use as inputs."""
    # Exactly dict: a form or multipart body parses to a QueryDict (a dict subclass) whose
    # values are lists behind a dict's face; it would pass the schema with the wrong shapes.
    if type(payload) is not dict:
        raise RequestInvalid({"request": ["expected a JSON object (send application/json)"]})
    # Before anything names a key in an error: a key that cannot be stored cannot be shown.
    # The walk has no recursion; the JSON parser has already bounded the depth.
    errors = _text_errors(payload)
    if errors:
        raise RequestInvalid(errors)
    if _depth(payload, MAX_DEPTH) > MAX_DEPTH:
        # Name the member that is too deep (tags, params...), not just the request.
        too_deep = [f"nested deeper than {MAX_DEPTH} levels"]
        raise RequestInvalid(
            {
                key: too_deep
                for key, value in payload.items()
                if _depth(value, MAX_DEPTH - 1) > MAX_DEPTH - 1
            }
        )
    name = payload.get("workflow")
    if not isinstance(name, str) or not name:
        raise RequestInvalid({"workflow": ["this field is required: a workflow name"]})
    try:
        workflow = translators.get(name)
    except translators.UnknownWorkflow:
        known = ", ".join(translators.names())
        shown = name if len(name) <= 64 else name[:64] + "..."
        raise RequestInvalid(
            {"workflow": [f"unknown workflow {shown!r}; one of: {known}"]}
        ) from None

    errors = _schema_errors(workflow.request_schema(), payload)
    if not errors:
        # Checks across fields that a JSON Schema cannot express (min below max, say).
        try:
            workflow.validate(payload)
        except translators.InvalidRequest as exc:
            for problem in exc.errors:
                where, _, message = problem.partition(": ")
                parts = [int(p) if p.isdigit() else p for p in where.split("/") if p]
                errors.setdefault(_path(parts), []).append(message or problem)
    if errors:
        raise RequestInvalid(errors)

    inputs: list[tuple[str, int, Dataset]] = []
    for input_name, value in sorted((payload.get("inputs") or {}).items()):
        spec = workflow.dataset_inputs[input_name]
        ids = value if isinstance(value, list) else [value]
        if len(ids) > settings.MAX_INPUT_DATASETS:
            errors.setdefault(f"inputs.{input_name}", []).append(
                f"{len(ids)} datasets, over the limit of {settings.MAX_INPUT_DATASETS}"
            )
            continue
        for position, dataset_id in enumerate(ids):
            field = f"inputs.{input_name}" + (f"[{position}]" if isinstance(value, list) else "")
            dataset = _find_dataset(datasets, dataset_id)
            if dataset is None:
                errors.setdefault(field, []).append(f"no dataset with id {dataset_id}")
            elif spec.formats and dataset.extension.lstrip(".") not in spec.formats:
                # Workflows name formats by the staged file's extension (lmpy reads it so).
                expected = ", ".join("." + extension for extension in spec.formats)
                errors.setdefault(field, []).append(
                    f"dataset {dataset_id} is {dataset.format}; expected one of: {expected}"
                )
            else:
                inputs.append((input_name, position, dataset))
    if errors:
        raise RequestInvalid(errors)

    callback_url = payload.get("callback_url", "")
    if callback_url:
        try:
            callbacks.check_url(callback_url, resolve=False)
        except callbacks.Refused as exc:
            raise RequestInvalid({"callback_url": [str(exc)]}) from None

    params = workflow.with_defaults(payload.get("params", {}))
    _check_name_resolver(params)
    facts = _inspect(workflow, inputs, params)
    _check_work(params, facts)
    _check_against_inputs(params, facts)

    request = {
        "workflow": workflow.name,
        "name": payload.get("name", ""),
        "inputs": payload.get("inputs", {}),
        "params": params,
        "tags": payload.get("tags", {}),
    }
    if callback_url:
        request["callback_url"] = callback_url
    return ValidRequest(workflow=workflow, request=request, inputs=inputs)


def _inspect(workflow, inputs, params) -> dict[str, dict]:
    """Each input's content checked in the inspection subprocess; what it found, by field."""
    fields, checks = [], []
    for input_name, position, dataset in inputs:
        spec = workflow.dataset_inputs[input_name]
        if spec.content in inspection.CHECKS:
            field = f"inputs.{input_name}" + (f"[{position}]" if spec.many else "")
            fields.append((field, dataset))
            checks.append(inspection.Check(spec.content, str(dataset.absolute_path), params))
    limits = inspection.Limits.from_settings(settings)
    errors: dict[str, list[str]] = {}
    facts: dict[str, dict] = {}
    for (field, dataset), outcome in zip(
        fields, inspection.run_isolated(checks, limits), strict=True
    ):
        if outcome is None:
            continue  # not reached: an input before it used up the time
        if outcome.error:
            errors.setdefault(field, []).append(f"dataset {dataset.id}: {outcome.error}")
        facts[field] = outcome.facts
    if errors:
        raise RequestInvalid(errors)
    return facts


# The parameter that multiplies the work on each PAM cell (issue 11, item 7).
RANDOMIZATION_PARAMS = ("randomizations", "permutations")


def _check_work(params: dict, facts: dict[str, dict]) -> None:
    cells = max((found.get("cells", 0) for found in facts.values()), default=0)
    limit = settings.MAX_RANDOMIZED_CELLS
    for name in RANDOMIZATION_PARAMS:
        count = params.get(name)
        if isinstance(count, int) and count * cells > limit:
            raise RequestInvalid(
                {
                    f"params.{name}": [
                        f"{count} {name} of a PAM of {cells} cells is {count * cells} "
                        f"randomized cells, over the limit of {limit}"
                    ]
                }
            )


def _resolving_steps(params: dict):
    for number, step in enumerate(params.get("wranglers") or []):
        if isinstance(step, dict) and "name_resolver" in step:
            yield number, step


def _check_name_resolver(params: dict) -> None:
    """`name_resolver: gbif` only where the deployment lets workers reach the name service;
    its address is the deployment's, recorded in the stored request (users cannot set it)."""
    errors: dict[str, list[str]] = {}
    for number, step in _resolving_steps(params):
        if not settings.GBIF_NAMES:
            errors[f"params.wranglers[{number}].name_resolver"] = [
                "this deployment does not resolve names through GBIF (its workers may not "
                "reach the internet): give every name in the name_map input instead"
            ]
        else:
            step["api_url"] = settings.GBIF_API_URL
    if errors:
        raise RequestInvalid(errors)


def _check_against_inputs(params: dict, facts: dict[str, dict]) -> None:
    """What the request's params expect of its inputs, from what the inspection found."""
    errors: dict[str, list[str]] = {}
    occurrences = [
        found for field, found in facts.items() if field.startswith("inputs.occurrences")
    ]
    present = {name for found in occurrences for name in found.get("attributes", [])}
    for number, step in enumerate(params.get("wranglers") or []):
        if not isinstance(step, dict):
            continue
        filtered = step.get("type") == "attribute_filter" and occurrences
        if filtered and step["attribute"] not in present:
            errors[f"params.wranglers[{number}].attribute"] = [
                f"no occurrence input has {step['attribute']!r}: not a column of a CSV "
                "input (exactly as in its header) nor a field of a DwCA's core (its term "
                "name, as in meta.xml)"
            ]
        name_map = facts.get("inputs.name_map")
        if (
            step.get("type") == "accepted_names"
            and name_map
            and step.get("unmapped") == "drop"
            and "name_resolver" not in step
            and name_map.get("names", 0) == name_map.get("unresolved", 0)
        ):
            errors.setdefault("inputs.name_map", []).append(
                "every name in the map is unresolved (null or None) and unmapped is drop: "
                "no record would be left"
            )
    if errors:
        raise RequestInvalid(errors)


def _find_dataset(datasets: QuerySet[Dataset], dataset_id: str) -> Dataset | None:
    try:
        key = uuid.UUID(str(dataset_id))
    except ValueError:
        return None
    return datasets.filter(pk=key).first()
