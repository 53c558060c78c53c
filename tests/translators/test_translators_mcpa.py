"""mcpa: rules, schemas and golden files, and its steps script run on small real matrices."""

import copy
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import zipfile

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
    staged_paths,
    steps,
)

from translators import InvalidRequest
from translators.base import canonical_json
from translators.mcpa import workflow as mcpa

# lmpy's per-node MCPA stores 1 x 1 arrays into scalars (numpy 2.4 turns this into an error).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning"
)

WORKFLOW = mcpa.WORKFLOW
GRID = {"min_x": -163, "min_y": 17, "max_x": 145, "max_y": 64, "cell_size": 1, "epsg": 4326}
STAGED = {
    "pam": "inputs/pam.lmm",
    "tree": "inputs/tree.nex",
    "environment": ["inputs/environment-0.tif"],
    "hypotheses": "inputs/hypotheses.zip",
}
TWO_RASTERS_NEWICK = {
    **STAGED,
    "tree": "inputs/tree.tre",
    "environment": ["inputs/environment-0.tif", "inputs/environment-1.tif"],
}
RULE_ORDER = [
    "grid",
    "encode-environment",
    "encode-hypotheses",
    "align-sites",
    "match-pam",
    "match-tree",
    "mcpa-observed",
    "report",
]


def uuid(index: int) -> str:
    return f"00000000-0000-0000-0000-{index:012d}"


def request(staged=STAGED, **params) -> dict:
    inputs, index = {}, 1
    for key, value in staged.items():
        if isinstance(value, list):
            inputs[key] = [uuid(index + i) for i in range(len(value))]
            index += len(value)
        else:
            inputs[key] = uuid(index)
            index += 1
    return {"workflow": "mcpa", "inputs": inputs, "params": {"grid": GRID, **params}}


def plan(staged=STAGED, **params):
    return WORKFLOW.plan(request(staged, **params), copy.deepcopy(staged), [])


# Golden files -----------------------------------------------------------------------------------

CASES = {
    "mcpa-observed-only": ({"permutations": 0}, STAGED),
    "mcpa-example": (dict(WORKFLOW.example["params"]), STAGED),
    "mcpa-newick-two-rasters-45-bonferroni": (
        {
            "grid": {
                "min_x": -0.00001,
                "min_y": -45.5,
                "max_x": 120.25,
                "max_y": 30,
                "cell_size": 0.25,
                "epsg": 3857,
            },
            "permutations": 45,
            "p_value_method": "bonferroni",
            "alpha": 0.01,
            "hypothesis_field": "SIDE_2",
        },
        TWO_RASTERS_NEWICK,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_case_matches_its_golden_files(name, golden):
    params, staged = CASES[name]
    stage = plan(staged, **params)
    golden(f"{name}.makeflow.json", stage.dumps())
    golden(f"{name}.files.json", canonical_json(stage.files))


def test_every_mcpa_golden_file_belongs_to_a_case(golden_dir):
    names = {f"{name}.{kind}.json" for name in CASES for kind in ("makeflow", "files")}
    on_disk = {path.name for path in golden_dir.iterdir() if path.name.startswith("mcpa-")}
    assert on_disk <= names, f"stale golden files: {sorted(on_disk - names)}"


@pytest.mark.parametrize("name", list(CASES))
def test_planning_twice_gives_the_same_text_and_a_completed_stage_is_not_planned(name):
    params, staged = CASES[name]
    first, second = plan(staged, **params), plan(staged, **params)
    assert first.dumps() == second.dumps()
    assert first.files == second.files
    assert json.loads(first.dumps()) == first.makeflow
    assert WORKFLOW.plan(request(staged, **params), staged, [first.name]) is None


@pytest.mark.skipif(shutil.which("makeflow_analyze") is None, reason="CCTools not installed")
@pytest.mark.parametrize("name", list(CASES))
def test_makeflow_accepts_each_document(name, tmp_path):
    params, staged = CASES[name]
    assert_makeflow_accepts(plan(staged, **params), tmp_path)


# The DAG ------------------------------------------------------------------------------------------

AWKWARD = {
    "pam": "inputs/my pam $x;'q'.lmm",
    "tree": 'inputs/tree "1".tre',
    "environment": ["inputs/env `a`.tif", "inputs/-n.tif"],
    "hypotheses": "inputs/hyp && rm -rf.zip",
}


@pytest.mark.parametrize(
    ("staged", "params"),
    [
        (STAGED, {"permutations": 0}),
        (STAGED, {"permutations": 1}),
        (TWO_RASTERS_NEWICK, {"permutations": 401, "p_value_method": "raw"}),
        (AWKWARD, {"permutations": 3}),
    ],
)
def test_the_stage_is_a_closed_dag_of_relative_paths(staged, params):
    made = check_closed_dag(plan(staged, **params), staged_paths(staged))
    assert {mcpa.OBSERVED, mcpa.F_VALUES, mcpa.SITES_REPORT} <= made
    assert (mcpa.P_VALUES in made) == (params["permutations"] > 0)


def test_the_dag_check_itself_catches_an_input_from_nowhere():
    stage = plan(permutations=2)
    stage.makeflow["rules"][-1]["inputs"].append("work/never-made.lmm")
    with pytest.raises(AssertionError):
        check_closed_dag(stage, staged_paths(STAGED))


def test_a_shapefile_input_is_read_inside_its_zip_and_the_grid_travels_with_its_siblings():
    rules = rules_by_id(plan(permutations=0))
    hypotheses = rules["encode-hypotheses"]
    assert STAGED["hypotheses"] in hypotheses["inputs"]
    for rule_id in ("encode-environment", "encode-hypotheses"):
        assert set(mcpa.GRID_FILES) <= set(rules[rule_id]["inputs"])
    assert [p.rpartition(".")[2] for p in mcpa.GRID_FILES] == ["shp", "shx", "dbf", "prj"]
    assert rules["grid"]["outputs"][:4] == mcpa.GRID_FILES


# Rules ------------------------------------------------------------------------------------------


def test_zero_permutations_compute_the_observed_values_only():
    stage = plan(permutations=0)
    assert list(rules_by_id(stage)) == RULE_ORDER
    assert set(stage.files) == {
        mcpa.MATCH_PAM_CONFIG,
        mcpa.MATCH_TREE_CONFIG,
        mcpa.STEPS,
        "work/config/report/report.json",
        "work/config/report/report.py",
        "work/config/report/drawing.py",
        "work/config/report/draw_mcpa.py",
    }


def test_the_grid_parameters_reach_build_grid_and_the_alignment_as_plain_decimals():
    grid = {"min_x": -0.00001, "min_y": -45.5, "max_x": 120.25, "max_y": 30, "cell_size": 0.25}
    rules = rules_by_id(plan(grid={**grid, "epsg": 3857}, permutations=0))
    assert steps(rules["grid"])[0] == [
        "build_grid",
        "work/grid/grid.shp",
        "-0.00001",
        "-45.5",
        "120.25",
        "30",
        "0.25",
        "3857",
    ]
    align = steps(rules["align-sites"])[0]
    assert align[:4] == ["python3", mcpa.STEPS, "align", STAGED["pam"]]
    # Cells are laid out from (min_x, max_y).
    assert align[6:9] == ["-0.00001", "30", "0.25"]


@pytest.mark.parametrize(
    ("grid", "problem"),
    [
        # The one grid check of translators/common/grid.py, shared with species-pam.
        ({**GRID, "min_x": 145}, "min_x (145) must be less than max_x (145)"),
        ({**GRID, "max_y": 17}, "min_y (17) must be less than max_y (17)"),
        ({**GRID, "cell_size": 0.1}, "3080 x 470 = 1447600 cells; at most 500000"),
    ],
)
def test_grid_bounds_the_schema_cannot_check_are_refused_when_planning(grid, problem):
    plan(grid={**GRID, "cell_size": 0.5}, permutations=0)  # 616 x 94 cells: fine
    with pytest.raises(InvalidRequest, match=re.escape(problem)) as caught:
        plan(grid=grid, permutations=0)
    assert all(error.startswith("params/grid:") for error in caught.value.errors)


def test_environment_rasters_are_encoded_in_order_and_labelled_by_position():
    rules = rules_by_id(plan(TWO_RASTERS_NEWICK, permutations=0))
    encode, nodata = steps(rules["encode-environment"])[:2]
    assert encode == [
        "encode_layers",
        "-m",
        "mean_value",
        "work/grid/grid.shp",
        mcpa.ENV_ENCODED,
        "--layer",
        "inputs/environment-0.tif",
        "environment-0",
        "--layer",
        "inputs/environment-1.tif",
        "environment-1",
    ]
    assert nodata == [
        "python3",
        mcpa.STEPS,
        "nodata",
        mcpa.ENV_ENCODED,
        mcpa.ENV_GRID,
        *TWO_RASTERS_NEWICK["environment"],
    ]
    assert mcpa.ENV_ENCODED not in rules["encode-environment"]["outputs"]


def test_the_hypothesis_field_reaches_the_encoding():
    rules = rules_by_id(plan(permutations=0, hypothesis_field="SIDE_2"))
    assert steps(rules["encode-hypotheses"])[0] == [
        "python3",
        mcpa.STEPS,
        "hypotheses",
        "work/grid/grid.shp",
        STAGED["hypotheses"],
        "SIDE_2",
        mcpa.BG_GRID,
        mcpa.HYPOTHESES_REPORT,
    ]


@pytest.mark.parametrize(("extension", "schema"), [("nex", "nexus"), ("tre", "newick")])
def test_the_pam_is_matched_to_the_tree_on_species_only_and_the_tree_encoded(extension, schema):
    tree = f"inputs/tree.{extension}"
    stage = plan({**STAGED, "tree": tree}, permutations=0)
    match_pam = json.loads(stage.files[mcpa.MATCH_PAM_CONFIG])
    assert match_pam == [
        {"wrangler_type": "MatchTreeMatrixWrangler", "tree": tree, "species_axis": 1},
        # Sites must stay those of the encoded matrices: only species columns are purged.
        {"wrangler_type": "PurgeEmptySlicesWrangler", "purge_axes": [1]},
    ]
    match_tree = json.loads(stage.files[mcpa.MATCH_TREE_CONFIG])
    assert match_tree[0]["matrix"] == mcpa.MATCHED_PAM
    rules = rules_by_id(stage)
    assert steps(rules["match-pam"])[0][3] == mcpa.SITE_PAM
    wrangle, encode = steps(rules["match-tree"])[:2]
    assert wrangle[3:5] == [tree, schema]
    assert wrangle[-2:] == [mcpa.MATCHED_TREE, "nexus"]
    assert encode == [
        "encode_tree_mcpa",
        mcpa.MATCHED_TREE,
        "nexus",
        mcpa.MATCHED_PAM,
        mcpa.TREE_MATRIX,
    ]


def test_mcpa_runs_on_the_matched_pam_with_the_aligned_matrices():
    rules = rules_by_id(plan(permutations=1))
    observed = steps(rules["mcpa-observed"])[0]
    assert observed == [
        "python3",
        mcpa.STEPS,
        "observed",
        mcpa.MATCHED_PAM,
        mcpa.TREE_MATRIX,
        mcpa.ENVIRONMENT,
        mcpa.BIOGEOGRAPHY,
        mcpa.OBSERVED,
        mcpa.F_VALUES,
        mcpa.F_TESTED,
    ]
    # p-values compare the tested copy (unfit nodes as -inf), not the delivered F-values.
    p_values = steps(rules["p-values"])[0]
    assert p_values[-2:] == [mcpa.F_TESTED, "work/rand-001/f_values.lmm"]


@pytest.mark.parametrize(
    ("total", "sizes"),
    [(1, [1]), (20, [20]), (21, [11, 10]), (45, [15, 15, 15]), (100, [20] * 5)],
)
def test_permutations_are_split_into_near_equal_chunks(total, sizes):
    rules = rules_by_id(plan(permutations=total))
    chunk_ids = [r for r in rules if r.startswith("rand-")]
    assert chunk_ids == [f"rand-{n:03d}" for n in range(1, len(sizes) + 1)]
    for rule_id, size in zip(chunk_ids, sizes, strict=True):
        randomize, run, remove = steps(rules[rule_id])
        assert randomize[:2] == ["randomize_pam", mcpa.MATCHED_PAM]
        assert len(randomize) == 2 + size
        stack = f"work/{rule_id}/f_values.lmm"
        matrices = [mcpa.TREE_MATRIX, mcpa.ENVIRONMENT, mcpa.BIOGEOGRAPHY]
        assert run[:7] == ["python3", mcpa.STEPS, "random", *matrices, stack]
        assert run[7:] == randomize[2:]
        assert remove == ["rm", "-f", "--", *randomize[2:]]
        assert rules[rule_id]["outputs"] == [
            stack,
            f"logs/{rule_id}.stdout",
            f"logs/{rule_id}.stderr",
        ]
    assert steps(rules["p-values"])[0][-len(sizes) :] == [
        f"work/{rule_id}/f_values.lmm" for rule_id in chunk_ids
    ]


@pytest.mark.parametrize(
    ("method", "significance"),
    [
        ("fdr", "outputs/significant.lmm"),
        ("raw", "outputs/significant.lmm"),
        # lmpy writes adjusted p-values, not a mask, for bonferroni -s: name it for what it is.
        ("bonferroni", "outputs/p_values_bonferroni.lmm"),
    ],
)
def test_p_values_use_the_method_and_alpha_and_name_the_significance_file(method, significance):
    rule = rules_by_id(plan(permutations=3, p_value_method=method, alpha=0.01))["p-values"]
    p_values, *csv = steps(rule)
    assert p_values[:8] == [
        "calculate_p_values",
        "-m",
        method,
        "--alpha",
        "0.01",
        "-s",
        significance,
        mcpa.P_VALUES,
    ]
    assert csv == [
        ["convert_lmm_to_csv", mcpa.P_VALUES, "outputs/p_values.csv"],
        ["convert_lmm_to_csv", significance, significance.removesuffix(".lmm") + ".csv"],
    ]


def test_every_matrix_delivered_in_two_dimensions_has_its_csv():
    made = check_closed_dag(plan(permutations=2), staged_paths(STAGED))
    matrices = {p for p in made if p.startswith("outputs/") and p.endswith(".lmm")}
    # The PAM keeps lmm only (as pam-stats does); all the others are 2-D tables.
    for path in matrices - {mcpa.MATCHED_PAM}:
        assert path.removesuffix(".lmm") + ".csv" in made, path


def test_awkward_staged_paths_stay_one_argument_and_valid_json():
    stage = plan(AWKWARD, permutations=1)
    rules = rules_by_id(stage)
    assert steps(rules["encode-environment"])[0][5:] == [
        "--layer",
        "inputs/env `a`.tif",
        "environment-0",
        "--layer",
        "inputs/-n.tif",
        "environment-1",
    ]
    assert steps(rules["encode-hypotheses"])[0][4] == AWKWARD["hypotheses"]
    assert steps(rules["align-sites"])[0][3] == AWKWARD["pam"]
    assert steps(rules["match-tree"])[0][3:5] == [AWKWARD["tree"], "newick"]
    assert json.loads(stage.files[mcpa.MATCH_PAM_CONFIG])[0]["tree"] == AWKWARD["tree"]


def test_the_largest_request_keeps_commands_short():
    many = {**STAGED, "environment": [f"inputs/environment-{i}.tif" for i in range(50)]}
    stage = plan(many, permutations=10000)
    rules = stage.makeflow["rules"]
    assert len([r for r in rules if r["category"] == "randomize"]) == 500
    assert max(len(r["command"]) for r in rules) < 30_000


@pytest.mark.parametrize(
    ("staged", "problem"),
    [
        ({**STAGED, "environment": "inputs/environment-0.tif"}, "expected a list of paths"),
        ({**STAGED, "environment": ["inputs/environment-0.asc"]}, "not one of"),
        ({**STAGED, "hypotheses": "inputs/hypotheses.shp"}, "not one of"),
        ({**STAGED, "tree": "inputs/tree.xml"}, "not one of"),
        ({**STAGED, "pam": "/data/jobs/1/inputs/pam.lmm"}, "relative"),
        ({k: v for k, v in STAGED.items() if k != "hypotheses"}, "differ"),
    ],
)
def test_bad_staged_inputs_are_refused(staged, problem):
    WORKFLOW.plan(request(STAGED), copy.deepcopy(STAGED), [])
    with pytest.raises(InvalidRequest, match=problem):
        WORKFLOW.plan(request(STAGED), staged, [])


# Schemas ----------------------------------------------------------------------------------------


def test_params_schema_documents_and_bounds_every_property():
    schema = WORKFLOW.params_schema
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["grid"]
    for name, prop in schema["properties"].items():
        bounded(name, prop)
        if name != "grid":
            Draft202012Validator(prop).validate(prop["default"])
    grid = schema["properties"]["grid"]
    assert grid["additionalProperties"] is False
    assert grid["required"] == list(mcpa.GRID_KEYS)
    for name, prop in grid["properties"].items():
        bounded(name, prop)


def test_the_example_is_a_valid_complete_request_on_the_sample_data():
    example = WORKFLOW.example
    assert {"workflow", "name", "inputs", "params", "tags"} <= set(example)
    assert set(example["params"]) == set(WORKFLOW.params_schema["properties"])
    assert set(example["inputs"]) == set(WORKFLOW.dataset_inputs)
    request_validator(WORKFLOW).validate(example)
    staged = {**STAGED, "tree": "inputs/tree.nex"}
    assert WORKFLOW.plan(example, staged, []) is not None
    # The Heuchera PAM's sites are centres of 1-degree cells from -162.5 to 144.5, 17.5 to 63.5.
    grid = example["params"]["grid"]
    assert (grid["min_x"], grid["max_x"], grid["min_y"], grid["max_y"]) == (-163, 145, 17, 64)


def test_the_example_names_its_sample_data():
    assert set(WORKFLOW.example_data) == {
        placeholder
        for value in WORKFLOW.example["inputs"].values()
        for placeholder in (value if isinstance(value, list) else [value])
    }


def test_the_sample_data_holds_the_examples_files():
    from tests.synthetic import sample_data

    folder = sample_data()
    for relative in WORKFLOW.example_data.values():
        assert (folder / relative).exists(), relative
    hypotheses = folder / WORKFLOW.example_data[WORKFLOW.example["inputs"]["hypotheses"]]
    stems = {path.stem for path in hypotheses.glob("*.shp")}
    assert stems == {"Continental_Divide", "Eastern_Divide", "Great_Basin"}
    for stem in stems:
        assert {f"{stem}.{ext}" for ext in ("shx", "dbf")} <= {p.name for p in hypotheses.iterdir()}


def test_the_synthetic_example_inputs_fit_the_example_as_given(tmp_path):
    """What the integration test runs on every clone: the PAM's sites are cell centres inside the
    example's grid and on the ecoregions raster, the hypotheses split them on the example's
    hypothesis_field."""
    from osgeo import gdal, ogr

    from tests import synthetic

    gdal.UseExceptions()
    files = synthetic.example_uploads(WORKFLOW.name, tmp_path)
    assert list(files) == list(WORKFLOW.example_data)
    grid = WORKFLOW.example["params"]["grid"]
    sites = synthetic.pam_matrix().get_headers()["0"]
    for _, x, y in sites:
        assert grid["min_x"] < x < grid["max_x"] and grid["min_y"] < y < grid["max_y"]
        assert (x - grid["min_x"]) % grid["cell_size"] == 0.5
    raster = gdal.Open(str(tmp_path / "eco.tif"))
    left, size, _, top, _, _ = raster.GetGeoTransform()
    assert raster.GetSpatialRef().GetAuthorityCode(None) == str(grid["epsg"])
    assert all(
        left < x < left + size * raster.RasterXSize and top + -size * raster.RasterYSize < y < top
        for _, x, y in sites
    )
    field = WORKFLOW.example["params"]["hypothesis_field"]
    shapefiles = sorted((tmp_path / "hyp").glob("*.shp"))
    assert len(shapefiles) == 3
    for path in shapefiles:
        source = ogr.Open(str(path))  # the layer lives only as long as its data source
        values = sorted(feature.GetField(field) for feature in source.GetLayer())
        assert values == [0, 1], path.name


def test_inputs_are_dataset_ids_and_environment_takes_several():
    schema = WORKFLOW.inputs_schema
    assert schema["required"] == ["pam", "tree", "environment", "hypotheses"]
    assert schema["properties"]["environment"]["type"] == "array"
    assert schema["properties"]["environment"]["minItems"] == 1
    assert {spec.content for spec in WORKFLOW.dataset_inputs.values()} == {
        "pam",
        "tree",
        "raster",
        "shapefiles",
    }


def test_with_defaults_fills_only_what_is_missing():
    assert WORKFLOW.with_defaults({"grid": GRID}) == {
        "grid": GRID,
        "permutations": 100,
        "hypothesis_field": "hypSide",
        "p_value_method": "fdr",
        "alpha": 0.05,
    }


BAD = {
    "no grid": drop_at(("params", "grid")),
    "no params": drop_at(("params",)),
    "grid without epsg": drop_at(("params", "grid", "epsg")),
    "grid with an unknown key": set_at(("params", "grid", "rows"), 10),
    "cell size zero": set_at(("params", "grid", "cell_size"), 0),
    "cell size as text": set_at(("params", "grid", "cell_size"), "1"),
    "coordinate out of range": set_at(("params", "grid", "max_x"), 1e9),
    "epsg fractional": set_at(("params", "grid", "epsg"), 4326.5),
    "epsg too small": set_at(("params", "grid", "epsg"), 12),
    "permutations negative": set_at(("params", "permutations"), -1),
    "permutations above 10000": set_at(("params", "permutations"), 10001),
    "field too long for a dbf": set_at(("params", "hypothesis_field"), "hypothesis_side"),
    "field with a space": set_at(("params", "hypothesis_field"), "hyp side"),
    "field empty": set_at(("params", "hypothesis_field"), ""),
    "unknown method": set_at(("params", "p_value_method"), "holm"),
    "alpha one": set_at(("params", "alpha"), 1),
    "unknown param": set_at(("params", "seed"), 1),
    "no environment": drop_at(("inputs", "environment")),
    "environment empty": set_at(("inputs", "environment"), []),
    "environment repeated": set_at(("inputs", "environment"), [uuid(3), uuid(3)]),
    "environment not a list": set_at(("inputs", "environment"), uuid(3)),
    "no hypotheses": drop_at(("inputs", "hypotheses")),
    "no tree": drop_at(("inputs", "tree")),
    "unknown input": set_at(("inputs", "grid"), uuid(9)),
}


@pytest.mark.parametrize("label", list(BAD))
def test_a_bad_request_fails_while_its_unchanged_twin_passes(label):
    assert_refused_while_twin_passes(WORKFLOW, BAD[label])


# The steps script, run on small real matrices ---------------------------------------------------


@pytest.fixture
def lmpy_tools():
    pytest.importorskip("lmpy")
    pytest.importorskip("osgeo")


@pytest.fixture
def script(tmp_path, lmpy_tools):
    path = tmp_path / "mcpa_steps.py"
    path.write_text(plan(permutations=0).files[mcpa.STEPS], encoding="utf-8")
    return path


@pytest.fixture
def steps_module(script, monkeypatch):
    """The script imported in-process; lmpy's _beta_helper is restored afterwards."""
    from lmpy.statistics import mcpa as lmpy_mcpa

    monkeypatch.setattr(lmpy_mcpa, "_beta_helper", lmpy_mcpa._beta_helper)
    spec = importlib.util.spec_from_file_location("mcpa_steps", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_step(script, *args, cwd):
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_steps_script_is_the_one_the_stage_writes():
    files = plan(permutations=0).files
    assert files[mcpa.STEPS] == mcpa.STEPS_SCRIPT
    compile(mcpa.STEPS_SCRIPT, "mcpa_steps.py", "exec")


def test_cross_products_are_complete(steps_module):
    import numpy as np

    rng = np.random.default_rng(1)
    left, right, weights = rng.normal(size=(9, 3)), rng.normal(size=(9, 2)), rng.random(9)
    expected = left.T @ np.diag(weights) @ right
    assert np.allclose(steps_module._weighted_cross_product(left, right, weights), expected)
    from lmpy.statistics import mcpa as lmpy_mcpa

    # lmpy's own per-node MCPA calls the replacement.
    assert lmpy_mcpa._beta_helper is steps_module._weighted_cross_product


def _community(np):
    """A PAM, its encoded tree, environment and biogeography for MCPA (lmpy Matrix objects)."""
    from lmpy import Matrix
    from lmpy.data_preparation.tree_encoder import TreeEncoder
    from lmpy.tree import TreeWrapper

    rng = np.random.default_rng(7)
    species = ["A", "B", "C", "D", "E", "F"]
    sites = 60
    pam = (rng.random((sites, len(species))) < 0.4).astype(float)
    pam[:, :2] = 0
    pam[:12, 0] = 1
    pam[8:20, 1] = 1  # node (A, B) lives at sites 0..19 only
    headers = {"0": [[i, i + 0.5, 0.5] for i in range(sites)], "1": species}
    pam = Matrix(pam, headers=headers)
    tree = TreeWrapper.get(data="(((A:1,B:1):1,(C:1,D:1):1):1,(E:1.5,F:1.5):1.5);", schema="newick")
    np.random.seed(3)  # TreeEncoder draws the sign of each node
    tree_matrix = TreeEncoder(tree, pam).encode_phylogeny()
    env = Matrix(
        rng.normal(size=(sites, 2)), headers={"0": headers["0"], "1": ["temperature", "rain"]}
    )
    side = np.where(np.arange(sites) % 3 == 0, -1.0, 1.0)
    bg = Matrix(side[:, None], headers={"0": headers["0"], "1": ["divide"]})
    return pam, tree_matrix, env, bg


def _without_a_split_under_a_and_b(np, pam, bg):
    """The biogeography made constant over the sites of node (A, B): 0..19."""
    from lmpy import Matrix

    side = np.asarray(bg).copy()
    side[:20] = 1.0
    return Matrix(side, headers=bg.get_headers())


def _least_squares(np, pam, column, env, bg):
    """F-values of one node by a plain weighted least-squares fit (Leibold et al. 2010)."""
    pam, column = np.asarray(pam), np.asarray(column)[:, 0]
    species = np.flatnonzero(column)
    incidence = pam[:, species]
    sites = np.flatnonzero(incidence.sum(axis=1) > 0)
    incidence = incidence[sites]
    site_w, species_w = incidence.sum(axis=1), incidence.sum(axis=0)

    def standard(matrix, weights):
        mean = weights @ matrix / weights.sum()
        sd = np.sqrt(weights @ (matrix * matrix) - (weights @ matrix) ** 2 / weights.sum())
        return (matrix - mean) / (sd / np.sqrt(weights.sum()))

    y = incidence @ standard(column[species][:, None], species_w)
    e = standard(np.asarray(env)[sites], site_w)
    everything = np.column_stack([standard(np.asarray(bg)[sites], site_w), e])
    root = np.sqrt(site_w)[:, None]

    def fit(x):
        beta = np.linalg.lstsq(x * root, y * root, rcond=None)[0]
        y_hat = x @ beta
        return (y_hat**2).sum() / (y**2).sum(), ((y - y_hat) ** 2).sum(), (y_hat**2).sum()

    r2_env, residual_env, explained_env = fit(e)
    r2_all, residual_all, explained_all = fit(everything)
    f_env = [(r2_env - fit(np.delete(e, i, axis=1))[0]) / residual_env for i in range(2)]
    f_bg = [(r2_all - fit(np.delete(everything, 0, axis=1))[0]) / residual_all]
    return [*f_env, explained_env / residual_env, *f_bg, explained_all / residual_all]


def test_mcpa_f_values_match_a_weighted_least_squares_fit_run_after_run(steps_module):
    np = pytest.importorskip("numpy")
    pam, tree, env, bg = _community(np)
    observed, f_values = steps_module.mcpa(pam, tree, env, bg)
    assert f_values.shape == (tree.shape[1], 2 + 1 + 1 + 1)
    assert not np.isnan(f_values).any()
    for node in range(tree.shape[1]):
        expected = _least_squares(np, pam, tree[:, [node]], env, bg)
        assert np.allclose(f_values[node], expected, rtol=1e-6, atol=1e-12), node
    again = steps_module.mcpa(pam, tree, env, bg)
    assert np.array_equal(again[0], observed) and np.array_equal(again[1], f_values)
    assert (np.abs(observed[:, [0, 1, 3]]) <= 1).all()  # semi-partial correlations


def test_a_node_whose_sites_leave_a_predictor_constant_is_not_fitted(steps_module):
    np = pytest.importorskip("numpy")
    pam, tree, env, bg = _community(np)
    bg = _without_a_split_under_a_and_b(np, pam, bg)
    a_b = next(n for n in range(tree.shape[1]) if set(np.flatnonzero(tree[:, n])) == {0, 1})
    observed, f_values = steps_module.mcpa(pam, tree, env, bg)
    assert np.isnan(f_values[a_b]).all() and np.isnan(observed[a_b]).all()
    others = [n for n in range(tree.shape[1]) if n != a_b]
    assert not np.isnan(f_values[others]).any()


def test_observed_and_random_runs_write_what_the_p_values_need(script, tmp_path):
    np = pytest.importorskip("numpy")
    from lmpy import Matrix

    pam, tree, env, bg = _community(np)
    bg = _without_a_split_under_a_and_b(np, pam, bg)  # node (A, B) cannot be fitted
    for name, matrix in (("pam", pam), ("tree", tree), ("env", env), ("bg", bg)):
        matrix.write(str(tmp_path / f"{name}.lmm"))
    files = ["pam.lmm", "tree.lmm", "env.lmm", "bg.lmm"]
    done = run_step(script, "observed", *files, "obs.lmm", "f.lmm", "tested.lmm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_step(script, "random", *files[1:], "stack.lmm", "pam.lmm", "pam.lmm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    f_values = Matrix.load(str(tmp_path / "f.lmm"))
    tested = np.asarray(Matrix.load(str(tmp_path / "tested.lmm")))
    stack = Matrix.load(str(tmp_path / "stack.lmm"))
    assert f_values.get_headers() == {
        "0": tree.get_column_headers(),
        "1": [
            "temperature",
            "rain",
            "Env - Adjusted R-squared",
            "divide",
            "BG - Adjusted R-squared",
        ],
    }
    unfit = np.isnan(np.asarray(f_values)).all(axis=1)
    assert unfit.sum() == 1
    assert (tested[unfit] == -np.inf).all()
    assert np.array_equal(tested[~unfit], np.asarray(f_values)[~unfit])
    assert stack.shape == (*f_values.shape, 2)
    assert (np.asarray(stack)[unfit] == np.inf).all()
    assert np.array_equal(np.asarray(stack)[~unfit][:, :, 0], tested[~unfit])


def _grid(tmp_path, columns=4, rows=2):
    from lmpy.data_preparation.build_grid import build_grid

    path = tmp_path / "grid" / "grid.shp"
    path.parent.mkdir()
    build_grid(str(path), 0, 0, columns, rows, 1, 4326, 4)
    return path


def _shapefile(folder, name, polygons, field=None, kind=None):
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    dataset = ogr.GetDriverByName("ESRI Shapefile").CreateDataSource(str(folder / f"{name}.shp"))
    layer = dataset.CreateLayer(name, srs, ogr.wkbPolygon)
    if field:
        layer.CreateField(ogr.FieldDefn(field, kind or ogr.OFTInteger))
    for (x0, y0, x1, y1), value in polygons:
        feature = ogr.Feature(layer.GetLayerDefn())
        wkt = f"POLYGON (({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        if field:
            feature.SetField(field, value)
        layer.CreateFeature(feature)
    dataset = None
    return sorted(folder.glob(f"{name}.*"))


def test_hypotheses_are_split_by_the_field_where_a_shapefile_has_it(script, tmp_path):
    np = pytest.importorskip("numpy")
    from lmpy import Matrix

    grid = _grid(tmp_path)
    shapes = tmp_path / "shapes"
    shapes.mkdir()
    files = _shapefile(shapes, "two_sides", [((0, 0, 2, 2), 0), ((2, 0, 4, 2), 1)], field="hypSide")
    files += _shapefile(shapes, "one_region", [((0, 0, 1, 2), 0)])
    files += _shapefile(
        shapes, "three", [((0, 0, 1, 2), 1), ((1, 0, 2, 2), 2), ((2, 0, 4, 2), 3)], "HYPSIDE"
    )
    archive = tmp_path / "hypotheses.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        for path in files:
            opened.write(path, f"set/{path.name}")
        opened.writestr("__MACOSX/set/._two_sides.shp", b"\0junk")
    done = run_step(
        script, "hypotheses", grid, archive.name, "hypSide", "bg.lmm", "r.json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    matrix = Matrix.load(str(tmp_path / "bg.lmm"))
    assert matrix.get_column_headers() == [
        "set/one_region",
        "set/three-0",
        "set/three-1",
        "set/three-2",
        "set/two_sides",
    ]
    # Cells in build_grid order: top row x = 0.5 .. 3.5, then the bottom row.
    x = np.array([h[1] for h in matrix.get_row_headers()])
    data = np.asarray(matrix)
    two_sides = data[:, 4]
    assert set(np.abs(two_sides)) == {1.0}
    assert len(set(two_sides[x < 2])) == 1 and (two_sides[x > 2] == -two_sides[x < 2][0]).all()
    one_region = data[:, 0]
    assert (one_region[x > 1] == 0).all() and set(np.abs(one_region[x < 1])) == {1.0}
    assert [int((data[:, j] != 0).sum()) for j in (1, 2, 3)] == [2, 2, 4]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [(r["shapefile"], r["split_by"]) for r in report] == [
        ("set/one_region.shp", None),
        ("set/three.shp", "HYPSIDE"),
        ("set/two_sides.shp", "hypSide"),
    ]
    again = run_step(
        script, "hypotheses", grid, archive.name, "hypSide", "bg2.lmm", "r2.json", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert np.array_equal(np.asarray(Matrix.load(str(tmp_path / "bg2.lmm"))), data)


def test_a_hypothesis_field_holding_text_is_refused(script, tmp_path):
    from osgeo import ogr

    grid = _grid(tmp_path)
    shapes = tmp_path / "shapes"
    shapes.mkdir()
    files = _shapefile(
        shapes, "named", [((0, 0, 2, 2), "east"), ((2, 0, 4, 2), "west")], "hypSide", ogr.OFTString
    )
    with zipfile.ZipFile(tmp_path / "h.zip", "w") as opened:
        for path in files:
            opened.write(path, path.name)
    done = run_step(
        script, "hypotheses", grid, "h.zip", "hypSide", "bg.lmm", "r.json", cwd=tmp_path
    )
    assert done.returncode != 0
    assert "named.shp: field hypSide must hold numbers" in done.stderr


def test_raster_nodata_becomes_nan(script, tmp_path):
    np = pytest.importorskip("numpy")
    from lmpy import Matrix
    from osgeo import gdal

    for name, nodata in (("a.tif", -3.4e38), ("b.tif", None)):
        dataset = gdal.GetDriverByName("GTiff").Create(
            str(tmp_path / name), 2, 2, 1, gdal.GDT_Float32
        )
        if nodata is not None:
            dataset.GetRasterBand(1).SetNoDataValue(nodata)
        dataset = None
    missing = float(np.float32(-3.4e38))
    encoded = Matrix(
        np.array([[1.0, 2.0], [missing, 5.0], [3.0, np.nan]]),
        headers={"0": [[0, 0.5, 0.5], [1, 1.5, 0.5], [2, 2.5, 0.5]], "1": ["a", "b"]},
    )
    encoded.write(str(tmp_path / "encoded.lmm"))
    done = run_step(script, "nodata", "encoded.lmm", "out.lmm", "a.tif", "b.tif", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = Matrix.load(str(tmp_path / "out.lmm"))
    assert np.array_equal(
        np.asarray(out), np.array([[1.0, 2.0], [np.nan, 5.0], [3.0, np.nan]]), equal_nan=True
    )
    assert out.get_headers() == encoded.get_headers()


def _grid_matrix(np, values, names):
    """A matrix over build_grid's cells of a 4 x 2 grid from (0, 2): ids 0..7, row by row."""
    from lmpy import Matrix

    rows = [[i, 0.5 + i % 4, 1.5 - i // 4] for i in range(8)]
    return Matrix(np.array(values, dtype=float), headers={"0": rows, "1": names})


def test_align_keeps_the_pams_occupied_sites_in_its_order(script, tmp_path):
    np = pytest.importorskip("numpy")
    from lmpy import Matrix

    env = _grid_matrix(np, [[10 * i] for i in range(8)], ["temperature"])
    env[5, 0] = np.nan  # no raster data under cell 5
    bg = _grid_matrix(
        np, [[1, 5], [1, 5], [-1, 5], [-1, 5], [1, 5], [1, 5], [-1, 5], [0, 5]], ["d", "c"]
    )
    env.write(str(tmp_path / "env.lmm"))
    bg.write(str(tmp_path / "bg.lmm"))
    # Another grid's ids, the PAM's own order, an empty site off the grid, one without data.
    sites = [[70, 2.5, 0.5], [71, 0.5, 1.5], [72, 9.5, 9.5], [73, 1.5, 0.5], [74, 3.5, 1.5]]
    sites.append([75, 3.5, 0.5])
    presence = [[1, 0], [1, 1], [0, 0], [0, 1], [1, 0], [0, 1]]
    pam = Matrix(np.array(presence, dtype=float), headers={"0": sites, "1": ["s1", "s2"]})
    pam.write(str(tmp_path / "pam.lmm"))
    outputs = ["p.lmm", "e.lmm", "b.lmm", "report.json"]
    args = ["align", "pam.lmm", "env.lmm", "bg.lmm", "0", "2", "1", *outputs]
    done = run_step(script, *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    kept = [sites[0], sites[1], sites[4], sites[5]]
    p, e, b = (Matrix.load(str(tmp_path / name)) for name in outputs[:3])
    assert p.get_row_headers() == e.get_row_headers() == b.get_row_headers() == kept
    # Cells under (2.5, 0.5), (0.5, 1.5), (3.5, 1.5), (3.5, 0.5): ids 6, 0, 3, 7.
    assert np.asarray(e)[:, 0].tolist() == [60, 0, 30, 70]
    assert b.get_column_headers() == ["d"] and np.asarray(b)[:, 0].tolist() == [-1, 1, -1, 0]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == {
        "pam_sites": 6,
        "empty_sites_dropped": 1,
        "sites_without_environment_dropped": 1,
        "sites_without_environment": [[73, 1.5, 0.5]],
        "sites_kept": 4,
        "constant_columns_dropped": {"environment": [], "biogeography": ["c"]},
    }


def test_align_refuses_a_pam_whose_occupied_sites_are_not_cell_centres(script, tmp_path):
    np = pytest.importorskip("numpy")
    from lmpy import Matrix

    _grid_matrix(np, [[i] for i in range(8)], ["t"]).write(str(tmp_path / "env.lmm"))
    _grid_matrix(np, [[i % 2] for i in range(8)], ["d"]).write(str(tmp_path / "bg.lmm"))
    sites = [[0, 0.5, 1.5], [1, 1.0, 1.5], [2, 2.5, 0.5], [3, 3.5, 0.5]]
    pam = Matrix(np.ones((4, 1)), headers={"0": sites, "1": ["s1"]})
    pam.write(str(tmp_path / "pam.lmm"))
    outputs = ["p.lmm", "e.lmm", "b.lmm", "report.json"]
    done = run_step(
        script, "align", "pam.lmm", "env.lmm", "bg.lmm", "0", "2", "1", *outputs, cwd=tmp_path
    )
    assert done.returncode != 0
    assert "1 of 4 occupied PAM sites are not the centre of a grid cell" in done.stderr
    assert "[1, 1.0, 1.5]" in done.stderr
    assert not (tmp_path / "p.lmm").exists()


def test_an_example_sized_grid_is_far_below_the_bound():
    grid = WORKFLOW.example["params"]["grid"]
    cells = math.ceil((grid["max_x"] - grid["min_x"]) / grid["cell_size"]) * math.ceil(
        (grid["max_y"] - grid["min_y"]) / grid["cell_size"]
    )
    assert cells == 308 * 47 < mcpa.MAX_GRID_CELLS
