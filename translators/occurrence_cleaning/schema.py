"""occurrence-cleaning's request parameters (JSON Schema) and its table of wranglers."""

from __future__ import annotations

from translators.base import SCHEMA_DIALECT

# The stages: the wranglers table says in which one each wrangler runs.
SPLIT = "split"
CLEAN = "clean"

COORDINATE = {"type": "number", "minimum": -1e8, "maximum": 1e8}
EPSG = {"type": "integer", "minimum": 1024, "maximum": 32767}
TEXT_PATTERN = "^[^\\s\\x00-\\x1f\\x7f](?:[^\\x00-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f])?$"


def _column(default: str, what: str) -> dict:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "pattern": TEXT_PATTERN,
        "default": default,
        "description": f"CSV column holding the {what} (CSV inputs only; DwCA terms are fixed).",
    }


# type -> (stage that runs it, description, argument schemas, required arguments).
# Record wranglers look at one record at a time and run during the split, where a DwCA still
# gives lists (iDigBio flags) and names can still move records to another species' file.
# Species wranglers need all of a species' records, which only the split brings together.
WRANGLERS: dict[str, tuple[str, str, dict, list[str]]] = {
    "accepted_names": (
        SPLIT,
        "Replace each species name by its accepted name. Names are matched with outer spaces "
        "removed, inner runs of spaces made one and the first letter capitalized (as lmpy "
        "holds them). The `name_map` input gives the names, in either of lmpy's forms: a "
        "JSON object of original name -> accepted name or null (what lmpy's "
        "resolve_names_gbif and its wrangler's out_map_filename write), or CSV lines "
        "'original name,accepted name' (lmpy's 'Name,Accepted' header line is skipped; an "
        "accepted name 'None' or empty is unresolved). `name_resolver`: gbif asks GBIF's "
        "species match API for every name the map lacks, where the deployment allows it "
        "(an accepted or synonym match gives its canonical name, as lmpy's "
        "resolve_names_gbif does; the map, with the answers, is delivered as "
        "outputs/resolved_names.json); the map is then optional. `unmapped`: what happens "
        "to the records of a name left unresolved (null, or missing from the map and not "
        "resolved): drop them (lmpy's behaviour), or keep them under their own name.",
        {
            "unmapped": {"enum": ["keep", "drop"], "default": "keep"},
            "name_resolver": {"enum": ["gbif"]},
        },
        [],
    ),
    "attribute_filter": (
        SPLIT,
        "Drop records whose `attribute` holds any of the `exclude` values (a DwCA list such as "
        "iDigBio's flags, or text split on ';' such as GBIF's issue). Records without the "
        "attribute are kept.",
        {
            "attribute": {"type": "string", "maxLength": 64, "pattern": TEXT_PATTERN},
            "exclude": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "uniqueItems": True,
                "items": {"type": "string", "minLength": 1, "maxLength": 200},
            },
        },
        ["attribute", "exclude"],
    ),
    "bounding_box": (
        SPLIT,
        "Keep records with min_x <= x <= max_x and min_y <= y <= max_y (in the coordinates "
        "at that point of the list).",
        {"min_x": COORDINATE, "min_y": COORDINATE, "max_x": COORDINATE, "max_y": COORDINATE},
        ["min_x", "min_y", "max_x", "max_y"],
    ),
    "coordinate_conversion": (
        SPLIT,
        "Reproject x and y from EPSG `source_epsg` to EPSG `target_epsg` (GDAL).",
        {"source_epsg": EPSG, "target_epsg": EPSG},
        ["source_epsg", "target_epsg"],
    ),
    "decimal_precision": (
        SPLIT,
        "Keep records whose x and y both have at least `decimal_places` decimals (as read: "
        "trailing zeros do not count).",
        {"decimal_places": {"type": "integer", "minimum": 0, "maximum": 10}},
        ["decimal_places"],
    ),
    "minimum_points": (
        CLEAN,
        "Drop every record of a species that has fewer than `minimum_count` records.",
        {"minimum_count": {"type": "integer", "minimum": 1, "maximum": 1_000_000}},
        ["minimum_count"],
    ),
    "unique_localities": (
        CLEAN,
        "Keep one record per species and location (same x and y).",
        {},
        [],
    ),
}


def _wrangler_schema() -> dict:
    cases = []
    for kind, (_, description, arguments, required) in WRANGLERS.items():
        cases.append(
            {
                "if": {"properties": {"type": {"const": kind}}},
                "then": {
                    "description": description,
                    "properties": {"type": {"const": kind}, **arguments},
                    "required": ["type", *required],
                    "additionalProperties": False,
                },
            }
        )
    return {
        "type": "object",
        "properties": {"type": {"enum": list(WRANGLERS)}},
        "required": ["type"],
        "allOf": cases,
    }


ACCEPTED_NAMES = {"properties": {"type": {"const": "accepted_names"}}, "required": ["type"]}
# An accepted_names step that has only the name map to go by.
MAP_ONLY = {**ACCEPTED_NAMES, "not": {"required": ["name_resolver"]}}


PARAMS_SCHEMA = {
    "$schema": SCHEMA_DIALECT,
    "type": "object",
    "properties": {
        "species_column": _column("species_name", "species name"),
        "x_column": _column("x", "x coordinate (longitude)"),
        "y_column": _column("y", "y coordinate (latitude)"),
        "wranglers": {
            "type": "array",
            "maxItems": 20,
            "items": _wrangler_schema(),
            # One name map serves one accepted_names step.
            "contains": ACCEPTED_NAMES,
            "minContains": 0,
            "maxContains": 1,
            "default": [],
            "description": (
                "Cleaning steps, each an object with a `type`: "
                + "; ".join(f"{kind}: {spec[1]}" for kind, spec in WRANGLERS.items())
            ),
        },
        "heatmap_cells": {
            "type": "integer",
            "minimum": 10,
            "maximum": 1000,
            "default": 100,
            "description": ("Heatmap cells along the longer side of the cleaned records' extent."),
        },
    },
    "additionalProperties": False,
}
