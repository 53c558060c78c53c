"""occurrence-cleaning: schema, both stages, safe species file names, and the worker helper."""

import copy
import json
import posixpath
import shutil
import subprocess
import sys

import pytest
from jsonschema import ValidationError
from support import (
    assert_makeflow_accepts,
    assert_refused_while_twin_passes,
    check_closed_dag,
    drop_at,
    request_validator,
    rules_by_id,
    set_param,
    steps,
)

from tests import synthetic
from translators import InvalidRequest
from translators.base import canonical_json
from translators.makeflow import check_path
from translators.occurrence_cleaning.scripts import occurrences
from translators.occurrence_cleaning.workflow import (
    HELPER_SCRIPT,
    MAX_CLEAN_RULES,
    MAX_SPECIES,
    RESOLVED_NAMES,
    SLUG,
    WORKFLOW,
)

CSV_ID = "00000000-0000-0000-0000-000000000001"
DWCA_ID = "00000000-0000-0000-0000-000000000002"
MAP_ID = "00000000-0000-0000-0000-000000000003"
CSV = "inputs/occurrences-0.csv"
DWCA = "inputs/occurrences-1.zip"
NAME_MAP = "inputs/name_map.csv"
SPLIT_LOGS = ["logs/split.stderr", "logs/split.stdout"]
ODD_NAMES = [
    "Heuchera \u00d7brizoides",
    "Heuchera 'Palace Purple'",
    'Heuchera "quoted" name',
    "Heuchera a/b",
    "Heuchera a b",
    "Heuchera $(touch pwned); rm -rf x",
    "../escape",
    "/tmp/absolute",
    "-rf",
    ".",
    "",
    "Heuchera é accent",
    "Heuchera\ttab\nnewline",
    "x" * 300,
]


def request(staged, **params):
    ids = iter([CSV_ID, DWCA_ID])
    inputs = {"occurrences": [next(ids) for _ in staged["occurrences"]]}
    if "name_map" in staged:
        inputs["name_map"] = MAP_ID
    return {"workflow": WORKFLOW.name, "inputs": inputs, "params": params}


def plan(staged, done=(), produced=None, **params):
    return WORKFLOW.plan(request(staged, **params), staged, list(done), produced)


def split_products(*slugs, dropped=True):
    """What a split stage leaves: its logs, manifest, species files and (since the report)
    the records it dropped."""
    made = [*SPLIT_LOGS, "work/split.json", *(f"work/split/{s}.csv" for s in slugs)]
    return sorted([*made, *(["work/split_dropped.json"] if dropped else [])])


EXAMPLE_STAGED = {"occurrences": [CSV, DWCA], "name_map": NAME_MAP}
GOLDEN = {
    "csv-defaults-split": ({"occurrences": [CSV]}, [], None, {}),
    "example-split": (EXAMPLE_STAGED, [], None, WORKFLOW.example["params"]),
    "example-clean": (
        EXAMPLE_STAGED,
        ["split"],
        {"split": split_products("Acer_rubrum", "Heuchera_americana", "Heuchera_xbrizoides")},
        WORKFLOW.example["params"],
    ),
    "defaults-one-species-clean": (
        {"occurrences": [CSV]},
        ["split"],
        {"split": split_products("Acer_rubrum")},
        {"heatmap_cells": 360},
    ),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_each_case_matches_its_golden_files(name, golden):
    staged, done, produced, params = GOLDEN[name]
    stage = plan(staged, done, produced, **params)
    golden(f"occurrence-cleaning-{name}.makeflow.json", stage.dumps())
    golden(f"occurrence-cleaning-{name}.files.json", canonical_json(stage.files))


@pytest.mark.parametrize("name", list(GOLDEN))
def test_each_golden_case_is_a_closed_dag_that_delivers_outputs(name):
    staged, done, produced, params = GOLDEN[name]
    stage = plan(staged, done, produced, **params)
    sources = [
        *staged["occurrences"],
        *([staged["name_map"]] if "name_map" in staged else []),
        *(produced or {}).get("split", []),
    ]
    made = check_closed_dag(stage, sources)
    assert any(path.startswith("outputs/") for path in made) == (stage.name == "clean")
    again = plan(staged, done, produced, **params)
    assert again.dumps() == stage.dumps() and again.files == stage.files


def test_the_stages_run_split_then_clean_then_nothing():
    staged = {"occurrences": [CSV]}
    assert plan(staged).name == "split"
    produced = {"split": split_products("Heuchera_alba")}
    assert plan(staged, ["split"], produced).name == "clean"
    assert plan(staged, ["split", "clean"], produced) is None


def test_the_split_stage_sends_every_input_to_one_rule_with_a_folder_output():
    stage = plan(EXAMPLE_STAGED, **WORKFLOW.example["params"])
    (rule,) = stage.makeflow["rules"]
    assert steps(rule) == [
        ["python3", "work/config/occurrences.py", "split", "work/config/split.json"]
    ]
    assert set(EXAMPLE_STAGED["occurrences"]) | {NAME_MAP} <= set(rule["inputs"])
    assert rule["outputs"][:2] == ["work/split", "work/split.json"]
    config = json.loads(stage.files["work/config/split.json"])
    assert config["sources"] == [
        {
            "path": CSV,
            "format": "csv",
            "species_column": "species_name",
            "x_column": "x",
            "y_column": "y",
        },
        {"path": DWCA, "format": "dwca"},
    ]
    assert config["max_species"] == MAX_SPECIES
    assert stage.files["work/config/occurrences.py"] == HELPER_SCRIPT


def test_record_wranglers_run_in_the_split_and_species_wranglers_per_species():
    wranglers = [
        {"type": "minimum_points", "minimum_count": 5},
        {"type": "coordinate_conversion", "source_epsg": 4326, "target_epsg": 5070},
        {"type": "unique_localities"},
        {"type": "attribute_filter", "attribute": "flags", "exclude": ["rev_geocode_mismatch"]},
        {"type": "accepted_names", "unmapped": "drop"},
        {"type": "decimal_precision", "decimal_places": 3},
        {"type": "bounding_box", "min_x": -130, "min_y": 20, "max_x": -60, "max_y": 55},
    ]
    split = plan(EXAMPLE_STAGED, wranglers=wranglers)
    assert json.loads(split.files["work/config/split.json"])["wranglers"] == [
        {"wrangler_type": "CoordinateConverterWrangler", "source_epsg": 4326, "target_epsg": 5070},
        {
            "wrangler_type": "AttributeFilterWrangler",
            "attribute_name": "flags",
            "filter_func": {
                "for-each": {"condition": "not-in", "values": ["rev_geocode_mismatch"]}
            },
        },
        {
            "wrangler_type": "AcceptedNameOccurrenceWrangler",
            "name_map": NAME_MAP,
            "keep_unmapped": False,
        },
        {"wrangler_type": "DecimalPrecisionFilter", "decimal_places": 3},
        {
            "wrangler_type": "BoundingBoxFilter",
            "min_x": -130,
            "min_y": 20,
            "max_x": -60,
            "max_y": 55,
        },
    ]
    clean = plan(EXAMPLE_STAGED, ["split"], {"split": split_products("A")}, wranglers=wranglers)
    assert json.loads(clean.files["work/config/species_wranglers.json"]) == [
        {"wrangler_type": "MinimumPointsWrangler", "minimum_count": 5},
        {"wrangler_type": "UniqueLocalitiesFilter"},
    ]


def test_the_clean_stage_has_a_rule_per_species_and_a_gather():
    slugs = ["Acer_rubrum", "Heuchera_a_b", "Heuchera_a_b-2", "species"]
    stage = plan({"occurrences": [CSV]}, ["split"], {"split": split_products(*slugs)})
    rules = rules_by_id(stage)
    assert list(rules) == [
        "clean-00001",
        "clean-00002",
        "clean-00003",
        "clean-00004",
        "gather",
        "report",
    ]
    wrangle, ensure = steps(rules["clean-00003"])[:2]
    assert wrangle == [
        "wrangle_occurrences",
        "-sp",
        "species_name",
        "-x",
        "x",
        "-y",
        "y",
        "-r",
        "work/reports/Heuchera_a_b-2.json",
        "work/split/Heuchera_a_b-2.csv",
        "outputs/species/Heuchera_a_b-2.csv",
        "work/config/species_wranglers.json",
    ]
    assert ensure == [
        "python3",
        "work/config/occurrences.py",
        "ensure-csv",
        "work/split/Heuchera_a_b-2.csv",
        "outputs/species/Heuchera_a_b-2.csv",
    ]
    gather = rules["gather"]
    assert steps(gather) == [
        ["python3", "work/config/occurrences.py", "gather", "work/config/gather.json"],
        ["create_point_heatmap", "--config_file", "work/heatmap.json"],
    ]
    assert gather["outputs"][:5] == [
        "outputs/species.json",
        "outputs/species_list.txt",
        "outputs/cleaning_report.json",
        "work/heatmap.json",
        "outputs/point_heatmap.png",
    ]
    config = json.loads(stage.files["work/config/gather.json"])
    assert [entry["slug"] for entry in config["species"]] == slugs
    assert {f"outputs/species/{s}.csv" for s in slugs} <= set(gather["inputs"])
    # The report's counts replay the species wranglers on the split files.
    assert {f"work/split/{s}.csv" for s in slugs} | {"work/split_dropped.json"} <= set(
        gather["inputs"]
    )
    assert gather["outputs"][5] == "work/report_points.json"
    report = rules["report"]
    assert not any(str(i).startswith(("outputs/species/", "work/split")) for i in report["inputs"])


def test_a_split_from_before_the_report_plans_a_gather_without_its_drops():
    produced = {"split": split_products("Acer_rubrum", dropped=False)}
    stage = plan({"occurrences": [CSV]}, ["split"], produced)
    check_closed_dag(stage, produced["split"])
    config = json.loads(stage.files["work/config/gather.json"])
    assert config["report_points"]["split_dropped"] is None


@pytest.mark.parametrize(("species", "rules"), [(1, 1), (1000, 1000), (1001, 501), (2500, 834)])
def test_many_species_are_grouped_so_no_makeflow_exceeds_the_rule_limit(species, rules):
    slugs = [f"Species_{n:05d}" for n in range(species)]
    stage = plan({"occurrences": [CSV]}, ["split"], {"split": split_products(*slugs)})
    cleaning = [r for r in stage.makeflow["rules"] if r["category"] == "clean"]
    assert len(cleaning) == rules <= MAX_CLEAN_RULES
    cleaned = [s[-2] for r in cleaning for s in steps(r) if s[0] == "wrangle_occurrences"]
    assert cleaned == [f"outputs/species/{s}.csv" for s in slugs]
    assert max(len(r["command"]) for r in stage.makeflow["rules"]) < 10_000


def test_the_largest_split_plans_a_closed_dag():
    slugs = [f"Species_{n:05d}" for n in range(MAX_SPECIES)]
    produced = {"split": split_products(*slugs)}
    stage = plan({"occurrences": [CSV]}, ["split"], produced)
    check_closed_dag(stage, produced["split"])


@pytest.mark.parametrize(
    "path",
    [
        "work/split/Heuchera alba.csv",
        "work/split/$(touch x).csv",
        "work/split/a/b.csv",
        "work/split/-rf.csv",
        "work/split/.hidden.csv",
        "work/split/Heuchera_alba.txt",
        "work/other/Heuchera_alba.csv",
        "outputs/x.csv",
    ],
)
def test_the_clean_stage_refuses_species_files_the_helper_would_not_make(path):
    good = split_products("Heuchera_alba")
    plan({"occurrences": [CSV]}, ["split"], {"split": good})
    with pytest.raises(ValueError, match="unexpected file"):
        plan({"occurrences": [CSV]}, ["split"], {"split": sorted([*good, path])})


def test_the_clean_stage_needs_the_split_products_within_limits():
    staged = {"occurrences": [CSV]}
    with pytest.raises(ValueError, match="split stage"):
        plan(staged, ["split"], {})
    with pytest.raises(ValueError, match=r"no work/split\.json"):
        plan(staged, ["split"], {"split": ["work/split/A.csv"]})
    with pytest.raises(ValueError, match="no species file"):
        plan(staged, ["split"], {"split": split_products()})
    with pytest.raises(ValueError, match="only in case"):
        plan(staged, ["split"], {"split": split_products("Abc", "ABC")})
    too_many = [f"S{n}" for n in range(MAX_SPECIES + 1)]
    with pytest.raises(ValueError, match="more than"):
        plan(staged, ["split"], {"split": split_products(*too_many)})


def test_a_staged_path_with_awkward_characters_stays_one_argument_and_valid_json():
    odd = "inputs/my occ $x;'q'-0.csv"
    stage = plan({"occurrences": [odd, DWCA]})
    (rule,) = stage.makeflow["rules"]
    assert odd in rule["inputs"]
    assert json.loads(stage.files["work/config/split.json"])["sources"][0]["path"] == odd
    assert all(len(step) == 4 for step in steps(rule))


@pytest.mark.parametrize(
    ("staged", "problem"),
    [
        ({"occurrences": ["inputs/occurrences-0.tsv"]}, "not one of"),
        ({"occurrences": "inputs/occurrences-0.csv"}, "expected a list"),
        ({"occurrences": ["/data/occurrences-0.csv"]}, "relative"),
        ({"occurrences": [CSV], "name_map": "inputs/name_map.tif"}, "not one of"),
    ],
)
def test_bad_staged_inputs_are_refused(staged, problem):
    good = {"occurrences": [CSV], **({"name_map": NAME_MAP} if "name_map" in staged else {})}
    wranglers = [{"type": "accepted_names"}] if "name_map" in staged else []
    WORKFLOW.plan(request(good, wranglers=wranglers), good, [])
    with pytest.raises(InvalidRequest, match=problem):
        WORKFLOW.plan(request(good, wranglers=wranglers), staged, [])


# --- the request schema ---------------------------------------------------------------------


def test_the_example_is_a_valid_complete_request():
    example = WORKFLOW.example
    request_validator(WORKFLOW).validate(example)
    WORKFLOW.validate(example)
    assert set(example["params"]) == set(WORKFLOW.params_schema["properties"])
    assert set(example["inputs"]) == set(WORKFLOW.dataset_inputs)
    kinds = {w["type"] for w in example["params"]["wranglers"]}
    assert "minimum_points" in kinds


def test_defaults_fill_columns_wranglers_and_heatmap():
    assert WORKFLOW.with_defaults({}) == {
        "species_column": "species_name",
        "x_column": "x",
        "y_column": "y",
        "wranglers": [],
        "heatmap_cells": 100,
    }


def _wranglers(*items):
    def change(request):
        request["params"]["wranglers"] = list(items)

    return change


BOX = {"type": "bounding_box", "min_x": -130, "min_y": 20, "max_x": -60, "max_y": 55}
BAD = {
    "gbif resolver type": _wranglers({"type": "gbif_resolver"}),
    "raw lmpy wrangler": _wranglers({"wrangler_type": "AcceptedNameOccurrenceWrangler"}),
    "name resolver not offered": _wranglers({"type": "accepted_names", "name_resolver": "col"}),
    "name service URL from the user": _wranglers(
        {"type": "accepted_names", "name_resolver": "gbif", "api_url": "http://127.0.0.1:1/"}
    ),
    "name map path in params": _wranglers({"type": "accepted_names", "name_map": "/etc/passwd"}),
    "module injection": _wranglers({**BOX, "module": "os"}),
    "spatial index": _wranglers({"type": "spatial_index", "spatial_index": "/data/index"}),
    "geometry filter": _wranglers({"type": "intersect_geometries", "geometry_wkts": []}),
    "wrangler without type": _wranglers({"minimum_count": 3}),
    "wrangler not an object": _wranglers("MinimumPointsWrangler"),
    "minimum count zero": _wranglers({"type": "minimum_points", "minimum_count": 0}),
    "minimum count as text": _wranglers({"type": "minimum_points", "minimum_count": "5"}),
    "minimum count missing": _wranglers({"type": "minimum_points"}),
    "decimal places above 10": _wranglers({"type": "decimal_precision", "decimal_places": 11}),
    "box coordinate huge": _wranglers({**BOX, "max_x": 1e9}),
    "box coordinate missing": _wranglers({k: v for k, v in BOX.items() if k != "max_y"}),
    "epsg out of range": _wranglers(
        {"type": "coordinate_conversion", "source_epsg": 4326, "target_epsg": 99999}
    ),
    "epsg as text": _wranglers(
        {"type": "coordinate_conversion", "source_epsg": "EPSG:4326", "target_epsg": 5070}
    ),
    "attribute name too long": _wranglers(
        {"type": "attribute_filter", "attribute": "a" * 65, "exclude": ["x"]}
    ),
    "attribute value too long": _wranglers(
        {"type": "attribute_filter", "attribute": "flags", "exclude": ["v" * 201]}
    ),
    "attribute nothing to exclude": _wranglers(
        {"type": "attribute_filter", "attribute": "flags", "exclude": []}
    ),
    "unmapped unknown": _wranglers({"type": "accepted_names", "unmapped": "resolve"}),
    "two accepted names": _wranglers({"type": "accepted_names"}, {"type": "accepted_names"}),
    "accepted names without a map": lambda r: (
        drop_at(("inputs", "name_map"))(r),
        _wranglers({"type": "accepted_names"})(r),
    ),
    "a map without accepted names": _wranglers(BOX),
    "more than 20 wranglers": _wranglers({"type": "accepted_names"}, *[BOX] * 20),
    "column too long": set_param("species_column", "s" * 65),
    "column empty": set_param("x_column", ""),
    "column with a newline": set_param("y_column", "y\nz"),
    "column with outer spaces": set_param("y_column", " y "),
    "heatmap cells too few": set_param("heatmap_cells", 9),
    "heatmap cells too many": set_param("heatmap_cells", 1001),
    "unknown param": set_param("wrangler_config", "/tmp/w.json"),
    "occurrences not a list": lambda r: r["inputs"].update(occurrences=CSV_ID),
    "occurrences empty": lambda r: r["inputs"].update(occurrences=[]),
    "occurrences repeated": lambda r: r["inputs"].update(occurrences=[CSV_ID, CSV_ID]),
}


@pytest.mark.parametrize("label", list(BAD))
def test_a_bad_request_fails_while_its_unchanged_twin_passes(label):
    assert_refused_while_twin_passes(WORKFLOW, BAD[label])


def test_every_wrangler_type_is_accepted_at_its_limits():
    request = copy.deepcopy(WORKFLOW.example)
    request["params"]["wranglers"] = [
        {"type": "accepted_names", "unmapped": "drop"},
        {"type": "attribute_filter", "attribute": "a" * 64, "exclude": ["v" * 200] * 1},
        {"type": "bounding_box", "min_x": -1e8, "min_y": -1e8, "max_x": 1e8, "max_y": 1e8},
        {"type": "coordinate_conversion", "source_epsg": 1024, "target_epsg": 32767},
        {"type": "decimal_precision", "decimal_places": 0},
        {"type": "minimum_points", "minimum_count": 1_000_000},
        {"type": "unique_localities"},
        *[{"type": "unique_localities"}] * 13,
    ]
    request["params"]["heatmap_cells"] = 1000
    request["params"]["species_column"] = "dwc:scientific Name"
    request_validator(WORKFLOW).validate(request)
    WORKFLOW.validate(request)


def test_a_request_without_a_name_map_or_wranglers_is_valid():
    request = {"workflow": WORKFLOW.name, "inputs": {"occurrences": [CSV_ID]}}
    request_validator(WORKFLOW).validate(request)
    WORKFLOW.validate(request)


def test_an_empty_bounding_box_is_refused_when_planning():
    request = copy.deepcopy(WORKFLOW.example)
    request["params"]["wranglers"][1]["min_x"] = request["params"]["wranglers"][1]["max_x"]
    request_validator(WORKFLOW).validate(request)  # JSON Schema cannot compare two fields
    with pytest.raises(InvalidRequest, match="wranglers/1: min_x must be below max_x"):
        WORKFLOW.validate(request)


# --- the helper script that runs on the workers ---------------------------------------------


@pytest.fixture(scope="module")
def helper():
    """The helper's functions, imported from its module in the workflow package."""
    return vars(occurrences)


def test_slugs_are_safe_unique_paths_even_for_odd_names(helper, tmp_path):
    files = helper["SpeciesFiles"](str(tmp_path / "split"), 100)
    paths = [files.filename(name) for name in ODD_NAMES]
    stems = [posixpath.basename(p).removesuffix(".csv") for p in paths]
    assert len({s.lower() for s in stems}) == len(ODD_NAMES)
    for path, stem in zip(paths, stems, strict=True):
        assert posixpath.dirname(path) == str(tmp_path / "split")
        assert SLUG.match(stem), stem
        check_path(f"outputs/species/{stem}.csv")
    assert stems[:5] == [
        "Heuchera_xbrizoides",
        "Heuchera_Palace_Purple",
        "Heuchera_quoted_name",
        "Heuchera_a_b",
        "Heuchera_a_b-2",
    ]
    assert files.filename("Heuchera a/b").endswith("/Heuchera_a_b.csv")
    assert [stems[ODD_NAMES.index(".")], stems[ODD_NAMES.index("")]] == ["species", "species-2"]
    assert len(stems[-1]) == 80


def test_the_helper_stops_at_the_species_limit(helper, tmp_path):
    files = helper["SpeciesFiles"](str(tmp_path), 2)
    files.filename("A a")
    files.filename("B b")
    files.filename("A a")
    with pytest.raises(SystemExit):
        files.filename("C c")


def test_name_maps_are_read_like_lmpy_reads_names(helper, tmp_path):
    sample = tmp_path / "name_map.csv"
    sample.write_text(
        'Old name_A, New name_A\nOld name_A2, New name_A\n\n"Old, quoted",New_name_B\n'
    )
    assert helper["load_name_map"](str(sample)) == {
        "Old name_a": "New name_A",
        "Old name_a2": "New name_A",
        "Old, quoted": "New_name_B",
    }
    as_json = tmp_path / "name_map.json"
    as_json.write_text(json.dumps({"heuchera Alba": "Heuchera alba"}))
    assert helper["load_name_map"](str(as_json)) == {"Heuchera alba": "Heuchera alba"}
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n")
    with pytest.raises(SystemExit):
        helper["load_name_map"](str(bad))


def test_the_attribute_filter_reads_lists_and_semicolon_text(helper):
    passes = helper["excluding"]("issue", ["ZERO_COORDINATE"])

    class Point:
        def __init__(self, value):
            self.value = value

        def get_attribute(self, name):
            return self.value

    assert not passes(Point("COUNTRY_MISMATCH; ZERO_COORDINATE"))
    assert not passes(Point(["ZERO_COORDINATE"]))
    assert passes(Point("ZERO"))
    assert passes(Point(None))


def test_ensure_csv_writes_a_header_only_when_the_tool_wrote_nothing(helper, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("species_name,x,y\r\nA a,1,2\r\n")
    target = tmp_path / "out.csv"
    helper["ensure_csv"](str(source), str(target))
    assert target.read_bytes() == b"species_name,x,y\r\n"
    target.write_text("kept")
    helper["ensure_csv"](str(source), str(target))
    assert target.read_text() == "kept"


def _gather_folder(tmp_path, outputs):
    (tmp_path / "work" / "reports").mkdir(parents=True)
    (tmp_path / "outputs" / "species").mkdir(parents=True)
    species = [
        {"slug": "A_a", "name": "A a", "records": 4, "bounds": [-10.0, 0.0, 10.0, 5.0]},
        {"slug": "B_b", "name": "B/b \u00d7", "records": 2, "bounds": [20.0, -5.0, 30.0, 1.0]},
    ]
    manifest = {"species": species, "sources": [{"input": CSV}], "wranglers": []}
    (tmp_path / "work" / "split.json").write_text(json.dumps(manifest))
    entries = []
    for item, kept in zip(species, outputs, strict=True):
        report = {"input_records": item["records"], "output_records": kept}
        (tmp_path / f"work/reports/{item['slug']}.json").write_text(json.dumps(report))
        entries.append(
            {
                "slug": item["slug"],
                "csv": f"outputs/species/{item['slug']}.csv",
                "report": f"work/reports/{item['slug']}.json",
            }
        )
    config = {
        "split_manifest": "work/split.json",
        "species": entries,
        "species_wranglers": [{"type": "minimum_points", "minimum_count": 3}],
        "manifest": "outputs/species.json",
        "species_list": "outputs/species_list.txt",
        "report": "outputs/cleaning_report.json",
        "heatmap": {"config": "work/heatmap.json", "image": "outputs/map.png", "cells": 40},
    }
    (tmp_path / "gather.json").write_text(json.dumps(config))


def test_gather_writes_manifest_list_report_and_a_heatmap_on_the_data(
    helper, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _gather_folder(tmp_path, outputs=[4, 0])
    helper["gather"]("gather.json")
    manifest = json.loads((tmp_path / "outputs/species.json").read_text())
    assert manifest["B_b"] == {
        "name": "B/b \u00d7",
        "file": "species/B_b.csv",
        "records_after_split": 2,
        "records_after_cleaning": 0,
    }
    assert (tmp_path / "outputs/species_list.txt").read_text() == "A a\n"
    report = json.loads((tmp_path / "outputs/cleaning_report.json").read_text())
    assert report["species_after_cleaning"] == 1 and report["records_after_cleaning"] == 4
    heatmap = json.loads((tmp_path / "work/heatmap.json").read_text())
    # Only the surviving species' extent, one cell (20 / 40) of margin.
    assert heatmap["csv"] == [["outputs/species/A_a.csv", "species_name", "x", "y"]]
    assert heatmap["resolution"] == 0.5
    bounds = [heatmap[k] for k in ("min_x", "min_y", "max_x", "max_y")]
    assert bounds == [-10.5, -0.5, 10.5, 5.5]


def test_gather_maps_an_empty_world_when_nothing_is_left(helper, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _gather_folder(tmp_path, outputs=[0, 0])
    helper["gather"]("gather.json")
    heatmap = json.loads((tmp_path / "work/heatmap.json").read_text())
    assert heatmap["title"] == "No records left after cleaning"
    assert [heatmap[k] for k in ("min_x", "max_x", "resolution")] == [-180.0, 180.0, 9.0]
    assert (tmp_path / "outputs/species_list.txt").read_text() == ""


def test_the_helper_splits_odd_names_safely_and_applies_record_wranglers(tmp_path):
    pytest.importorskip("lmpy")
    rows = ["species_name,x,y"]
    for number, name in enumerate(ODD_NAMES[:10]):
        quoted = '"' + name.replace('"', '""') + '"'
        rows += [f"{quoted},{-100 - number}.25,{40 + number}.5"] * 3
    rows += ["Old name_A,-90.5,30.5", "old NAME_a,-91.5,31.5", "Heuchera alba,nan,1.0"]
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs/occ-0.csv").write_text("\ufeff" + "\n".join(rows) + "\n")
    (tmp_path / "inputs/map.csv").write_text("Old name_A, New name_A\n")
    (tmp_path / "helper.py").write_text(HELPER_SCRIPT)
    config = {
        "sources": [
            {
                "path": "inputs/occ-0.csv",
                "format": "csv",
                "species_column": "species_name",
                "x_column": "x",
                "y_column": "y",
            }
        ],
        "wranglers": [
            {
                "wrangler_type": "AcceptedNameOccurrenceWrangler",
                "name_map": "inputs/map.csv",
                "keep_unmapped": True,
            },
            {
                "wrangler_type": "CoordinateConverterWrangler",
                "source_epsg": 4326,
                "target_epsg": 3857,
            },
        ],
        "out_dir": "work/split",
        "manifest": "work/split.json",
        "max_species": 100,
    }
    (tmp_path / "split.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "helper.py", "split", "split.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv"))
    manifest = json.loads((tmp_path / "work/split.json").read_text())
    names = {item["slug"]: item["name"] for item in manifest["species"]}
    assert written == sorted(
        ["inputs/map.csv", "inputs/occ-0.csv", *(f"work/split/{slug}.csv" for slug in names)]
    )
    assert names["New_name_A"] == "New name_A"
    assert names["Heuchera_quoted_name"] == 'Heuchera "quoted" name'
    assert names["Heuchera_palace_purple"] == "Heuchera 'palace purple'"  # lmpy capitalizes
    assert "Heuchera_alba" not in names  # its one record has no finite coordinates
    renamed = (tmp_path / "work/split/New_name_A.csv").read_text().splitlines()
    # Both spellings got the accepted name, in the file and in its rows, and the converted
    # (web mercator, metres) coordinates were written, not the degrees read.
    assert len(renamed) == 3 and all(row.startswith("New name_A,-10") for row in renamed[1:])
    assert manifest["sources"][0]["records_without_finite_coordinates"] == 1


@pytest.mark.skipif(shutil.which("makeflow_analyze") is None, reason="CCTools not installed")
@pytest.mark.parametrize("name", list(GOLDEN))
def test_makeflow_accepts_each_document(name, tmp_path):
    staged, done, produced, params = GOLDEN[name]
    assert_makeflow_accepts(plan(staged, done, produced, **params), tmp_path)


# --- name maps as lmpy writes them, and the name service ------------------------------------


def _lmpy_map_file(tmp_path, name_map, form):
    """A name map written by lmpy's own writer (what out_map_filename produces)."""
    from lmpy.data_wrangling.occurrence.accepted_name_wrangler import (
        AcceptedNameOccurrenceWrangler,
    )

    path = tmp_path / f"written.{form}"
    AcceptedNameOccurrenceWrangler(name_map=dict(name_map)).write_map_to_file(str(path), form)
    return path


LMPY_MAP = {
    "Acer rubrum": "Acer rubrum",
    "Acer rubrum l.": "Acer rubrum",
    "Acer drummondii": None,
    "Quercus x bebbiana": "Quercus bebbiana",
}


@pytest.mark.parametrize("form", ["json", "csv"])
def test_a_map_lmpy_wrote_reads_with_null_as_unresolved(helper, tmp_path, form):
    pytest.importorskip("lmpy")
    path = _lmpy_map_file(tmp_path, LMPY_MAP, form)
    written = path.read_text()
    # The forms this test is about: JSON with null, CSV with lmpy's header and "None".
    assert ("null" in written) if form == "json" else written.startswith("Name,Accepted\n")
    assert form == "json" or "Acer drummondii,None" in written
    assert helper["parse_name_map"](written) == {
        "Acer rubrum": "Acer rubrum",
        "Acer rubrum l.": "Acer rubrum",
        "Acer drummondii": None,
        "Quercus x bebbiana": "Quercus bebbiana",
    }
    # Unresolved names are left out of what lmpy gets: they are then unmapped (keep or drop).
    loaded = helper["load_name_map"](str(path))
    assert "Acer drummondii" not in loaded and loaded["Acer rubrum l."] == "Acer rubrum"


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"Acer rubrum": 3}', "gives 'Acer rubrum' a int"),
        ('["Acer rubrum", "Acer rubrum"]', "must be an object"),
        ('{"Acer rubrum": ', "does not parse"),
        ("Acer rubrum,Acer rubrum,L.\n", "line 1 has 3 fields"),
        ("Name,Accepted\n", "holds no names"),
        ("{}", "holds no names"),
    ],
)
def test_a_map_lmpy_could_not_have_written_is_refused_with_where(helper, text, problem):
    with pytest.raises(helper["NameMapError"], match=problem):
        helper["parse_name_map"](text)


def test_map_names_match_with_spaces_made_one_and_lmpy_capitals(helper):
    parsed = helper["parse_name_map"]('{"  acer   RUBRUM ": " Acer  rubrum ", "x": ""}')
    assert parsed == {"Acer rubrum": "Acer rubrum", "X": None}


def _resolving(**extra):
    return [{"type": "accepted_names", "name_resolver": "gbif", **extra}]


def test_the_name_service_gets_its_own_networked_rule_before_the_split():
    url = "http://names.example/v1"
    # The service URL is the deployment's, added to the stored request at submission.
    staged = {"occurrences": [CSV, DWCA], "name_map": NAME_MAP}
    params = WORKFLOW.with_defaults({"wranglers": _resolving(unmapped="drop", api_url=url)})
    stage = WORKFLOW.next_stage(params, staged, [], {})
    rules = {rule["category"]: rule for rule in stage.makeflow["rules"][1:]}
    assert [r["category"] for r in stage.makeflow["rules"]] == ["split", "resolve", "split"]
    assert [steps(r)[0][2] for r in stage.makeflow["rules"]] == ["names", "resolve", "split"]
    categories = stage.makeflow["categories"]
    assert categories["resolve"]["environment"]["LMWEB_RULE_NETWORK"] == "1"
    assert "LMWEB_RULE_NETWORK" not in categories["split"]["environment"]
    # The networked rule reads no upload but the name map; the split reads its answers.
    resolve_inputs = [
        i if isinstance(i, str) else i["dag_name"] for i in rules["resolve"]["inputs"]
    ]
    assert CSV not in resolve_inputs and DWCA not in resolve_inputs
    assert json.loads(stage.files["work/config/resolve.json"])["api_url"] == url
    split_config = json.loads(stage.files["work/config/split.json"])
    assert split_config["wranglers"][0]["name_map"] == "outputs/resolved_names.json"
    assert split_config["wranglers"][0]["keep_unmapped"] is False


def test_a_resolver_needs_no_map_but_needs_the_recorded_service_url():
    request_validator(WORKFLOW).validate(request({"occurrences": [CSV]}, wranglers=_resolving()))
    params = WORKFLOW.with_defaults({"wranglers": _resolving()})
    with pytest.raises(ValueError, match="service URL"):
        WORKFLOW.next_stage(params, {"occurrences": [CSV]}, [], {})
    without = request({"occurrences": [CSV]}, wranglers=[{"type": "accepted_names"}])
    with pytest.raises(ValidationError):
        request_validator(WORKFLOW).validate(without)


def _split_odd_dwca(tmp_path, name_map, unmapped):
    """Run the helper's split on the odd-names DwCA with `name_map` (bytes), as a worker does."""
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs/occ-0.zip").write_bytes(synthetic.odd_names_dwca())
    (tmp_path / "inputs/map.json").write_bytes(name_map)
    (tmp_path / "helper.py").write_text(HELPER_SCRIPT)
    config = {
        "sources": [{"path": "inputs/occ-0.zip", "format": "dwca"}],
        "wranglers": [
            {
                "wrangler_type": "AcceptedNameOccurrenceWrangler",
                "name_map": "inputs/map.json",
                "keep_unmapped": unmapped == "keep",
            }
        ],
        "out_dir": "work/split",
        "manifest": "work/split.json",
        "max_species": 100,
    }
    (tmp_path / "split.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "helper.py", "split", "split.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "work/split.json").read_text())
    return {item["name"]: item["records"] for item in manifest["species"]}, manifest


@pytest.mark.parametrize("form", ["json", "csv"])
def test_odd_dwca_names_map_through_an_lmpy_map_dropping_the_unresolved(tmp_path, form):
    pytest.importorskip("lmpy")
    species, manifest = _split_odd_dwca(
        tmp_path, synthetic.lmpy_name_map(synthetic.ODD_NAMES_MAP, form), "drop"
    )
    # "Acer rubrum L." (twice) and "ACER RUBRUM" (lmpy capitalizes: not in the map, dropped);
    # the record without a longitude is counted, not fatal; platanoides is null: dropped.
    assert species == {
        "Acer rubrum": 2,
        "Acer saccharinum": 1,
        "Acer \u00d7freemanii": 1,
        "Acer negundo": 1,
        "Quercus alba": 1,
    }
    source = manifest["sources"][0]
    assert source["records_read"] == 12
    assert source["records_without_name"] == 1
    assert source["records_without_finite_coordinates"] == 1


def test_odd_dwca_names_kept_under_their_own_name_when_unresolved(tmp_path):
    pytest.importorskip("lmpy")
    species, manifest = _split_odd_dwca(
        tmp_path, synthetic.lmpy_name_map(synthetic.ODD_NAMES_MAP, "json"), "keep"
    )
    assert species == {
        "Acer rubrum": 3,  # with "ACER RUBRUM", kept as lmpy holds it: "Acer rubrum"
        "Acer saccharinum": 1,
        "Acer \u00d7freemanii": 2,  # mapped from "x", and its own spelling kept
        "Acer negundo": 1,
        "Acer platanoides": 2,  # null: kept, its spaces made one
        "Quercus alba": 1,
    }
    assert manifest["sources"][0]["records_without_finite_coordinates"] == 1


def test_the_clean_stage_is_planned_after_a_split_that_resolved_names():
    staged = {"occurrences": [CSV]}
    params = WORKFLOW.with_defaults({"wranglers": _resolving(api_url="http://names.example/v1")})
    produced = {"split": [*split_products("Acer_rubrum"), "work/names.json", RESOLVED_NAMES]}
    stage = WORKFLOW.next_stage(params, staged, ["split"], produced)
    assert [rule["category"] for rule in stage.makeflow["rules"]] == ["clean", "gather", "report"]


def test_a_name_service_that_does_not_answer_fails_the_rule_naming_it(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "names.json").write_text(json.dumps(["Acer rubrum"]))
    (tmp_path / "helper.py").write_text(HELPER_SCRIPT)
    config = {
        "names": "names.json",
        "name_map": None,
        "api_url": f"http://127.0.0.1:{port}/v1",
        "out": "resolved.json",
        "wait": 0,
        "timeout": 2,
        "attempts": 1,
    }
    (tmp_path / "resolve.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "helper.py", "resolve", "resolve.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"the name service at http://127.0.0.1:{port}/v1 did not answer" in result.stderr
    assert not (tmp_path / "resolved.json").exists()


def test_the_report_maps_in_the_converted_system_and_leaves_earlier_drops_off():
    wranglers = [
        {"type": "bounding_box", "min_x": -130, "min_y": 20, "max_x": -60, "max_y": 55},
        {"type": "unique_localities"},
        {"type": "coordinate_conversion", "source_epsg": 4326, "target_epsg": 5070},
        {"type": "decimal_precision", "decimal_places": 0},
    ]
    stage = plan(
        {"occurrences": [CSV]}, ["split"], {"split": split_products("A")}, wranglers=wranglers
    )
    config = json.loads(stage.files["work/config/report/report.json"])
    (args,) = [f["args"] for f in config["figures"] if f["kind"] == "occurrences.points_map"]
    assert [s["key"] for s in args["steps"]] == [
        "name",
        "record-0",
        "record-1",
        "record-2",
        "coordinates",
        "species-0",
    ]
    assert args["steps"][5]["label"] == "unique_localities (wranglers[1])"
    assert args["epsg"] == 5070
    assert args["other_crs"] == ["name", "record-0", "record-1"]
