"""The Workflow base class: schemas, defaults, request checks and the Stage it plans."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from jsonschema import Draft202012Validator

from translators.makeflow import check_path

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class UnknownWorkflow(KeyError):
    """No workflow of that name in the catalog."""


class InvalidRequest(ValueError):
    """A request or its staged inputs do not fit the workflow; `errors` lists each problem."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class InputSpec:
    """One dataset input: accepted formats (file extensions, kept when staged), arity, need."""

    formats: tuple[str, ...]
    many: bool = False
    required: bool = True
    description: str = ""
    # What the service checks the file holds before anything runs (jobs/inspection.py):
    # "pam", "tree", "occurrences", "dwca", "raster", "shapefiles", "name-map", or "" for none.
    content: str = ""


@dataclass(frozen=True)
class Stage:
    """One makeflow run of a job: its JSON document and the files it needs written beside it."""

    name: str
    makeflow: dict
    files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not STAGE_NAME.match(self.name):
            raise ValueError(f"unsafe stage name: {self.name!r}")
        for path in self.files:
            check_path(path)

    def dumps(self) -> str:
        """Canonical text of the makeflow document, as written to disk."""
        return canonical_json(self.makeflow)


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


class Workflow:
    """A catalog entry. Subclasses set the attributes and implement `next_stage`."""

    name: str
    title: str
    description: str
    params_schema: dict
    dataset_inputs: dict[str, InputSpec] = {}
    example: dict
    # The example's placeholder dataset ids -> files of the sample data (paths relative to the
    # folder LMWEB_SAMPLE_DATA names; not part of the project), so that the example can be run as
    # given on real data. tests/synthetic.py makes stand-ins that fit the example unchanged.
    example_data: dict[str, str] = {}

    @property
    def inputs_schema(self) -> dict:
        properties = {}
        for key, spec in self.dataset_inputs.items():
            one = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
            if spec.many:
                prop = {"type": "array", "items": one, "minItems": 1, "uniqueItems": True}
            else:
                prop = one
            formats = ", ".join("." + f for f in spec.formats)
            prop["description"] = f"{spec.description} Dataset id ({formats})."
            properties[key] = prop
        return {
            "type": "object",
            "properties": properties,
            "required": [k for k, s in self.dataset_inputs.items() if s.required],
            "additionalProperties": False,
        }

    def request_schema(self) -> dict:
        inputs = self.inputs_schema
        # "$schema" belongs at the root of a schema resource only, not in an embedded subschema.
        params = {k: v for k, v in self.params_schema.items() if k != "$schema"}
        required = ["workflow"]
        if inputs["required"]:
            required.append("inputs")
        if params.get("required"):
            required.append("params")
        return {
            "$schema": SCHEMA_DIALECT,
            "title": f"{self.name} job request",
            "description": self.description,
            "type": "object",
            "properties": {
                "workflow": {"const": self.name, "description": "Catalog name of the workflow."},
                "name": {
                    "type": "string",
                    "maxLength": 200,
                    "description": "A name for the job, for the submitter's own use.",
                },
                "inputs": inputs,
                "params": params,
                "tags": {
                    "type": "object",
                    "maxProperties": 50,
                    "propertyNames": {"maxLength": 64},
                    "additionalProperties": {"type": "string", "maxLength": 256},
                    "description": "Free labels (key to string) for finding jobs later.",
                },
                "callback_url": {
                    "type": "string",
                    "maxLength": 2000,
                    "pattern": "^https?://",
                    "description": (
                        "Called (POST, signed with your callback secret) when the job finishes."
                    ),
                },
            },
            "required": required,
            "additionalProperties": False,
        }

    @cached_property
    def _validator(self) -> Draft202012Validator:
        schema = self.request_schema()
        Draft202012Validator.check_schema(schema)
        return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

    def validate(self, request: Mapping) -> None:
        """Raise InvalidRequest naming every field that breaks the request schema."""
        errors = []
        for error in sorted(self._validator.iter_errors(request), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in error.path) or "(request)"
            errors.append(f"{where}: {error.message}")
        if errors:
            raise InvalidRequest(errors)

    def with_defaults(self, params: Mapping | None) -> dict:
        filled = {
            key: copy.deepcopy(prop["default"])
            for key, prop in self.params_schema.get("properties", {}).items()
            if "default" in prop
        }
        filled.update(copy.deepcopy(dict(params or {})))
        return filled

    def plan(
        self,
        request: Mapping,
        inputs: Mapping[str, str | list[str]],
        done: list[str],
        produced: Mapping[str, list[str]] | None = None,
    ) -> Stage | None:
        """The next stage to run, or None once every stage in `done` has completed.

        `inputs` maps each input name to its staged path(s), relative to the job folder.
        `produced` (stage name -> files it made) is reserved for stages planned from the output
        of earlier ones.
        """
        self.validate(request)
        staged = self.check_staged(request, inputs)
        params = self.with_defaults(request.get("params"))
        return self.next_stage(params, staged, list(done), dict(produced or {}))

    def next_stage(
        self,
        params: dict,
        inputs: dict[str, str | list[str]],
        done: list[str],
        produced: dict[str, list[str]],
    ) -> Stage | None:
        raise NotImplementedError

    def check_staged(self, request: Mapping, inputs: Mapping) -> dict[str, str | list[str]]:
        """The staged inputs, checked against the request: every input present, relative paths
        inside the job folder, an extension the input accepts. InvalidRequest otherwise."""
        errors = []
        wanted = set(request.get("inputs", {}))
        if set(inputs) != wanted:
            errors.append(f"staged inputs {sorted(inputs)} differ from requested {sorted(wanted)}")
        for key, value in inputs.items():
            spec = self.dataset_inputs.get(key)
            if spec is None:
                continue
            paths = value if spec.many else [value]
            if spec.many != isinstance(value, list):
                errors.append(
                    f"inputs/{key}: expected {'a list of paths' if spec.many else 'a path'}"
                )
                continue
            for path in paths:
                try:
                    check_path(path)
                except ValueError as exc:
                    errors.append(f"inputs/{key}: {exc}")
                    continue
                extension = path.rsplit("/", 1)[-1].rpartition(".")[2].lower()
                if "." not in path.rsplit("/", 1)[-1] or extension not in spec.formats:
                    errors.append(f"inputs/{key}: {path!r} is not one of {list(spec.formats)}")
        if errors:
            raise InvalidRequest(errors)
        return {k: (list(v) if isinstance(v, list) else v) for k, v in inputs.items()}
