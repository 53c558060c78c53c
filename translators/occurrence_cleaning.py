"""occurrence-cleaning: split occurrence records by species, clean each species, map the result."""

# lmpy 3.1.21, checked by hand on heuchera.csv, the iDigBio Acer rubrum DwCA and a CSV of odd
# species names (arguments as built below):
# - split_occurrence_data writes <out_dir>/<name>.csv with the name as it is: "a/b" makes a
#   folder, "../x" and "/tmp/x" write outside out_dir (outside the worker's sandbox), a name over
#   251 bytes crashes the whole split. Point capitalizes every name ("HEUCHERA Alba" becomes
#   "Heuchera alba"), so case variants merge.
# - Its DwCA reader only knows decimalLongitude/decimalLatitude: iDigBio archives (coordinates in
#   geoPoint) give zero records, silently. Wranglers that change a name or coordinates
#   (AcceptedNameOccurrenceWrangler, CoordinateConverterWrangler) change Point.species_name/x/y
#   but the writers write Point.attributes: files and rows keep the old name and coordinates.
#   The accepted-name map is read as `name_map` (the sample's `accepted_name_map` key is
#   ignored, which drops every record); its CSV loader keeps the space after the comma and
#   its keys must match capitalized names. AttributeFilterWrangler iterates the value itself,
#   i.e. over the characters of a CSV text field. OccurrenceSplitter never closes a writer
#   (`self.flush_writers` without the call): one open file per species.
#   So the split runs HELPER_SCRIPT below: the same lmpy classes (readers, OccurrenceSplitter,
#   WranglerFactory, the wranglers) with safe unique file names and those defects worked around.
# - wrangle_occurrences works for the per-species wranglers (minimum points, unique localities:
#   a split file is one group), but writes no CSV when every record is filtered out, and its
#   report's per-wrangler counts are always 0 (taken before wrangling): only input_records and
#   output_records are right. Hence ensure-csv after it, and the per-wrangler counts of the
#   record wranglers come from the split.
# - create_point_heatmap clamps records outside its extent into the edge cells and takes one
#   `--csv F SP X Y` per file: the extent is computed from the data and the files go through
#   --config_file (whose keys replace the arguments, positionals included).
# - Start-up is ~0.9 s per lmpy tool here (1.3 s on a busy host). The split of heuchera.csv and
#   the DwCA (14,734 records, four record wranglers) takes 2.4 s; wrangle_occurrences on one
#   species is start-up bound; create_point_heatmap on 10,500 records in 54 files takes 1.3 s.

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from translators.base import (
    SCHEMA_DIALECT,
    InputSpec,
    InvalidRequest,
    Stage,
    Workflow,
    canonical_json,
)
from translators.makeflow import Category, Rule, render_makeflow

SPLIT = "split"
CLEAN = "clean"
# Run with the interpreter found beside the lmpy tools on the worker's PATH.
PYTHON = "python3"

CONFIG = "work/config"
HELPER = f"{CONFIG}/occurrences.py"
SPLIT_CONFIG = f"{CONFIG}/split.json"
SPECIES_WRANGLERS = f"{CONFIG}/species_wranglers.json"
GATHER_CONFIG = f"{CONFIG}/gather.json"
SPLIT_DIR = "work/split"
SPLIT_MANIFEST = "work/split.json"
REPORT_DIR = "work/reports"
HEATMAP_CONFIG = "work/heatmap.json"
SPECIES_DIR = "outputs/species"
MANIFEST = "outputs/species.json"
SPECIES_LIST = "outputs/species_list.txt"
REPORT = "outputs/cleaning_report.json"
HEATMAP = "outputs/point_heatmap.png"

# The helper refuses more species than this after the record wranglers (and the planner checks
# again): beyond it one gather would pull tens of thousands of files through one worker.
MAX_SPECIES = 10_000
# Up to this many species get a rule each; above it rules take several species, so that no
# makeflow holds more than this many cleaning rules.
MAX_CLEAN_RULES = 1_000
# What the helper's slug_of() can produce, plus its "-2" suffixes for collisions.
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")

CATEGORIES = {
    SPLIT: Category(cores=1, memory=2048, disk=4096),
    CLEAN: Category(cores=1, memory=2048, disk=1024),
    "gather": Category(cores=1, memory=2048, disk=4096),
}

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
        "Replace each species name by its accepted name from the `name_map` input (lines "
        "'original name,accepted name', or a JSON object). `unmapped`: keep names the map "
        "lacks, or drop their records (lmpy's behaviour).",
        {"unmapped": {"enum": ["keep", "drop"], "default": "keep"}},
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


def _lmpy_config(wrangler: dict, name_map: str | None) -> dict:
    """The lmpy configuration of one validated wrangler (HELPER_SCRIPT reads two of them)."""
    kind = wrangler["type"]
    if kind == "accepted_names":
        return {
            "wrangler_type": "AcceptedNameOccurrenceWrangler",
            "name_map": name_map,
            "keep_unmapped": wrangler.get("unmapped", "keep") == "keep",
        }
    if kind == "attribute_filter":
        return {
            "wrangler_type": "AttributeFilterWrangler",
            "attribute_name": wrangler["attribute"],
            "filter_func": {"for-each": {"condition": "not-in", "values": wrangler["exclude"]}},
        }
    if kind == "bounding_box":
        box = {key: wrangler[key] for key in ("min_x", "min_y", "max_x", "max_y")}
        return {"wrangler_type": "BoundingBoxFilter", **box}
    if kind == "coordinate_conversion":
        return {
            "wrangler_type": "CoordinateConverterWrangler",
            "source_epsg": wrangler["source_epsg"],
            "target_epsg": wrangler["target_epsg"],
        }
    if kind == "decimal_precision":
        return {
            "wrangler_type": "DecimalPrecisionFilter",
            "decimal_places": wrangler["decimal_places"],
        }
    if kind == "minimum_points":
        return {
            "wrangler_type": "MinimumPointsWrangler",
            "minimum_count": wrangler["minimum_count"],
        }
    if kind == "unique_localities":
        return {"wrangler_type": "UniqueLocalitiesFilter"}
    raise ValueError(f"unknown wrangler type {kind!r}")


ACCEPTED_NAMES = {"properties": {"type": {"const": "accepted_names"}}, "required": ["type"]}


class OccurrenceCleaning(Workflow):
    name = "occurrence-cleaning"
    title = "Occurrence cleaning by species"
    description = (
        "Reads occurrence records from CSV files (species, x and y columns) and Darwin Core "
        "Archives (.zip; scientificName with decimalLongitude/decimalLatitude, or iDigBio's "
        "geoPoint), applies the record wranglers (accepted names, attribute filter, bounding "
        "box, coordinate conversion, decimal precision: in list order) while splitting the "
        "records into one file per species, then cleans each species' file with the species "
        "wranglers (minimum points, unique localities: in list order, after all record "
        "wranglers) on its own worker. Species names are kept exactly (lmpy capitalizes them: "
        "'HEUCHERA alba' becomes 'Heuchera alba'); files get safe ASCII names. Deliverables: "
        "outputs/species/<file>.csv per species (a header alone when nothing is left), "
        "outputs/species.json (file name -> species name and record counts), "
        "outputs/species_list.txt (species with records left), outputs/cleaning_report.json "
        f"(records per input and per record wrangler) and outputs/point_heatmap.png. At most "
        f"{MAX_SPECIES:,} species per job."
    )
    params_schema = {
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
                "description": (
                    "Heatmap cells along the longer side of the cleaned records' extent."
                ),
            },
        },
        "additionalProperties": False,
    }
    dataset_inputs = {
        "occurrences": InputSpec(
            formats=("csv", "zip"),
            many=True,
            description=(
                "Occurrence records: CSV files (.csv) and/or Darwin Core Archives (.zip), "
                "read in the order given."
            ),
            content="occurrences",
        ),
        "name_map": InputSpec(
            formats=("csv", "json"),
            required=False,
            description=(
                "Accepted names for the accepted_names wrangler: 'original name,accepted "
                "name' lines (.csv) or a JSON object (.json)."
            ),
            content="name-map",
        ),
    }
    example = {
        "workflow": "occurrence-cleaning",
        "name": "Heuchera and Acer rubrum, cleaned",
        "inputs": {
            "occurrences": [
                "00000000-0000-0000-0000-000000000001",
                "00000000-0000-0000-0000-000000000002",
            ],
            "name_map": "00000000-0000-0000-0000-000000000003",
        },
        "params": {
            "species_column": "species_name",
            "x_column": "x",
            "y_column": "y",
            "wranglers": [
                {"type": "accepted_names", "unmapped": "keep"},
                {"type": "bounding_box", "min_x": -180, "min_y": 0, "max_x": -50, "max_y": 85},
                {"type": "decimal_precision", "decimal_places": 2},
                {"type": "unique_localities"},
                {"type": "minimum_points", "minimum_count": 12},
            ],
            "heatmap_cells": 100,
        },
        "tags": {"project": "heuchera"},
    }
    example_data = {
        "00000000-0000-0000-0000-000000000001": "heuchera/heuchera.csv",
        "00000000-0000-0000-0000-000000000002": "dwca/idigbio_acer_rubrum.zip",
        "00000000-0000-0000-0000-000000000003": "wranglers/name_map.txt",
    }

    def request_schema(self) -> dict:
        schema = super().request_schema()
        uses_map = {
            "properties": {
                "params": {
                    "properties": {"wranglers": {"contains": ACCEPTED_NAMES}},
                    "required": ["wranglers"],
                }
            },
            "required": ["params"],
        }
        has_map = {"properties": {"inputs": {"required": ["name_map"]}}, "required": ["inputs"]}
        # The name map is the accepted_names wrangler's argument: one without the other is a
        # mistake that the submitter can fix.
        schema["allOf"] = [{"if": uses_map, "then": has_map}, {"if": has_map, "then": uses_map}]
        return schema

    def validate(self, request: Mapping) -> None:
        super().validate(request)
        errors = []
        for number, wrangler in enumerate(request.get("params", {}).get("wranglers", [])):
            if wrangler["type"] == "bounding_box":
                for low, high in (("min_x", "max_x"), ("min_y", "max_y")):
                    if wrangler[low] >= wrangler[high]:
                        errors.append(f"params/wranglers/{number}: {low} must be below {high}")
        if errors:
            raise InvalidRequest(errors)

    def next_stage(self, params, inputs, done, produced):
        if SPLIT not in done:
            return self._split_stage(params, inputs)
        if CLEAN not in done:
            if SPLIT not in produced:
                raise ValueError("the clean stage is planned from the split stage's files")
            return self._clean_stage(params, produced[SPLIT])
        return None

    def _split_stage(self, params: dict, inputs: dict) -> Stage:
        occurrences = inputs["occurrences"]
        name_map = inputs.get("name_map")
        sources = []
        for path in occurrences:
            if path.rpartition(".")[2].lower() == "zip":
                sources.append({"path": path, "format": "dwca"})
            else:
                sources.append(
                    {
                        "path": path,
                        "format": "csv",
                        "species_column": params["species_column"],
                        "x_column": params["x_column"],
                        "y_column": params["y_column"],
                    }
                )
        record_wranglers = [
            _lmpy_config(w, name_map)
            for w in params["wranglers"]
            if WRANGLERS[w["type"]][0] == SPLIT
        ]
        files = {
            HELPER: HELPER_SCRIPT,
            SPLIT_CONFIG: canonical_json(
                {
                    "sources": sources,
                    "wranglers": record_wranglers,
                    "out_dir": SPLIT_DIR,
                    "manifest": SPLIT_MANIFEST,
                    "max_species": MAX_SPECIES,
                }
            ),
        }
        staged = [*occurrences, *([name_map] if name_map else [])]
        rule = Rule(
            "split",
            [PYTHON, HELPER, "split", SPLIT_CONFIG],
            inputs=[HELPER, SPLIT_CONFIG, *staged],
            # A folder output: the species are known only once it is written.
            outputs=[SPLIT_DIR, SPLIT_MANIFEST],
            category=SPLIT,
        )
        categories = {SPLIT: CATEGORIES[SPLIT]}
        makeflow = render_makeflow([rule], categories, SPLIT, sources=[*staged, *files])
        return Stage(SPLIT, makeflow, files)

    def _clean_stage(self, params: dict, split_files: list[str]) -> Stage:
        slugs = species_files(split_files)
        species_wranglers = [w for w in params["wranglers"] if WRANGLERS[w["type"]][0] == CLEAN]
        files = {
            HELPER: HELPER_SCRIPT,
            SPECIES_WRANGLERS: canonical_json([_lmpy_config(w, None) for w in species_wranglers]),
        }
        per_rule = math.ceil(len(slugs) / MAX_CLEAN_RULES)
        rules, cleaned, reports = [], [], []
        for number, start in enumerate(range(0, len(slugs), per_rule), start=1):
            group = slugs[start : start + per_rule]
            commands = []
            for slug in group:
                source = f"{SPLIT_DIR}/{slug}.csv"
                target = f"{SPECIES_DIR}/{slug}.csv"
                report = f"{REPORT_DIR}/{slug}.json"
                commands.append(
                    [
                        "wrangle_occurrences",
                        "-sp",
                        "species_name",
                        "-x",
                        "x",
                        "-y",
                        "y",
                        "-r",
                        report,
                        source,
                        target,
                        SPECIES_WRANGLERS,
                    ]
                )
                commands.append([PYTHON, HELPER, "ensure-csv", source, target])
                cleaned.append(target)
                reports.append(report)
            rules.append(
                Rule(
                    f"clean-{number:05d}",
                    commands[0],
                    then=commands[1:],
                    inputs=[HELPER, SPECIES_WRANGLERS, *(f"{SPLIT_DIR}/{s}.csv" for s in group)],
                    outputs=[*cleaned[-len(group) :], *reports[-len(group) :]],
                    category=CLEAN,
                )
            )
        files[GATHER_CONFIG] = canonical_json(
            {
                "split_manifest": SPLIT_MANIFEST,
                "species": [
                    {"slug": slug, "csv": csv, "report": report}
                    for slug, csv, report in zip(slugs, cleaned, reports, strict=True)
                ],
                "species_wranglers": species_wranglers,
                "manifest": MANIFEST,
                "species_list": SPECIES_LIST,
                "report": REPORT,
                "heatmap": {
                    "config": HEATMAP_CONFIG,
                    "image": HEATMAP,
                    "cells": params["heatmap_cells"],
                },
            }
        )
        rules.append(
            Rule(
                "gather",
                [PYTHON, HELPER, "gather", GATHER_CONFIG],
                then=[["create_point_heatmap", "--config_file", HEATMAP_CONFIG]],
                inputs=[HELPER, GATHER_CONFIG, SPLIT_MANIFEST, *cleaned, *reports],
                outputs=[MANIFEST, SPECIES_LIST, REPORT, HEATMAP_CONFIG, HEATMAP],
                category="gather",
            )
        )
        categories = {key: CATEGORIES[key] for key in (CLEAN, "gather")}
        sources = [*split_files, *files]
        makeflow = render_makeflow(rules, categories, CLEAN, sources=sources)
        return Stage(CLEAN, makeflow, files)


def species_files(split_files: list[str]) -> list[str]:
    """The species file stems the split stage made, checked to be the helper's safe names."""
    if SPLIT_MANIFEST not in split_files:
        raise ValueError(f"the split stage made no {SPLIT_MANIFEST}")
    slugs = []
    for path in split_files:
        if path == SPLIT_MANIFEST or path.startswith("logs/"):
            continue
        folder, _, name = path.rpartition("/")
        stem = name.removesuffix(".csv")
        if folder != SPLIT_DIR or stem == name or not SLUG.match(stem):
            raise ValueError(f"unexpected file from the split stage: {path!r}")
        slugs.append(stem)
    if not slugs:
        raise ValueError("the split stage made no species file")
    if len(slugs) > MAX_SPECIES:
        raise ValueError(f"{len(slugs)} species files: more than {MAX_SPECIES}")
    if len({slug.lower() for slug in slugs}) != len(slugs):
        raise ValueError("species file names differ only in case")
    return sorted(slugs)


# Runs on the workers (python3 with lmpy): the split, a header for emptied species files, and
# the gather of reports into the deliverables. Kept as text so the job folder holds what ran.
HELPER_SCRIPT = r'''"""Occurrence-cleaning helper run on workers: split, ensure-csv, gather."""

import csv
import json
import math
import os
import re
import shutil
import sys
import unicodedata

SLUG_CHARS = 80


def fail(message):
    print(f"occurrence-cleaning: {message}", file=sys.stderr)
    sys.exit(1)


def slug_of(name):
    """An ASCII file name stem for a species name: letters, digits and '_'."""
    text = unicodedata.normalize("NFKD", name.replace("\u00d7", "x"))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return text[:SLUG_CHARS].rstrip("_") or "species"


class SpeciesFiles:
    """Species name -> unique safe file; counts and bounds of the records written."""

    def __init__(self, out_dir, max_species):
        self.out_dir, self.max_species = out_dir, max_species
        self.slugs, self.taken, self.stats = {}, set(), {}

    def filename(self, name):
        slug = self.slugs.get(name)
        if slug is None:
            if len(self.slugs) >= self.max_species:
                fail(
                    f"more than {self.max_species} species after the record wranglers; "
                    "split the request (by taxon or region) into smaller ones"
                )
            base, number = slug_of(name), 1
            slug = base
            # Case-insensitive: the packaged deliverables may be unzipped on such a disk.
            while slug.lower() in self.taken:
                number += 1
                slug = f"{base}-{number}"
            self.slugs[name] = slug
            self.taken.add(slug.lower())
        return os.path.join(self.out_dir, slug + ".csv")

    def count(self, points):
        stats = self.stats.setdefault(
            points[0].species_name, [0, math.inf, math.inf, -math.inf, -math.inf]
        )
        for point in points:
            stats[0] += 1
            stats[1], stats[2] = min(stats[1], point.x), min(stats[2], point.y)
            stats[3], stats[4] = max(stats[3], point.x), max(stats[4], point.y)


def load_name_map(path):
    """Original name -> accepted name, from a JSON object or two-column CSV lines."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8-sig") as handle:
            loaded = json.load(handle)
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
        ):
            fail("the JSON name map must be an object of original name -> accepted name")
        pairs = list(loaded.items())
    else:
        pairs = []
        with open(path, encoding="utf-8-sig", newline="") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != 2:
                    fail(f"name map line {number}: expected 'original name,accepted name'")
                pairs.append((row[0], row[1]))
    name_map = {}
    for original, accepted in pairs:
        original, accepted = original.strip(), accepted.strip()
        if original and accepted:
            # lmpy capitalizes every species name it reads ("Old name_A" -> "Old name_a"):
            # keys must match the names as lmpy holds them.
            name_map[original.capitalize()] = accepted
    return name_map


def excluding(attribute, values):
    """Pass condition: no value of `attribute` (a list, or text split on ';') is in `values`."""
    bad = set(values)

    def passes(point):
        value = point.get_attribute(attribute)
        if value is None:
            return True
        items = value if isinstance(value, list) else str(value).split(";")
        return not any(str(item).strip() in bad for item in items)

    return passes


def build_wranglers(configs):
    from lmpy.data_wrangling.factory import WranglerFactory
    from lmpy.data_wrangling.occurrence.attribute_filter_wrangler import AttributeFilterWrangler

    factory, wranglers = WranglerFactory(), []
    for config in configs:
        kind = config["wrangler_type"]
        if kind == "AttributeFilterWrangler":
            # lmpy iterates the value itself: over the characters of a CSV text field.
            values = config["filter_func"]["for-each"]["values"]
            filter_func = excluding(config["attribute_name"], values)
            wranglers.append(AttributeFilterWrangler(config["attribute_name"], filter_func))
        elif kind == "AcceptedNameOccurrenceWrangler":
            config = dict(config, name_map=load_name_map(config["name_map"]))
            if config.pop("keep_unmapped", False):
                config["name_resolver"] = lambda names: {name: name for name in names}
            wranglers.extend(factory.get_wranglers([config]))
        else:
            wranglers.extend(factory.get_wranglers([config]))
    return wranglers


def open_reader(source):
    from lmpy.point import PointCsvReader, PointDwcaReader

    if source["format"] == "dwca":
        probe = PointDwcaReader(source["path"])
        probe.open()
        terms = set(probe.fields)
        probe.close()
        if "decimalLongitude" not in terms and "geoPoint" in terms:
            # iDigBio archives give coordinates only as geoPoint: {"lat": ..., "lon": ...}.
            return PointDwcaReader(
                source["path"], geopoint_term="geoPoint", x_term="lon", y_term="lat"
            )
        return PointDwcaReader(source["path"])

    class CsvReader(PointCsvReader):
        def open(self):
            # lmpy sniffs the dialect from three lines: quotes doubled further down then
            # split fields. Keep only the sniffed delimiter and read standard CSV quoting.
            super().open()
            delimiter = self.reader.reader.dialect.delimiter
            self.file.seek(0)
            self.reader = csv.DictReader(self.file, delimiter=delimiter)

    return CsvReader(
        source["path"],
        source["species_column"],
        source["x_column"],
        source["y_column"],
        encoding="utf-8-sig",
    )


def split(config_path):
    """Group all records by species into one CSV each, after the record-level wranglers."""
    from lmpy.data_preparation.occurrence_splitter import (
        OccurrenceSplitter,
        get_writer_key_from_fields_func,
    )

    class Splitter(OccurrenceSplitter):
        def open_writer(self, writer_key):
            # lmpy 3.1.21 names flush_writers without calling it: every file stays open.
            if len(self.writers) >= self.max_writers:
                self.flush_writers()
            super().open_writer(writer_key)

    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    out_dir = config["out_dir"]
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    files = SpeciesFiles(out_dir, config["max_species"])
    wranglers = build_wranglers(config["wranglers"])
    sources = []
    with Splitter(get_writer_key_from_fields_func("species_name"), files.filename) as splitter:
        for source in config["sources"]:
            reader = open_reader(source)
            read = kept = not_finite = 0
            reader.open()
            try:
                for points in reader:
                    read += len(points)
                    for wrangler in wranglers:
                        if points:
                            points = wrangler.wrangle_points(points)
                    # Wranglers change species_name, x and y, but lmpy writes the attributes.
                    for point in points:
                        point.attributes.update(
                            species_name=point.species_name, x=point.x, y=point.y
                        )
                    finite = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
                    not_finite += len(points) - len(finite)
                    if finite:
                        splitter.write_points(finite)
                        files.count(finite)
                        kept += len(finite)
            except KeyError as exc:
                fail(f"{source['path']} has no column {exc}")
            reader.close()
            sources.append(
                {
                    "input": source["path"],
                    "format": source["format"],
                    "records_read": read,
                    "records_kept": kept,
                    "records_without_finite_coordinates": not_finite,
                }
            )
    if not files.slugs:
        fail(
            "no records left after reading the inputs and applying the record wranglers "
            "(check the column names, the coordinates and the filters)"
        )
    species = []
    for name, slug in files.slugs.items():
        records, min_x, min_y, max_x, max_y = files.stats[name]
        species.append(
            {
                "slug": slug,
                "name": name,
                "records": records,
                "bounds": [min_x, min_y, max_x, max_y],
            }
        )
    species.sort(key=lambda item: item["slug"])
    reports = [{"name": w.name, **w.get_report()} for w in wranglers]
    write_json(config["manifest"], {"species": species, "sources": sources, "wranglers": reports})


def ensure_csv(source, target):
    """lmpy writes no file when every record is filtered out: write the header alone."""
    if os.path.exists(target):
        return
    with open(source, encoding="utf-8", newline="") as handle:
        header = handle.readline()
    with open(target, "w", encoding="utf-8", newline="") as handle:
        handle.write(header)


def gather(config_path):
    """Manifest, species list, summary report and the heatmap's configuration."""
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    with open(config["split_manifest"], encoding="utf-8") as handle:
        split_manifest = json.load(handle)
    split_species = {item["slug"]: item for item in split_manifest["species"]}
    manifest, kept, clean_records = {}, [], 0
    for entry in config["species"]:
        found = split_species.get(entry["slug"])
        if found is None:
            fail(f"species file {entry['slug']} is not in the split manifest")
        with open(entry["report"], encoding="utf-8") as handle:
            report = json.load(handle)
        manifest[entry["slug"]] = {
            "name": found["name"],
            "file": os.path.relpath(entry["csv"], os.path.dirname(config["manifest"])),
            "records_after_split": found["records"],
            "records_after_cleaning": report["output_records"],
        }
        if report["output_records"] > 0:
            kept.append((found, entry["csv"]))
            clean_records += report["output_records"]
    write_json(config["manifest"], manifest)
    with open(config["species_list"], "w", encoding="utf-8") as handle:
        names = sorted(found["name"] for found, _ in kept)
        handle.writelines(" ".join(name.splitlines()) + "\n" for name in names)
    write_json(
        config["report"],
        {
            "sources": split_manifest["sources"],
            "record_wranglers": split_manifest["wranglers"],
            "species_wranglers": config["species_wranglers"],
            "species_after_split": len(manifest),
            "records_after_split": sum(item["records"] for item in split_species.values()),
            "species_after_cleaning": len(kept),
            "records_after_cleaning": clean_records,
        },
    )
    fallback = config["species"][0]["csv"]
    settings = config["heatmap"]
    write_json(settings["config"], heatmap_config(settings, kept, clean_records, fallback))


def heatmap_config(settings, kept, clean_records, fallback):
    """create_point_heatmap arguments: the surviving records' extent in `cells` cells."""
    cells = settings["cells"]
    if kept:
        bounds = [found["bounds"] for found, _ in kept]
        min_x, min_y = min(b[0] for b in bounds), min(b[1] for b in bounds)
        max_x, max_y = max(b[2] for b in bounds), max(b[3] for b in bounds)
        span = max(max_x - min_x, max_y - min_y)
        resolution = span / cells if span > 0 else 1.0
        # One cell of margin keeps edge records off the frame.
        extent = [min_x - resolution, min_y - resolution, max_x + resolution, max_y + resolution]
        csvs = [[path, "species_name", "x", "y"] for _, path in kept]
        title = f"{clean_records} records of {len(kept)} species after cleaning"
    else:
        # Nothing to map: an empty world map (the files hold headers only).
        extent, resolution = [-180.0, -90.0, 180.0, 90.0], 360.0 / cells
        csvs = [[fallback, "species_name", "x", "y"]]
        title = "No records left after cleaning"
    min_x, min_y, max_x, max_y = extent
    return {
        "csv": csvs,
        "plot_filename": settings["image"],
        "min_x": min_x,
        "min_y": min_y,
        "max_x": max_x,
        "max_y": max_y,
        "resolution": resolution,
        "title": title,
    }


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


if __name__ == "__main__":
    commands = {"split": split, "ensure-csv": ensure_csv, "gather": gather}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        fail(f"usage: {sys.argv[0]} {{{','.join(commands)}}} ARGS...")
    commands[sys.argv[1]](*sys.argv[2:])
'''

WORKFLOW = OccurrenceCleaning()
