"""species-pam: schema and grid checks, species keys, both stages, quoting, scripts, golden."""

import copy
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
from jsonschema import Draft202012Validator
from support import (
    assert_makeflow_accepts,
    assert_refused_while_twin_passes,
    bounded,
    check_closed_dag,
    drop_at,
    request_validator,
    rules_by_id,
    set_at,
    set_param,
    steps,
    write_lmm,
)

from translators import InvalidRequest
from translators.base import canonical_json
from translators.common.args import number_arg
from translators.common.grid import grid_cells
from translators.common.species_names import species_key, species_name
from translators.makeflow import MAX_COMMAND_CHARS, check_path
from translators.species_pam import workflow as species_pam
from translators.species_pam.scripts import prepare_occurrences

WORKFLOW = species_pam.WORKFLOW
OCCURRENCES = ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000003"]
ECOREGIONS = "00000000-0000-0000-0000-000000000002"
STAGED = {"occurrences": ["inputs/occurrences-1.csv"], "ecoregions": "inputs/ecoregions.tif"}
ODD_NAMES = [
    "Heuchera americana",
    'Heuchera "americana" O\'Brien, var. é/ü',
    "-m",
    "--layer",
    "-x=1",
    "../../etc/passwd",
    "/abs",
    "a\\b",
    "Tellima  grandiflora",
    "日本 ミテラ",
    "Name_with_underscore-and-dash.dot",
    "tab\there",
    "line\nbreak",
    "$(touch pwned) `id` ;|&",
    "heuchera americana",
]
# What a model's file key may hold: nothing a shell, makeflow or a file system treats specially.
SAFE_KEY = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def request(**params):
    example = copy.deepcopy(WORKFLOW.example)
    example["params"].update(params)
    return example


def produced_split(names):
    files = [f"work/split/{species_key(n)}.csv" for n in names]
    return {
        "split": sorted(
            [*files, "logs/split.stderr", "logs/split.stdout", "outputs/occurrence_report.json"]
        )
    }


def plan_split(staged=STAGED, **params):
    req = request(**params)
    req["inputs"]["occurrences"] = OCCURRENCES[: len(staged["occurrences"])]
    return WORKFLOW.plan(req, staged, [])


def plan_pam(names, staged=STAGED, **params):
    req = request(**params)
    req["inputs"]["occurrences"] = OCCURRENCES[: len(staged["occurrences"])]
    return WORKFLOW.plan(req, staged, ["split"], produced_split(names))


# Schema and grid checks ----------------------------------------------------------------------


def test_the_example_is_a_valid_complete_request():
    example = WORKFLOW.example
    assert example["workflow"] == "species-pam"
    assert set(example["params"]) == set(WORKFLOW.params_schema["properties"])
    assert set(example["inputs"]) == set(WORKFLOW.dataset_inputs)
    request_validator(WORKFLOW).validate(example)
    WORKFLOW.validate(example)
    assert WORKFLOW.plan(example, STAGED, []).name == "split"


def test_params_schema_documents_and_bounds_every_property():
    schema = WORKFLOW.params_schema
    Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["grid"]
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
        if name != "grid":
            Draft202012Validator(prop).validate(prop["default"])
    for name, prop in schema["properties"]["grid"]["properties"].items():
        bounded(name, prop)
        assert {"minimum", "exclusiveMinimum"} & set(prop), name
        assert {"maximum", "exclusiveMaximum"} & set(prop), name
    assert "min_x < max_x" in schema["properties"]["grid"]["description"]


def test_inputs_are_many_occurrence_csvs_and_one_ecoregions_raster():
    schema = WORKFLOW.inputs_schema
    assert schema["required"] == ["occurrences", "ecoregions"]
    assert schema["properties"]["occurrences"]["type"] == "array"
    assert WORKFLOW.dataset_inputs["occurrences"].content == "occurrences"
    assert WORKFLOW.dataset_inputs["ecoregions"].content == "raster"
    # jobs/inspection.py checks the CSV columns named by these exact parameter names.
    assert {"species_column", "x_column", "y_column"} <= set(WORKFLOW.params_schema["properties"])


def _grid(**changes):
    ((field, value),) = changes.items()
    return set_at(("params", "grid", field), value)


SCHEMA_BAD = {
    "no grid": drop_at(("params", "grid")),
    "grid edge missing": drop_at(("params", "grid", "max_y")),
    "grid extra key": _grid(rotation=0),
    "cell size zero": _grid(cell_size=0),
    "cell size negative": _grid(cell_size=-1),
    "edge as text": _grid(min_x="-130"),
    "edge beyond any projection": _grid(max_x=1e9),
    "epsg not integer": _grid(epsg=4326.5),
    "epsg out of range": _grid(epsg=1),
    "min_points zero": set_param("min_points", 0),
    "min_points fractional": set_param("min_points", 2.5),
    "min_coverage above 100": set_param("min_coverage", 100.5),
    "min_coverage negative": set_param("min_coverage", -1),
    "empty column name": set_param("species_column", ""),
    "long column name": set_param("x_column", "x" * 201),
    "unknown param": set_param("seed", 1),
    "occurrences not a list": lambda req: req["inputs"].update(occurrences=OCCURRENCES[0]),
    "occurrences empty": lambda req: req["inputs"].update(occurrences=[]),
    "occurrences repeated": lambda req: req["inputs"].update(occurrences=[ECOREGIONS] * 2),
    "no ecoregions": drop_at(("inputs", "ecoregions")),
}
CROSS_BAD = {
    "min_x equal to max_x": (_grid(min_x=-60), "min_x (-60) must be less than max_x (-60)"),
    "min_x above max_x": (_grid(min_x=-50), "min_x (-50) must be less than max_x"),
    "min_y above max_y": (_grid(min_y=56), "min_y (56) must be less than max_y (55)"),
    "longitude beyond 180": (_grid(min_x=-181), "min_x (-181) is outside -180..180"),
    "latitude beyond 90": (_grid(max_y=90.5), "max_y (90.5) is outside -90..90"),
    "too many cells": (_grid(cell_size=0.01), "7000 x 3500 = 24500000 cells"),
}


@pytest.mark.parametrize("label", list(SCHEMA_BAD))
def test_a_request_breaking_the_schema_fails_while_its_twin_passes(label):
    assert_refused_while_twin_passes(WORKFLOW, SCHEMA_BAD[label])


@pytest.mark.parametrize("label", list(CROSS_BAD))
def test_a_bad_grid_is_refused_naming_the_field_while_its_twin_passes(label):
    change, message = CROSS_BAD[label]
    req = copy.deepcopy(WORKFLOW.example)
    WORKFLOW.validate(req)
    change(req)
    with pytest.raises(InvalidRequest) as caught:
        WORKFLOW.validate(req)
    assert all(error.startswith("params/grid: ") for error in caught.value.errors)
    assert any(message in error for error in caught.value.errors), caught.value.errors
    with pytest.raises(InvalidRequest):
        WORKFLOW.plan(req, STAGED, [])


def test_grid_limits_themselves_are_accepted():
    world = {"min_x": -180, "min_y": -90, "max_x": 180, "max_y": 90, "cell_size": 0.5}
    WORKFLOW.validate(request(grid={**world, "epsg": 4326}))
    assert grid_cells({**world, "epsg": 4326}) == (720, 360)
    # Projected units are not degrees: no 180/90 limit there.
    metres = {"min_x": -2e6, "min_y": 1e6, "max_x": 3e6, "max_y": 4e6, "cell_size": 10_000}
    WORKFLOW.validate(request(grid={**metres, "epsg": 5070}))
    exactly = {"min_x": 0, "min_y": 0, "max_x": 600, "max_y": 500, "cell_size": 1, "epsg": 3857}
    assert grid_cells(exactly) == (600, 500)
    WORKFLOW.validate(request(grid=exactly))
    with pytest.raises(InvalidRequest, match="cells"):
        WORKFLOW.validate(request(grid={**exactly, "max_y": 500.5}))


def test_grid_cells_count_a_partial_last_cell_as_build_grid_does():
    grid = {"min_x": 0, "min_y": 0, "max_x": 10.5, "max_y": 3, "cell_size": 1, "epsg": 4326}
    assert grid_cells(grid) == (11, 3)
    assert grid_cells({**grid, "max_x": 0.3, "cell_size": 0.1}) == (3, 30)


def test_with_defaults_fills_only_what_is_missing():
    filled = WORKFLOW.with_defaults({"grid": WORKFLOW.example["params"]["grid"]})
    assert filled["species_column"] == "species_name"
    assert (filled["x_column"], filled["y_column"]) == ("x", "y")
    assert filled["min_points"] == 3
    assert filled["min_coverage"] == 25


# Species keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_species_key_is_safe_and_gives_back_the_exact_name(name):
    key = species_key(name)
    assert set(key) <= SAFE_KEY
    assert species_name(key) == name
    check_path(f"work/split/{key}.csv")


def test_keys_keep_plain_names_readable_and_distinct():
    assert species_key("Heuchera americana") == "Heuchera_americana"
    assert species_key("Heuchera_americana") == "Heuchera-5famericana"
    assert species_key("é") == "-c3-a9"
    keys = [species_key(n) for n in ODD_NAMES]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    "key", ["", "-41", "-2F", "-2", "a-zz", "-ff", "a b", "a/b", "a.csv", "x-c3", "-c3-28"]
)
def test_only_keys_in_the_one_canonical_spelling_are_accepted(key):
    with pytest.raises(ValueError, match="not a species key"):
        species_name(key)


def test_the_gathering_script_and_the_planner_use_the_same_key():
    # The script keeps its own copy: it runs isolated on workers, without this project.
    for name in [*ODD_NAMES, "x" * 300, "ǅ", "\u212a"]:
        assert prepare_occurrences.species_key(name) == species_key(name)


# Arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-130, "-130"),
        (20.0, "20"),
        (2.5, "2.5"),
        (-0.0, "0"),
        (1e-05, "0.00001"),
        (-1e-05, "-0.00001"),
        (1e20, "100000000000000000000"),
        (0.1, "0.1"),
    ],
)
def test_numbers_are_written_positionally_so_argparse_never_sees_an_option(value, text):
    assert number_arg(value) == text
    assert float(text) == value


def _lmpy_fraction(text):
    # lmpy/data_preparation/layer_encoder.py: _get_presence_absence_method
    value = float(text)
    return value / 100.0 if value >= 1.0 else value


@pytest.mark.parametrize(
    ("percent", "text"),
    [
        (25, "25"),
        (1, "1"),
        (100, "100"),
        (0.5, "0.005"),
        (0.25, "0.0025"),
        (0, "0"),
        (99.9, "99.9"),
    ],
)
def test_min_coverage_percent_is_written_in_the_form_lmpy_reads_as_that_percent(percent, text):
    assert species_pam.coverage_arg(percent) == text
    assert _lmpy_fraction(text) == pytest.approx(percent / 100)


# The split stage -----------------------------------------------------------------------------


def test_the_split_gathers_then_splits_with_a_minimum_points_wrangler():
    stage = plan_split(min_points=7)
    assert stage.name == "split"
    rules = rules_by_id(stage)
    assert list(rules) == ["split"]
    rule = rules["split"]
    gather, split, cleanup = steps(rule)
    assert gather == [
        "python3",
        "work/config/prepare_occurrences.py",
        "work/config/prepare_occurrences.json",
    ]
    assert split[:5] == [
        "sh",
        "-c",
        'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"',
        "sh",
        "split_occurrence_data",
    ]
    assert split[5:] == [
        "--key_field",
        "species_key",
        "--csv",
        "work/occurrences.csv",
        "work/config/split_wranglers.json",
        "species_name",
        "x",
        "y",
        "work/split",
    ]
    assert cleanup == ["rm", "-f", "--", "work/occurrences.csv"]
    assert json.loads(stage.files["work/config/split_wranglers.json"]) == [
        {"wrangler_type": "MinimumPointsWrangler", "minimum_count": 7}
    ]
    assert rule["outputs"][:2] == ["outputs/occurrence_report.json", "work/split"]
    assert set(rule["inputs"]) == {
        "inputs/occurrences-1.csv",
        "inputs/ecoregions.tif",
        *stage.files,
    }
    compile(stage.files["work/config/prepare_occurrences.py"], "prepare_occurrences.py", "exec")


def test_user_column_names_and_staged_paths_reach_the_script_only_through_json():
    staged = {
        "occurrences": ["inputs/occ $x;'1'.csv", 'inputs/occ "2".csv'],
        "ecoregions": "inputs/eco regions.tif",
    }
    stage = plan_split(staged, species_column="-sp name", x_column="lon;rm", y_column='"lat"')
    config = json.loads(stage.files["work/config/prepare_occurrences.json"])
    assert config["inputs"] == staged["occurrences"]
    assert config["ecoregions"] == "inputs/eco regions.tif"
    assert [config[k] for k in ("species_column", "x_column", "y_column")] == [
        "-sp name",
        "lon;rm",
        '"lat"',
    ]
    assert config["epsg"] == 4326 and config["min_points"] == 300
    rule = stage.makeflow["rules"][0]
    assert "-sp name" not in rule["command"]
    assert set(staged["occurrences"]) <= set(rule["inputs"])


# The PAM stage -------------------------------------------------------------------------------


def test_stages_run_in_order_and_the_second_is_planned_from_the_species_found():
    names = ["Mitella nuda", "Heuchera americana"]
    example = WORKFLOW.example
    assert WORKFLOW.plan(example, STAGED, []).name == "split"
    pam = WORKFLOW.plan(example, STAGED, ["split"], produced_split(names))
    assert pam.name == "pam"
    assert json.loads(pam.files["outputs/species.json"]) == {
        "Heuchera_americana": "Heuchera americana",
        "Mitella_nuda": "Mitella nuda",
    }
    assert WORKFLOW.plan(example, STAGED, ["split", "pam"], produced_split(names)) is None


def test_the_pam_stage_models_each_species_then_grids_encodes_purges_and_computes():
    stage = plan_pam(["Heuchera americana", "Mitella nuda"])
    rules = rules_by_id(stage)
    assert list(rules) == [
        "model-0001",
        "model-0002",
        "grid",
        "encode-001",
        "pam",
        "stats",
        "report",
    ]
    model = rules["model-0001"]
    assert steps(model) == [
        [
            "env",
            "TMPDIR=work/tmp/model-0001",
            "create_rare_species_model",
            "work/split/Heuchera_americana.csv",
            "inputs/ecoregions.tif",
            "work/tmp/model-0001/model.tif",
        ],
        [
            "python3",
            "work/config/finish_model.py",
            "work/tmp/model-0001/model.tif",
            "inputs/ecoregions.tif",
            "outputs/models/Heuchera_americana.tif",
        ],
        ["rm", "-rf", "--", "work/tmp/model-0001"],
        ["rm", "-f", "--", "work/tmp/model-0001/model.tif"],
    ]
    assert model["outputs"][0] == "outputs/models/Heuchera_americana.tif"
    assert steps(rules["grid"]) == [
        ["build_grid", "outputs/grid.shp", "-130", "20", "-60", "55", "1", "4326"]
    ]
    assert rules["grid"]["outputs"][:4] == [
        "outputs/grid.shp",
        "outputs/grid.shx",
        "outputs/grid.dbf",
        "outputs/grid.prj",
    ]
    assert steps(rules["encode-001"]) == [
        [
            "encode_layers",
            "--config_file",
            "work/config/encode-001.json",
            "-m",
            "presence_absence",
            "--min_coverage",
            "25",
            "--min_presence",
            "1",
            "--max_presence",
            "255",
            "outputs/grid.shp",
            "work/pam/encoded-001.lmm",
        ]
    ]
    pam = steps(rules["pam"])
    assert pam[0] == [
        "wrangle_matrix",
        "work/pam/encoded-001.lmm",
        "work/config/purge_empty.json",
        "outputs/pam.lmm",
    ]
    assert pam[1][:2] == ["python3", "work/config/check_pam.py"]
    assert pam[-1] == ["convert_lmm_to_geojson", "--config_file", "work/config/pam_geojson.json"]
    assert json.loads(stage.files["work/config/pam_geojson.json"])["omit_value"] == [0]
    stats = steps(rules["stats"])
    assert stats[0][-1] == "outputs/pam.lmm"
    assert stats[3] == [
        "convert_lmm_to_geojson",
        "--resolution",
        "1",
        "outputs/site_stats.lmm",
        "outputs/site_stats.geojson",
    ]
    assert steps(rules["report"]) == [
        ["python3", "work/config/report/report.py", "work/config/report/report.json"]
    ]
    for name in ("finish_model", "check_pam", "lmm_to_csv"):
        compile(stage.files[f"work/config/{name}.py"], f"{name}.py", "exec")


def test_odd_species_names_stay_exact_labels_and_never_reach_a_command():
    stage = plan_pam(ODD_NAMES)
    layers = [
        pair
        for path in sorted(stage.files)
        if path.startswith("work/config/encode-")
        for pair in json.loads(stage.files[path])["layer"]
    ]
    assert sorted(name for _, name in layers) == sorted(ODD_NAMES)
    for path, name in layers:
        assert path == f"outputs/models/{species_key(name)}.tif"
    manifest = json.loads(stage.files["outputs/species.json"])
    assert sorted(manifest.values()) == sorted(ODD_NAMES)
    assert all(set(key) <= SAFE_KEY for key in manifest)
    for rule in stage.makeflow["rules"]:
        # Names travel in JSON files only: no argument of any command is a species name (but
        # encode_layers' own `-m` option).
        arguments = [
            a for step in steps(rule) for a in step if (a, step[0]) != ("-m", "encode_layers")
        ]
        assert not set(arguments) & set(ODD_NAMES)
    models = [r for r in stage.makeflow["rules"] if r["category"] == "model"]
    assert len(models) == len(ODD_NAMES)


def test_an_awkward_ecoregions_path_stays_one_argument():
    staged = {"occurrences": ["inputs/occurrences-1.csv"], "ecoregions": "inputs/eco $x;'q'.tif"}
    stage = plan_pam(["A b"], staged)
    model = rules_by_id(stage)["model-0001"]
    assert steps(model)[0][4] == "inputs/eco $x;'q'.tif"
    assert "inputs/eco $x;'q'.tif" in model["inputs"]


@pytest.mark.parametrize(
    ("count", "sizes"), [(1, [1]), (100, [100]), (101, [51, 50]), (250, [84, 83, 83])]
)
def test_encoding_is_chunked_and_chunks_are_stacked_by_species(count, sizes):
    assert species_pam.LAYERS_PER_ENCODE == 100
    names = [f"Species {i:04d}" for i in range(count)]
    stage = plan_pam(names)
    rules = rules_by_id(stage)
    encodes = [r for r in rules if r.startswith("encode-")]
    assert encodes == [f"encode-{n:03d}" for n in range(1, len(sizes) + 1)]
    for rule_id, size in zip(encodes, sizes, strict=True):
        config = json.loads(stage.files[f"work/config/{rule_id}.json"])
        assert len(config["layer"]) == size
        assert set(rules[rule_id]["inputs"]) >= {path for path, _ in config["layer"]}
    first = steps(rules["pam"])[0]
    if len(sizes) == 1:
        assert first[0] == "wrangle_matrix"
    else:
        stacked = [f"work/pam/encoded-{n:03d}.lmm" for n in range(1, len(sizes) + 1)]
        assert first == [
            "aggregate_matrices",
            "concatenate",
            "1",
            "work/pam/all_sites.lmm",
            *stacked,
        ]
        assert steps(rules["pam"])[1][1] == "work/pam/all_sites.lmm"
        assert steps(rules["pam"])[-1] == ["rm", "-f", "--", "work/pam/all_sites.lmm"]


def test_thousands_of_species_keep_every_command_short():
    stage = plan_pam([f"Species {i:05d} with a rather long epithet" for i in range(3000)])
    rules = stage.makeflow["rules"]
    assert len([r for r in rules if r["category"] == "model"]) == 3000
    assert max(len(r["command"]) for r in rules) < MAX_COMMAND_CHARS // 20
    assert rules_by_id(stage)["model-3000"]


def test_unexpected_split_products_are_refused():
    req = WORKFLOW.example
    for path in ("work/split/sub/x.csv", "work/split/notes.txt", "work/split/-41.csv"):
        with pytest.raises(ValueError):
            WORKFLOW.plan(req, STAGED, ["split"], {"split": [path]})
    with pytest.raises(ValueError, match="no species"):
        WORKFLOW.plan(req, STAGED, ["split"], {"split": ["outputs/occurrence_report.json"]})


# Closed DAGs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names", [["Heuchera americana"], ODD_NAMES, [f"S {i}" for i in range(150)]]
)
def test_both_stages_are_closed_dags_of_relative_paths(names):
    staged = {
        "occurrences": ["inputs/occurrences-1.csv", "inputs/occurrences-2.csv"],
        "ecoregions": "inputs/ecoregions.tif",
    }
    split = plan_split(staged)
    made = check_closed_dag(split, {*staged["occurrences"], staged["ecoregions"], *split.files})
    assert "work/split" in made
    pam = plan_pam(names, staged)
    sources = {
        *staged["occurrences"],
        staged["ecoregions"],
        *pam.files,
        *produced_split(names)["split"],
    }
    made = check_closed_dag(pam, sources)
    assert {
        "outputs/pam.lmm",
        "outputs/site_stats.lmm",
        "outputs/report.html",
        "outputs/figures/richness.png",
        "outputs/figures/species-presence.png",
    } <= made
    assert not set(split.files) & set(pam.files)


@pytest.mark.skipif(shutil.which("makeflow_analyze") is None, reason="CCTools not installed")
def test_makeflow_accepts_both_stages(tmp_path):
    for stage in (plan_split(), plan_pam(ODD_NAMES)):
        assert_makeflow_accepts(stage, tmp_path)


# Golden files --------------------------------------------------------------------------------

GOLDEN_CASES = {
    "species-pam-example-split": lambda: plan_split(),
    "species-pam-example-pam": lambda: plan_pam(
        ["Heuchera americana", 'Heuchera "x" O\'Brien, é/ü', "-m", "Mitella nuda"]
    ),
    "species-pam-two-files-projected-split": lambda: plan_split(
        {
            "occurrences": ["inputs/occurrences-1.csv", "inputs/occurrences-2.csv"],
            "ecoregions": "inputs/ecoregions.tif",
        },
        species_column="scientificName",
        x_column="decimalLongitude",
        y_column="decimalLatitude",
        min_points=3,
        grid={
            "min_x": -2e6,
            "min_y": 2.5e5,
            "max_x": 2.5e6,
            "max_y": 3.2e6,
            "cell_size": 50000,
            "epsg": 5070,
        },
    ),
    "species-pam-fine-grid-low-coverage-pam": lambda: plan_pam(
        ["Heuchera americana", "Heuchera parvifolia"],
        min_coverage=0.5,
        grid={
            "min_x": -125.5,
            "min_y": 30.25,
            "max_x": -110,
            "max_y": 49.75,
            "cell_size": 0.25,
            "epsg": 4326,
        },
    ),
}


@pytest.mark.parametrize("name", list(GOLDEN_CASES))
def test_each_case_matches_its_golden_files(name, golden):
    stage = GOLDEN_CASES[name]()
    golden(f"{name}.makeflow.json", stage.dumps())
    golden(f"{name}.files.json", canonical_json(stage.files))
    again = GOLDEN_CASES[name]()
    assert again.dumps() == stage.dumps() and again.files == stage.files


def test_every_species_pam_golden_file_belongs_to_a_case(golden_dir):
    names = {f"{n}.{kind}.json" for n in GOLDEN_CASES for kind in ("makeflow", "files")}
    on_disk = {p.name for p in golden_dir.iterdir() if p.name.startswith("species-pam-")}
    assert on_disk <= names, f"stale golden files: {sorted(on_disk - names)}"


# The scripts the stages write ----------------------------------------------------------------


def run_script(tmp_path, source, *args):
    script = tmp_path / "script.py"
    script.write_text(source, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_lmm_to_csv_quotes_names_that_lmpy_would_leave_unquoted(tmp_path):
    pytest.importorskip("numpy")
    names = ['Heuchera "x" O\'Brien, é', "a,b", "tab\there"]
    rows = [[0, -129.5, 54.5], [7, -128.5, 54.5]]
    write_lmm(tmp_path / "pam.lmm", [[1, 0, 1], [0, 1, 0.25]], rows, names)
    result = run_script(tmp_path, species_pam.LMM_TO_CSV, "pam.lmm", "pam.csv", "site_id", "x", "y")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "pam.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table == [
        ["site_id", "x", "y", *names],
        ["0", "-129.5", "54.5", "1", "0", "1"],
        ["7", "-128.5", "54.5", "0", "1", "0.25"],
    ]


def test_check_pam_summarizes_and_stops_with_a_readable_message_when_empty(tmp_path):
    pytest.importorskip("numpy")
    manifest = tmp_path / "species.json"
    manifest.write_text(json.dumps({"A_a": "A a", "B_b": "B b", "C": "C"}), encoding="utf-8")
    rows = [[0, 0.5, 0.5], [1, 1.5, 0.5]]
    write_lmm(tmp_path / "all.lmm", [[1, 0, 0], [0, 0, 0]], rows, ["A a", "B b", "C"])
    write_lmm(tmp_path / "pam.lmm", [[1]], rows[:1], ["A a"])
    result = run_script(tmp_path, species_pam.CHECK_PAM, manifest, "all.lmm", "pam.lmm", "s.json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary == {
        "grid_cells": 2,
        "species_modelled": 3,
        "sites": 1,
        "species": 1,
        "species_not_in_pam": ["B b", "C"],
    }
    # Its empty twin: what calculate_pam_stats would fail on with ZeroDivisionError.
    write_lmm(tmp_path / "empty.lmm", [], [], [])
    result = run_script(tmp_path, species_pam.CHECK_PAM, manifest, "all.lmm", "empty.lmm", "e.json")
    assert result.returncode == 3
    assert "no species is present in any grid cell" in result.stderr


def make_raster(path, epsg=4326, columns=20, rows=10, min_x=-130.0, max_y=55.0, size=1.0):
    gdal = pytest.importorskip("osgeo.gdal")
    osr = pytest.importorskip("osgeo.osr")
    gdal.UseExceptions()
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), columns, rows, 1, gdal.GDT_Int16)
    dataset.SetGeoTransform([min_x, size, 0, max_y, 0, -size])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    dataset.SetProjection(srs.ExportToWkt())
    band = dataset.GetRasterBand(1)
    band.WriteArray(__import__("numpy").arange(rows * columns).reshape(rows, columns) // 5)
    band.SetNoDataValue(-9999)
    dataset.FlushCache()


def test_finishing_a_model_clears_nodata_ecoregions_and_compresses(tmp_path):
    gdal = pytest.importorskip("osgeo.gdal")
    np = pytest.importorskip("numpy")
    make_raster(tmp_path / "eco.tif", columns=4, rows=2)
    eco = gdal.Open(str(tmp_path / "eco.tif"), gdal.GA_Update)
    eco.GetRasterBand(1).WriteArray(np.array([[1, 1, -9999, 2], [-9999, 1, 2, 2]]))
    eco = None
    raw = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "raw.tif"), 4, 2, 1, gdal.GDT_Byte)
    raw.SetGeoTransform([-130, 1, 0, 55, 0, -1])
    raw.GetRasterBand(1).WriteArray(np.array([[50, 50, 50, 0], [50, 0, 0, 0]]))
    raw = None
    result = run_script(tmp_path, species_pam.FINISH_MODEL, "raw.tif", "eco.tif", "model.tif")
    assert result.returncode == 0, result.stderr
    model = gdal.Open(str(tmp_path / "model.tif"))
    assert model.ReadAsArray().tolist() == [[50, 50, 0, 0], [0, 0, 0, 0]]
    assert model.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    assert model.GetGeoTransform() == (-130, 1, 0, 55, 0, -1)


def write_occurrences(tmp_path):
    """Two CSVs: odd names, rows of one species apart, a BOM, padded headers, bad rows."""
    (tmp_path / "inputs").mkdir()
    first = [
        ["species_name", "x", "y"],
        ['Heuchera "x" O\'Brien, é/ü', "-125.5", "50.5"],
        ["-m", "-120.5", "50.5"],
        ['Heuchera "x" O\'Brien, é/ü', "-124.5", "49.5"],
        ["  -m ", "-120.5", "50.5"],  # the same locality of the same species after trimming
        ["-m", "-119.5", "48.5"],
        ["", "-119.5", "48.5"],
        ["Rare one", "-115.5", "47.5"],
        ["Bad x", "abc", "47"],
        ["Nan y", "-115", "nan"],
        ["Outside", "-110", "50"],  # the raster ends at -110
        ["Outside", "-120", "45"],  # and at 45
        ["Short"],
    ]
    second = [
        ["id", " y ", "species_name", " x"],
        ["1", "48.5", 'Heuchera "x" O\'Brien, é/ü', "-123.5"],
        ["2", "46.5", "-m", "-118.5"],
        ["3", "46.5", "../up", "-118.5"],
        ["4", "47.5", "../up", "-117.5"],
        ["5", "46.5", "../up", "-116.5"],
    ]
    with open(tmp_path / "inputs/occurrences-1.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(first)
    with open(tmp_path / "inputs/occurrences-2.csv", "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows(second)
    return ["inputs/occurrences-1.csv", "inputs/occurrences-2.csv"]


def write_split_stage(tmp_path, staged, **params):
    stage = plan_split(staged, **params)
    for relative, text in stage.files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")
    return stage


def run_prepare(tmp_path):
    return subprocess.run(
        [sys.executable, species_pam.PREPARE_SCRIPT, species_pam.PREPARE_CONFIG],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_gathering_script_keeps_names_drops_bad_points_and_sorts_by_species(tmp_path):
    make_raster(tmp_path / "eco.tif")
    occurrences = write_occurrences(tmp_path)
    (tmp_path / "work").mkdir()
    (tmp_path / "outputs").mkdir()
    staged = {"occurrences": occurrences, "ecoregions": "eco.tif"}
    write_split_stage(tmp_path, staged, min_points=3)
    result = run_prepare(tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "outputs/occurrence_report.json").read_text("utf-8"))
    assert report["dropped"] == {
        "row too short": 1,
        "no species name": 1,
        "coordinates not numbers": 2,
        "outside the ecoregions raster": 2,
        "repeated locality": 1,
    }
    assert report["species"] == {
        'Heuchera "x" O\'Brien, é/ü': 3,
        "-m": 3,
        "../up": 3,
        "Rare one": 1,
    }
    assert report["species_below_min_points"] == ["Rare one"]
    assert report["species_modelled"] == 3
    with open(tmp_path / "work/occurrences.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["species_name", "x", "y", "species_key"]
    keys = [row[3] for row in table[1:]]
    # One block per species, in key order: lmpy's per-species wranglers need consecutive rows.
    blocks = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert blocks == sorted(set(keys))
    assert {species_name(k) for k in keys} == set(report["species"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {**WORKFLOW.example["params"]["grid"], "epsg": 3857}}, "EPSG:4326 but grid"),
        ({"min_points": 4}, "no species has at least 4 distinct localities"),
        ({"x_column": "lon"}, "has no column 'lon'"),
    ],
)
def test_the_gathering_script_stops_with_a_readable_message(tmp_path, change, message):
    make_raster(tmp_path / "eco.tif")
    occurrences = write_occurrences(tmp_path)
    (tmp_path / "work").mkdir()
    (tmp_path / "outputs").mkdir()
    staged = {"occurrences": occurrences, "ecoregions": "eco.tif"}
    write_split_stage(tmp_path, staged, min_points=3)
    assert run_prepare(tmp_path).returncode == 0
    write_split_stage(tmp_path, staged, **{"min_points": 3, **change})
    result = run_prepare(tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


LMPY_TOOLS = ("split_occurrence_data", "create_rare_species_model", "encode_layers")


def tool_path() -> str:
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


@pytest.mark.skipif(
    any(shutil.which(t, path=tool_path()) is None for t in LMPY_TOOLS),
    reason="lmpy tools not installed",
)
@pytest.mark.skipif(shutil.which("makeflow") is None, reason="CCTools not installed")
@pytest.mark.integration
def test_both_stages_run_under_makeflow_and_keep_odd_names(tmp_path):
    """A small end-to-end run: ~20 s, the lmpy tools' start-up dominating."""
    make_raster(tmp_path / "inputs-eco.tif", columns=60, rows=30, min_x=-130, max_y=55, size=0.5)
    occurrences = write_occurrences(tmp_path)
    (tmp_path / "inputs-eco.tif").rename(tmp_path / "inputs/ecoregions.tif")
    staged = {"occurrences": occurrences, "ecoregions": "inputs/ecoregions.tif"}
    req = request(
        min_points=3,
        min_coverage=0,
        grid={
            "min_x": -130,
            "min_y": 40,
            "max_x": -100,
            "max_y": 55,
            "cell_size": 1.5,
            "epsg": 4326,
        },
    )
    req["inputs"]["occurrences"] = OCCURRENCES
    env = dict(os.environ, PATH=tool_path(), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    done, produced = [], {}
    while (stage := WORKFLOW.plan(req, staged, done, produced)) is not None:
        for relative, text in stage.files.items():
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relative).write_text(text, encoding="utf-8")
        (tmp_path / f"{stage.name}.json").write_text(stage.dumps(), encoding="utf-8")
        result = subprocess.run(
            ["makeflow", "--json", "-T", "local", "-j", "2", f"{stage.name}.json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        logs = {p.name: p.read_text()[-800:] for p in (tmp_path / "logs").glob("*.stderr")}
        assert result.returncode == 0, (result.stdout[-2000:], logs)
        done.append(stage.name)
        files = set()
        for rule in stage.makeflow["rules"]:
            for output in rule["outputs"]:
                path = tmp_path / output
                if path.is_dir():
                    files.update(p.relative_to(tmp_path).as_posix() for p in path.rglob("*"))
                elif path.is_file():
                    files.add(output)
        produced[stage.name] = sorted(files)
    assert done == ["split", "pam"]
    names = {'Heuchera "x" O\'Brien, é/ü', "-m", "../up"}
    assert set(json.loads((tmp_path / "outputs/species.json").read_text("utf-8")).values()) == names
    with open(tmp_path / "outputs/pam.csv", newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header[:3] == ["site_id", "x", "y"] and set(header[3:]) == names
    for output in (
        "report.html",
        "figures/richness.png",
        "figures/species-presence.png",
        "site_stats.geojson",
        "pam.geojson",
        "species_stats.csv",
    ):
        assert (tmp_path / "outputs" / output).stat().st_size > 0
    assert not list((tmp_path / "tmp").glob("tmp*.tif")), "create_rare_species_model leaked"
    assert not (tmp_path / "up.csv").exists() and not (tmp_path / "work/up.csv").exists()
