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
#   So the split runs scripts/occurrences.py: the same lmpy classes (readers, OccurrenceSplitter,
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

import copy
import math
import re
from collections.abc import Mapping

from translators.base import InputSpec, InvalidRequest, Stage, Workflow, canonical_json
from translators.common.chunks import groups
from translators.common.lmpy import PYTHON
from translators.common.scripts import script_text
from translators.makeflow import Category, Rule, render_makeflow
from translators.occurrence_cleaning.schema import (
    ACCEPTED_NAMES,
    CLEAN,
    MAP_ONLY,
    PARAMS_SCHEMA,
    SPLIT,
    WRANGLERS,
)
from translators.report import CATEGORY as REPORT_RULE
from translators.report import REPORT_CATEGORY, Figure, figure_path, report_files, report_rule

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
NAMES_CONFIG = f"{CONFIG}/names.json"
RESOLVE_CONFIG = f"{CONFIG}/resolve.json"
NAMES = "work/names.json"
RESOLVED_NAMES = "outputs/resolved_names.json"
RESOLVE = "resolve"
# For the report: the records the split dropped (counts, and a sample with coordinates), and
# what the report draws (written by the gather).
SPLIT_DROPPED = "work/split_dropped.json"
REPORT_POINTS = "work/report_points.json"
# At most this many kept and this many dropped records are mapped: a seeded random sample,
# the same on a rerun. 200,000 markers draw in a few seconds.
SAMPLE_LIMIT = 100_000
SAMPLE_SEED = 16
# The species the report's bar chart shows (those with the most records).
SPECIES_SHOWN = 40

# The name service: at most this many names a job (one request each), a pause between them
# (lmpy's resolve_names_gbif waits 0.5 s), a timeout and attempts per request.
MAX_RESOLVED_NAMES = 20_000
RESOLVE_WAIT_SECONDS = 0.1
RESOLVE_TIMEOUT_SECONDS = 30
RESOLVE_ATTEMPTS = 3

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
    # The one kind of rule that reaches the network: it reads a list of names (JSON written by
    # the names rule) and the name map, and asks the name service; it parses no upload.
    RESOLVE: Category(cores=1, memory=512, disk=512, network=True),
    REPORT_RULE: REPORT_CATEGORY,
}


def _lmpy_config(wrangler: dict, name_map: str | None) -> dict:
    """The lmpy configuration of one validated wrangler (scripts/occurrences.py reads two)."""
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
        "wranglers) on its own worker. Species names are kept exactly but for spaces (outer "
        "ones removed, inner runs made one) and case (lmpy capitalizes them: 'HEUCHERA alba' "
        "becomes 'Heuchera alba'); records without a name are dropped and counted; files get "
        "safe ASCII names. Everything that can be checked on the inputs is checked at "
        "submission (columns, every record's coordinates, the archive's meta.xml, the name "
        "map, the attribute_filter's attribute). Deliverables: "
        "outputs/species/<file>.csv per species (a header alone when nothing is left), "
        "outputs/species.json (file name -> species name and record counts), "
        "outputs/species_list.txt (species with records left), outputs/cleaning_report.json "
        "(records per input and per record wrangler), outputs/point_heatmap.png and, with "
        "name_resolver gbif, outputs/resolved_names.json (the name map with GBIF's answers, "
        f"in lmpy's JSON form), and outputs/report.html with its figures in outputs/figures/ "
        "(records kept and dropped per cleaning step and per species, a map of the kept "
        "and dropped records). At most "
        f"{MAX_SPECIES:,} species per job."
    )
    params_schema = PARAMS_SCHEMA
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
            formats=("csv", "json", "txt"),
            required=False,
            description=(
                "Accepted names for the accepted_names wrangler, in either form lmpy writes "
                "(its resolve_names_gbif, its wrangler's out_map_filename): a JSON object of "
                "original name -> accepted name, null for a name left unresolved; or "
                "'original name,accepted name' lines (a 'Name,Accepted' header line is "
                "skipped, 'None' or nothing after the comma is unresolved; quote a name "
                "holding a comma). Told apart by content: JSON starts with '{'. Checked at "
                "submission: a map that does not read is a 400 naming inputs.name_map."
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
                    "properties": {"wranglers": {"contains": MAP_ONLY}},
                    "required": ["wranglers"],
                }
            },
            "required": ["params"],
        }
        has_map = {"properties": {"inputs": {"required": ["name_map"]}}, "required": ["inputs"]}
        any_names = copy.deepcopy(uses_map)
        any_names["properties"]["params"]["properties"]["wranglers"]["contains"] = ACCEPTED_NAMES
        # The name map is the accepted_names wrangler's argument (optional with a resolver):
        # one without the other is a mistake that the submitter can fix.
        schema["allOf"] = [{"if": uses_map, "then": has_map}, {"if": has_map, "then": any_names}]
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
            return self._clean_stage(params, inputs, produced[SPLIT])
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
        staged = [*occurrences, *([name_map] if name_map else [])]
        files = {HELPER: HELPER_SCRIPT}
        rules = []
        resolver = next(
            (
                w
                for w in params["wranglers"]
                if w["type"] == "accepted_names" and "name_resolver" in w
            ),
            None,
        )
        split_map = name_map
        if resolver is not None:
            rules += self._resolve_rules(resolver, sources, name_map, files)
            split_map = RESOLVED_NAMES
        record_wranglers = [
            _lmpy_config(w, split_map)
            for w in params["wranglers"]
            if WRANGLERS[w["type"]][0] == SPLIT
        ]
        files[SPLIT_CONFIG] = canonical_json(
            {
                "sources": sources,
                "wranglers": record_wranglers,
                "out_dir": SPLIT_DIR,
                "manifest": SPLIT_MANIFEST,
                "max_species": MAX_SPECIES,
                "dropped": {"path": SPLIT_DROPPED, "limit": SAMPLE_LIMIT, "seed": SAMPLE_SEED},
            }
        )
        resolved = [RESOLVED_NAMES] if resolver is not None else []
        rules.append(
            Rule(
                "split",
                [PYTHON, HELPER, "split", SPLIT_CONFIG],
                inputs=[HELPER, SPLIT_CONFIG, *staged, *resolved],
                # A folder output: the species are known only once it is written.
                outputs=[SPLIT_DIR, SPLIT_MANIFEST, SPLIT_DROPPED],
                category=SPLIT,
            )
        )
        categories = {key: CATEGORIES[key] for key in {rule.category for rule in rules}}
        makeflow = render_makeflow(rules, categories, SPLIT, sources=[*staged, *files])
        return Stage(SPLIT, makeflow, files)

    def _resolve_rules(
        self, resolver: dict, sources: list[dict], name_map: str | None, files: dict
    ) -> list[Rule]:
        """List the names the map lacks (no network), then ask the name service for them."""
        api_url = resolver.get("api_url")
        if not isinstance(api_url, str) or not api_url:
            # Recorded at submission from the deployment's setting (jobs/validation.py).
            raise ValueError("the name resolver's service URL was not recorded at submission")
        files[NAMES_CONFIG] = canonical_json(
            {
                "sources": sources,
                "name_map": name_map,
                "out": NAMES,
                "max_names": MAX_RESOLVED_NAMES,
            }
        )
        files[RESOLVE_CONFIG] = canonical_json(
            {
                "names": NAMES,
                "name_map": name_map,
                "api_url": api_url,
                "out": RESOLVED_NAMES,
                "wait": RESOLVE_WAIT_SECONDS,
                "timeout": RESOLVE_TIMEOUT_SECONDS,
                "attempts": RESOLVE_ATTEMPTS,
            }
        )
        map_input = [name_map] if name_map else []
        occurrences = [source["path"] for source in sources]
        return [
            Rule(
                "names",
                [PYTHON, HELPER, "names", NAMES_CONFIG],
                inputs=[HELPER, NAMES_CONFIG, *occurrences, *map_input],
                outputs=[NAMES],
                category=SPLIT,
            ),
            Rule(
                "resolve-names",
                [PYTHON, HELPER, "resolve", RESOLVE_CONFIG],
                inputs=[HELPER, RESOLVE_CONFIG, NAMES, *map_input],
                outputs=[RESOLVED_NAMES],
                category=RESOLVE,
            ),
        ]

    def _clean_stage(self, params: dict, inputs: dict, split_files: list[str]) -> Stage:
        slugs = species_files(split_files)
        species_wranglers = [w for w in params["wranglers"] if WRANGLERS[w["type"]][0] == CLEAN]
        files = {
            HELPER: HELPER_SCRIPT,
            SPECIES_WRANGLERS: canonical_json([_lmpy_config(w, None) for w in species_wranglers]),
        }
        per_rule = math.ceil(len(slugs) / MAX_CLEAN_RULES)
        rules, cleaned, reports = [], [], []
        for number, group in enumerate(groups(slugs, per_rule), start=1):
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
        # A split from before the report (no SPLIT_DROPPED) leaves its drops off the map.
        split_dropped = SPLIT_DROPPED if SPLIT_DROPPED in split_files else None
        split_csvs = [f"{SPLIT_DIR}/{slug}.csv" for slug in slugs]
        files[GATHER_CONFIG] = canonical_json(
            {
                "split_manifest": SPLIT_MANIFEST,
                "species": [
                    {"slug": slug, "csv": csv, "report": report, "split": split}
                    for slug, csv, report, split in zip(
                        slugs, cleaned, reports, split_csvs, strict=True
                    )
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
                "report_points": {
                    "path": REPORT_POINTS,
                    "split_dropped": split_dropped,
                    "limit": SAMPLE_LIMIT,
                    "seed": SAMPLE_SEED,
                },
            }
        )
        rules.append(
            Rule(
                "gather",
                [PYTHON, HELPER, "gather", GATHER_CONFIG],
                then=[["create_point_heatmap", "--config_file", HEATMAP_CONFIG]],
                # The split files too: the report's counts per species wrangler replay them
                # (lmpy's wrangle_occurrences reports none), which doubles what the gather reads.
                inputs=[
                    HELPER,
                    GATHER_CONFIG,
                    SPLIT_MANIFEST,
                    *cleaned,
                    *reports,
                    *split_csvs,
                    *([split_dropped] if split_dropped else []),
                ],
                outputs=[MANIFEST, SPECIES_LIST, REPORT, HEATMAP_CONFIG, HEATMAP, REPORT_POINTS],
                category="gather",
            )
        )
        figures = _figures(params)
        delivered = [MANIFEST, SPECIES_LIST, REPORT, HEATMAP]
        if RESOLVED_NAMES in split_files:
            delivered.append(RESOLVED_NAMES)
        listed = (
            [*delivered, *cleaned]
            if len(cleaned) <= 50
            else [
                *delivered,
                f"{SPECIES_DIR}/ ({len(cleaned):,} files, one per species: see species.json)",
            ]
        )
        rules.append(report_rule(figures, delivered))
        files.update(report_files(self.title, self.name, params, inputs, figures, listed))
        categories = {key: CATEGORIES[key] for key in (CLEAN, "gather", REPORT_RULE)}
        sources = [*split_files, *files]
        makeflow = render_makeflow(rules, categories, CLEAN, sources=sources)
        return Stage(CLEAN, makeflow, files)


def species_files(split_files: list[str]) -> list[str]:
    """The species file stems the split stage made, checked to be the helper's safe names."""
    if SPLIT_MANIFEST not in split_files:
        raise ValueError(f"the split stage made no {SPLIT_MANIFEST}")
    slugs = []
    for path in split_files:
        if path in (SPLIT_MANIFEST, SPLIT_DROPPED, NAMES, RESOLVED_NAMES) or path.startswith(
            "logs/"
        ):
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


def _steps(params: dict) -> tuple[list[dict], int | None, list[str]]:
    """The steps that drop records, in the order they run, with the labels the report shows;
    the coordinate system of the records mapped (the last conversion's target, else None);
    and the steps whose drops are in another coordinate system (before that conversion)."""
    steps = [{"key": "name", "label": "no species name"}]
    record, species, epsg, before = 0, 0, None, []
    for number, wrangler in enumerate(params["wranglers"]):
        label = f"{wrangler['type']} (wranglers[{number}])"
        if WRANGLERS[wrangler["type"]][0] == SPLIT:
            steps.append({"key": f"record-{record}", "label": label})
            if wrangler["type"] == "coordinate_conversion":
                epsg, before = wrangler["target_epsg"], [s["key"] for s in steps]
            record += 1
    steps.append({"key": "coordinates", "label": "no finite coordinates"})
    for number, wrangler in enumerate(params["wranglers"]):
        if WRANGLERS[wrangler["type"]][0] == CLEAN:
            label = f"{wrangler['type']} (wranglers[{number}])"
            steps.append({"key": f"species-{species}", "label": label})
            species += 1
    return steps, epsg, before


def _figures(params: dict) -> list[Figure]:
    """The report's figures: records kept and dropped per step and per species, and a map of
    the kept against the dropped records."""
    steps, epsg, before = _steps(params)
    sample = (
        f"at most {SAMPLE_LIMIT:,} kept and {SAMPLE_LIMIT:,} dropped records are drawn "
        f"(a seeded random sample when there are more)"
    )
    common = {"points": REPORT_POINTS, "steps": steps}
    return [
        Figure(
            figure_path("records per step"),
            "occurrences.steps",
            "Records each cleaning step received, split into those it passed on (kept) and "
            "those it dropped, in the order the steps run: records without a species name, "
            "the record wranglers while splitting by species, records without finite "
            "coordinates, then the species wranglers on each species (lmpy reports no count "
            "per species wrangler: they are replayed on the split files).",
            [REPORT_POINTS],
            common,
        ),
        Figure(
            figure_path("records per species"),
            "occurrences.species",
            f"Records kept and dropped per species, for the {SPECIES_SHOWN} species with the "
            "most records (kept + dropped); a record is counted under its name when it was "
            "dropped (a record dropped for an unmapped name under the name it had).",
            [REPORT_POINTS],
            {**common, "shown": SPECIES_SHOWN},
        ),
        Figure(
            figure_path("kept and dropped records"),
            "occurrences.points_map",
            "Map of the records kept (circles) and dropped (crosses) by cleaning, kept drawn "
            f"over dropped (a repeated locality dropped lies under its kept twin); {sample}.",
            [REPORT_POINTS],
            {**common, "epsg": epsg, "other_crs": before},
        ),
    ]


# Runs on the workers (python3 with lmpy): the split, a header for emptied species files, and
# the gather of reports into the deliverables (translators/occurrence_cleaning/scripts/).
HELPER_SCRIPT = script_text(__package__, "occurrences.py")

WORKFLOW = OccurrenceCleaning()
