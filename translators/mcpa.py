"""mcpa: metacommunity phylogenetics analysis (MCPA) of a PAM, tested against randomized PAMs."""

# lmpy 3.1.21, checked by hand on the Heuchera PAM, tree, hypotheses and ecoregions raster (the
# example request; commands as built below, run by makeflow -T local):
# - mcpa_run is not used. lmpy.statistics.mcpa's _beta_helper fills only the entries (i, j >= i)
#   of an np.empty array, so every regression on two predictors or more (the biogeographic one
#   always has) inverts uninitialized memory: two runs on the same files differ. It also clips
#   F-values to [-1, 1] (10 of the Heuchera observed ones: a clipped F is never exceeded, p = 0)
#   and leaves singular nodes to rounding: zeros in one run, F-values of 1e4 in the next.
#   STEPS_SCRIPT runs lmpy's per-node MCPA with the helper replaced, F unclipped, and nodes
#   whose sites leave a predictor constant or collinear (decided by rank) as NaN; its values
#   match a plain weighted least-squares fit (tests). Heuchera: 25 of 44 nodes can be fitted.
# - encode_layers -m biogeo drops the attribute of --layer (every polygon burns one value: a
#   two-sided hypothesis becomes one region against the rest) and --min_coverage does nothing
#   (its counts start at 0). STEPS_SCRIPT calls the same LayerEncoder with the attribute, reading
#   the shapefiles inside the zip through /vsizip/: one contrast column (-1/+1, 0 outside) per
#   two-valued shapefile, one column per value otherwise, signs drawn at random (seeded).
# - encode_layers -m mean_value writes the raster's own nodata value (NaN if it has none) where a
#   cell has no data; nothing is reprojected: layers must use the grid's coordinates.
# - mcpa needs the environment and biogeography rows to be the PAM's sites, in its order: the
#   PAM's occupied sites are matched to grid cells by centre (a PAM without its empty sites and a
#   grid covering only the occupied ones both work); empty sites and sites without environment
#   values are dropped from all three; constant predictor columns (every node singular) are
#   dropped and reported, collinear ones refused. Cells straddling a hypothesis border may fall
#   on either side with another grid extent (lmpy's windowing): 1 of 2,114 Heuchera sites.
# - encode_tree_mcpa needs a binary, ultrametric tree with exactly the PAM's species (else "PAM
#   and Tree do not match"): they are matched first, purging only species columns. It draws node
#   signs with unseeded numpy: semi-partial signs vary between runs, F-values do not.
# - calculate_p_values counts random > observed strictly, and cannot compare a 3-D observed
#   matrix (what mcpa_run writes) with a stack (ValueError: non-broadcastable): observed F-values
#   are 2-D (nodes x predictors), random ones are stacked on axis 2. It is given a copy of the
#   observed F with unfit nodes as -inf (p = 1), and random unfit F as +inf (counted as
#   exceeding: p errs high, never low; Heuchera: 1 fitted node has a few unfit random runs).
# - Costs on the 2-core build box, shared (load 3.5-4.7): tool start-up 1-2 s; build_grid 4 s for
#   the example's 14,476 cells (7-13 s for the global 54,000); encoding the ecoregions raster
#   15 s, the three hypotheses 17-22 s (30 s and 18-48 s on the global grid); per randomization
#   ~0.5 s randomize_pam and ~0.6 s MCPA (1.2 s with two rasters).

from __future__ import annotations

import math
from decimal import Decimal

from translators.base import (
    SCHEMA_DIALECT,
    InputSpec,
    InvalidRequest,
    Stage,
    Workflow,
    canonical_json,
)
from translators.makeflow import Category, Rule, render_makeflow
from translators.pam_stats import (
    P_VALUE_PARAMS,
    PYTHON,
    TREE_SCHEMAS,
    _chunks,
    _csv_commands,
    _csv_names,
)

STAGE = "main"
# A chunk rule pays two start-ups (randomize_pam, the MCPA script: ~3 s) against 1-2 s per
# randomization on the Heuchera data: with 20 a rule runs 25-45 s, the fixed part under 15%, and
# 10,000 permutations make 500 rules.
RANDOMIZATIONS_PER_RULE = 20
# Encoding walks every grid cell of every layer in Python (~0.1 ms a cell) and rasterizes each
# hypothesis at a tenth of the cell size (~1 GB at this bound, hence the encode category).
MAX_GRID_CELLS = 500_000
GRID_KEYS = ("min_x", "min_y", "max_x", "max_y", "cell_size", "epsg")

CONFIG = "work/config"
MATCH_PAM_CONFIG = f"{CONFIG}/match_pam.json"
MATCH_TREE_CONFIG = f"{CONFIG}/match_tree.json"
STEPS = f"{CONFIG}/mcpa_steps.py"

GRID = "work/grid/grid.shp"
GRID_FILES = [GRID.removesuffix(".shp") + ext for ext in (".shp", ".shx", ".dbf", ".prj")]
ENV_ENCODED = "work/environment_encoded.lmm"
ENV_GRID = "work/environment_grid.lmm"
BG_GRID = "work/biogeography_grid.lmm"
SITE_PAM = "work/site_pam.lmm"
ENVIRONMENT = "outputs/environment.lmm"
BIOGEOGRAPHY = "outputs/biogeography.lmm"
HYPOTHESES_REPORT = "outputs/hypotheses_report.json"
SITES_REPORT = "outputs/sites_report.json"
MATCHED_PAM = "outputs/matched_pam.lmm"
MATCHED_TREE = "outputs/matched_tree.nex"
TREE_MATRIX = "outputs/tree_matrix.lmm"
OBSERVED = "outputs/mcpa_observed.lmm"
F_VALUES = "outputs/mcpa_f_values.lmm"
F_TESTED = "work/f_values_tested.lmm"
P_VALUES = "outputs/p_values.lmm"

# What GDAL may open in the rules that use it: rasters, the grid's shapefile, memory copies.
GDAL_DRIVERS = ("GTiff", "ESRI Shapefile", "MEM", "Memory")
CATEGORIES = {
    "prepare": Category(cores=1, memory=1024, disk=1024, gdal=GDAL_DRIVERS),
    # The hypotheses' shapefiles are read inside their zip (/vsizip/, one level, local file).
    "encode": Category(cores=1, memory=4096, disk=4096, gdal=GDAL_DRIVERS, vsi=("/vsizip/",)),
    "observed": Category(cores=1, memory=2048, disk=1024),
    "randomize": Category(cores=1, memory=2048, disk=2048),
    "p-values": Category(cores=1, memory=2048, disk=2048),
}

STEPS_SCRIPT = '''\
"""MCPA steps that lmpy 3.1.21's tools get wrong or lack (lmweb translators/mcpa.py)."""

import argparse
import json
import random
import sys
import zipfile
from pathlib import PurePosixPath

import numpy as np
from lmpy import Matrix
from lmpy.data_preparation.layer_encoder import LayerEncoder, _get_encode_hypothesis_method
from lmpy.statistics import mcpa as lmpy_mcpa
from osgeo import gdal, ogr

# A node that cannot be fitted must never test significant: its observed F is tested as -inf
# (every random F exceeds it: p = 1), a random unfit F as +inf (it counts as exceeding).
UNFIT_OBSERVED, UNFIT_RANDOM = -np.inf, np.inf
NUMERIC_FIELDS = (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal)


def nodata(args):
    """Each raster's nodata value becomes NaN in the matrix encode_layers made of them."""
    matrix = Matrix.load(args.encoded)
    data = np.array(matrix, dtype=float)
    if data.shape[1] != len(args.rasters):
        sys.exit(f"{data.shape[1]} encoded columns for {len(args.rasters)} rasters")
    for column, raster in enumerate(args.rasters):
        dataset = gdal.Open(raster)  # a band outliving its dataset crashes GDAL
        value = dataset.GetRasterBand(1).GetNoDataValue()
        dataset = None
        if value is not None:
            data[data[:, column] == value, column] = np.nan
    Matrix(data, headers=matrix.get_headers()).write(args.out)


def hypotheses(args):
    """encode_layers -m biogeo of every shapefile in a zip, split by `field` where it exists.

    encode_layers drops the attribute of a --layer in biogeo mode: every polygon burns the same
    value, and a two-sided hypothesis becomes one region against the rest.
    """
    random.seed(0)  # lmpy draws each contrast's sign: the same inputs give the same matrix
    with zipfile.ZipFile(args.archive) as archive:
        names = sorted(
            name
            for name in archive.namelist()
            if name.lower().endswith(".shp")
            and "__MACOSX" not in PurePosixPath(name).parts
            and not PurePosixPath(name).name.startswith("._")
        )
    if not names:
        sys.exit(f"{args.archive} holds no shapefile")
    encoder = LayerEncoder(args.grid)
    report = []
    for name in names:
        path = f"/vsizip/{args.archive}/{name}"
        dataset = ogr.Open(path)
        if dataset is None:
            sys.exit(f"GDAL cannot open {name} in {args.archive}")
        fields = {d.GetName().lower(): d for d in dataset.GetLayer().schema}
        field = fields.get(args.field.lower())
        if field is not None and field.GetType() not in NUMERIC_FIELDS:
            sys.exit(f"{name}: field {field.GetName()} must hold numbers to split the shapefile")
        attribute = None if field is None else field.GetName()
        dataset = None
        window, missing, values = encoder._read_layer(path, attribute_field=attribute)
        if len(values) == 2:
            values = [tuple(values)]  # two sides of one hypothesis: one contrast column
        columns = encoder._encode_layer(
            window,
            _get_encode_hypothesis_method(values, 0, missing),
            name[: -len(".shp")],
            num_columns=len(values),
        )
        report.append(
            {
                "shapefile": name,
                "split_by": attribute,
                "values": [[float(v) for v in np.atleast_1d(value)] for value in values],
                "columns": columns,
            }
        )
    encoder.get_encoded_matrix().write(args.out)
    with open(args.report, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)


def _full_rank(predictors):
    """Whether the centred predictors (sites x columns) are linearly independent."""
    centred = predictors - predictors.mean(axis=0)
    scale = np.abs(centred).max(axis=0)
    centred /= np.where(scale > 0, scale, 1.0)
    return np.linalg.matrix_rank(centred) == predictors.shape[1]


def align(args):
    """The PAM's occupied sites with environment values, and the grid rows under them."""
    pam, env, bg = Matrix.load(args.pam), Matrix.load(args.env), Matrix.load(args.bg)

    def cell(x, y):
        # build_grid lays cells out from (min_x, max_y); a site is the centre of its cell.
        col = (float(x) - args.min_x) / args.cell_size - 0.5
        row = (args.max_y - float(y)) / args.cell_size - 0.5
        if abs(col - round(col)) > 0.01 or abs(row - round(row)) > 0.01:
            return None
        return round(col), round(row)

    grid = {cell(h[1], h[2]): i for i, h in enumerate(env.get_row_headers())}
    sites = pam.get_row_headers()
    occupied = np.asarray(pam).sum(axis=1) > 0
    # Empty sites are dropped anyway: only occupied ones must lie on the grid.
    under = [None] * len(sites)
    for i in np.flatnonzero(occupied):
        under[i] = grid.get(cell(sites[i][1], sites[i][2]))
    off_grid = [sites[i] for i in np.flatnonzero(occupied) if under[i] is None]
    if off_grid:
        sys.exit(
            f"{len(off_grid)} of {int(occupied.sum())} occupied PAM sites are not the centre of "
            f"a grid cell (first: {off_grid[:3]}): the grid parameters must describe the PAM's "
            "grid and cover its occupied sites"
        )
    values = np.asarray(env, dtype=float)
    lacking = np.zeros(len(sites), dtype=bool)
    for i in np.flatnonzero(occupied):
        lacking[i] = np.isnan(values[under[i]]).any()
    keep = np.flatnonzero(occupied & ~lacking)
    if keep.size < 3:
        sys.exit(f"only {keep.size} occupied PAM sites have environment values")
    rows = [under[i] for i in keep]
    kept = [sites[i] for i in keep]
    parts, dropped = {}, {}
    for key, matrix in (("environment", env), ("biogeography", bg)):
        # A column constant over the sites leaves every node's regression singular.
        data = np.asarray(matrix, dtype=float)[rows]
        varying = [j for j in range(data.shape[1]) if np.ptp(data[:, j]) > 0]
        if not varying:
            sys.exit(f"no {key} column varies across the PAM's occupied sites")
        names = matrix.get_column_headers()
        dropped[key] = [h for j, h in enumerate(names) if j not in varying]
        parts[key] = Matrix(data[:, varying], headers={"0": kept, "1": [names[j] for j in varying]})
    if not _full_rank(np.column_stack([parts["biogeography"], parts["environment"]])):
        sys.exit("the environment and biogeography columns are collinear over the PAM's sites")
    pam.slice(keep).write(args.pam_out)
    parts["environment"].write(args.env_out)
    parts["biogeography"].write(args.bg_out)
    report = {
        "pam_sites": len(sites),
        "empty_sites_dropped": int((~occupied).sum()),
        "sites_without_environment_dropped": int((occupied & lacking).sum()),
        "sites_without_environment": [sites[i] for i in np.flatnonzero(occupied & lacking)],
        "sites_kept": int(keep.size),
        "constant_columns_dropped": dropped,
    }
    with open(args.report, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)


def _weighted_cross_product(mtx1, mtx2, weights):
    """M1' W M2, every entry of it.

    lmpy 3.1.21's _beta_helper fills only the entries (i, j >= i) of an np.empty array, so every
    regression on two predictors or more inverts uninitialized memory: biogeographic values
    (and environmental ones, from two layers on) are garbage that changes from run to run.
    """
    return np.asarray(mtx1).T @ (np.asarray(weights)[:, None] * np.asarray(mtx2))


lmpy_mcpa._beta_helper = _weighted_cross_product


def mcpa(pam, tree, env, bg):
    """Observed values and F-values (nodes x predictors) as lmpy.statistics.mcpa.mcpa, except:

    - cross products are complete (_weighted_cross_product);
    - F-values are not clipped to [-1, 1]: an F above 1 clipped to 1 can never be exceeded by a
      random one, and its p-value would be 0;
    - a node whose sites leave a predictor constant, or predictors collinear, is not fitted (NaN).
      lmpy relies on the inversion failing, which depends on rounding: zeros in one run, huge
      values in the next.
    """
    empty = np.flatnonzero(~np.any(pam, axis=1))
    incidence = np.delete(pam, empty, axis=0)
    env_sites, bg_sites = np.delete(env, empty, axis=0), np.delete(bg, empty, axis=0)
    predictors = np.column_stack([bg_sites, env_sites]).astype(float)
    width = env.shape[1] + bg.shape[1] + 2
    observed = np.full((tree.shape[1], width), np.nan)
    f_values = np.full((tree.shape[1], width), np.nan)
    for node in range(tree.shape[1]):
        column = tree[:, [node]]
        species = np.flatnonzero(np.asarray(column)[:, 0])
        sites = np.flatnonzero(np.asarray(incidence)[:, species].sum(axis=1) > 0)
        if not _full_rank(predictors[sites]):
            continue
        values, f = lmpy_mcpa._mcpa_for_node(incidence, env_sites, bg_sites, column)
        observed[node] = np.nan_to_num(values[0])
        f_values[node] = np.nan_to_num(f[0])
    return observed, f_values


def headers(tree, env, bg):
    columns = [*env.get_column_headers(), "Env - Adjusted R-squared"]
    columns += [*bg.get_column_headers(), "BG - Adjusted R-squared"]
    return {"0": tree.get_column_headers(), "1": columns}


def observed(args):
    pam, tree, env, bg = (Matrix.load(p) for p in (args.pam, args.tree, args.env, args.bg))
    values, f_values = mcpa(pam, tree, env, bg)
    names = headers(tree, env, bg)
    Matrix(values, headers=names).write(args.observed_out)
    Matrix(f_values, headers=names).write(args.f_out)
    tested = np.where(np.isnan(f_values), UNFIT_OBSERVED, f_values)
    Matrix(tested, headers=names).write(args.tested_out)


def randomized(args):
    tree, env, bg = (Matrix.load(p) for p in (args.tree, args.env, args.bg))
    stack = []
    for path in args.pams:
        f_values = mcpa(Matrix.load(path), tree, env, bg)[1]
        stack.append(np.where(np.isnan(f_values), UNFIT_RANDOM, f_values))
    names = {**headers(tree, env, bg), "2": [f"random-{i}" for i in range(1, len(stack) + 1)]}
    Matrix(np.stack(stack, axis=2), headers=names).write(args.stack_out)


def main():
    parser = argparse.ArgumentParser(prog="mcpa_steps.py")
    steps = parser.add_subparsers(required=True)
    step = steps.add_parser("nodata", help="raster nodata to NaN in an encoded matrix")
    for name in ("encoded", "out"):
        step.add_argument(name)
    step.add_argument("rasters", nargs="+")
    step.set_defaults(run=nodata)
    step = steps.add_parser("hypotheses", help="encode the shapefiles of a zip (biogeo)")
    for name in ("grid", "archive", "field", "out", "report"):
        step.add_argument(name)
    step.set_defaults(run=hypotheses)
    step = steps.add_parser("align", help="the PAM's sites and the grid rows under them")
    for name in ("pam", "env", "bg"):
        step.add_argument(name)
    for name in ("min_x", "max_y", "cell_size"):
        step.add_argument(name, type=float)
    for name in ("pam_out", "env_out", "bg_out", "report"):
        step.add_argument(name)
    step.set_defaults(run=align)
    step = steps.add_parser("observed", help="MCPA of the observed PAM")
    for name in ("pam", "tree", "env", "bg", "observed_out", "f_out", "tested_out"):
        step.add_argument(name)
    step.set_defaults(run=observed)
    step = steps.add_parser("random", help="F-values of random PAMs, stacked on axis 2")
    for name in ("tree", "env", "bg", "stack_out"):
        step.add_argument(name)
    step.add_argument("pams", nargs="+")
    step.set_defaults(run=randomized)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
'''


def _coordinate(description: str) -> dict:
    return {"type": "number", "minimum": -1e8, "maximum": 1e8, "description": description}


class Mcpa(Workflow):
    name = "mcpa"
    title = "Metacommunity phylogenetics analysis (MCPA) with a null model"
    description = (
        "Relates the phylogeny of a PAM's species to environment and biogeographic history "
        "(Leibold, Economo and Peres-Neto 2010). Environment rasters are encoded as mean values "
        "and hypothesis shapefiles as contrasts (-1/+1 for the two sides split by "
        "`hypothesis_field`, 0 outside) on the grid the PAM was built on; empty sites and sites "
        "without environment values are left out. The PAM (.lmm) and the tree are matched "
        "(species missing from either are dropped) and the tree is encoded by node. For each "
        "node, MCPA gives semi-partial correlations and adjusted R-squared (observed values) "
        "and pseudo-F values for every predictor; nodes whose sites leave a predictor constant "
        "cannot be fitted (NaN, p = 1). With `permutations` > 0, the F-values are recomputed on "
        "randomized PAMs that keep every site's and species' totals; each gets an empirical "
        "p-value (share of random F strictly greater) and a significance mask at `alpha` (fdr "
        "or raw) or bonferroni-adjusted p-values. Results are lmpy matrices (.lmm) and CSV."
    )
    params_schema = {
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "properties": {
            "grid": {
                "type": "object",
                "description": (
                    "The grid the PAM was built on, as lmpy's build_grid takes it, or any part "
                    "of it covering the PAM's occupied sites: each must be the centre of a cell. "
                    "Rasters and shapefiles are read in these coordinates (not reprojected)."
                ),
                "properties": {
                    "min_x": _coordinate("Left edge of the grid."),
                    "min_y": _coordinate("Bottom edge of the grid."),
                    "max_x": _coordinate("Right edge of the grid."),
                    "max_y": _coordinate("Top edge of the grid (cells are laid out from it)."),
                    "cell_size": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": 1e7,
                        "description": "Side of the square cells, in map units.",
                    },
                    "epsg": {
                        "type": "integer",
                        "minimum": 1024,
                        "maximum": 999999,
                        "description": "EPSG code of the grid's coordinate system.",
                    },
                },
                "required": list(GRID_KEYS),
                "additionalProperties": False,
            },
            "permutations": {
                "type": "integer",
                "minimum": 0,
                "maximum": 10000,
                "default": 100,
                "description": "Number of randomized PAMs for the null model; 0 skips testing.",
            },
            "hypothesis_field": {
                "type": "string",
                "minLength": 1,
                "maxLength": 10,
                "pattern": "^[A-Za-z0-9_]+$",
                "default": "hypSide",
                "description": (
                    "Numeric attribute splitting a hypothesis shapefile into its sides (two "
                    "values: one contrast column; more: one column per value). A shapefile "
                    "without it is one region against the rest."
                ),
            },
            **P_VALUE_PARAMS,
        },
        "required": ["grid"],
        "additionalProperties": False,
    }
    dataset_inputs = {
        "pam": InputSpec(
            formats=("lmm",),
            description="Presence-absence matrix built on `grid`: sites are rows, species columns.",
            content="pam",
        ),
        "tree": InputSpec(
            formats=tuple(TREE_SCHEMAS),
            description="Binary, ultrametric phylogeny whose tips are the PAM's species names.",
            content="tree",
        ),
        "environment": InputSpec(
            formats=("tif",),
            many=True,
            description="Environment rasters, one predictor each, labelled environment-0, -1...",
            content="raster",
        ),
        "hypotheses": InputSpec(
            formats=("zip",),
            description="Zip of biogeographic hypothesis shapefiles (.shp with .shx, .dbf).",
            content="shapefiles",
        ),
    }
    example = {
        "workflow": "mcpa",
        "name": "Heuchera MCPA: ecoregions and three hypotheses, 20 permutations",
        "inputs": {
            "pam": "00000000-0000-0000-0000-000000000001",
            "tree": "00000000-0000-0000-0000-000000000002",
            "environment": ["00000000-0000-0000-0000-000000000003"],
            "hypotheses": "00000000-0000-0000-0000-000000000004",
        },
        "params": {
            # The Heuchera PAM's 1-degree grid (-180 -60 180 90) cut to its occupied sites.
            "grid": {
                "min_x": -163,
                "min_y": 17,
                "max_x": 145,
                "max_y": 64,
                "cell_size": 1,
                "epsg": 4326,
            },
            "permutations": 20,
            "hypothesis_field": "hypSide",
            "p_value_method": "fdr",
            "alpha": 0.05,
        },
        "tags": {"project": "heuchera"},
    }
    # The hypotheses are a folder of shapefiles in the sample data: upload it zipped.
    example_data = {
        "00000000-0000-0000-0000-000000000001": "heuchera/heuchera_rfolk_1deg_global_noempties.lmm",
        "00000000-0000-0000-0000-000000000002": "heuchera/heuchera.nex",
        "00000000-0000-0000-0000-000000000003": "heuchera/ecoregions.tif",
        "00000000-0000-0000-0000-000000000004": "heuchera/hypotheses",
    }

    def validate(self, request) -> None:
        super().validate(request)
        _check_grid(request["params"]["grid"])  # at submission too, not only when planning

    def next_stage(self, params, inputs, done, produced):
        if STAGE in done:
            return None
        grid = _check_grid(params["grid"])
        pam, tree, rasters = inputs["pam"], inputs["tree"], inputs["environment"]
        hypotheses = inputs["hypotheses"]
        schema = TREE_SCHEMAS[tree.rpartition(".")[2].lower()]
        files = {
            MATCH_PAM_CONFIG: canonical_json(
                [
                    {"wrangler_type": "MatchTreeMatrixWrangler", "tree": tree, "species_axis": 1},
                    # Only species: the sites must stay those of the encoded matrices.
                    {"wrangler_type": "PurgeEmptySlicesWrangler", "purge_axes": [1]},
                ]
            ),
            MATCH_TREE_CONFIG: canonical_json(
                [
                    {
                        "wrangler_type": "MatchMatrixTreeWrangler",
                        "matrix": MATCHED_PAM,
                        "species_axis": 1,
                    }
                ]
            ),
            STEPS: STEPS_SCRIPT,
        }
        layers = []
        for index, raster in enumerate(rasters):
            # Named by position (as staged and as validation errors name them): a label from a
            # file name could start with "-", which encode_layers would take for an option.
            layers += ["--layer", raster, f"environment-{index}"]
        rules = [
            Rule(
                "grid",
                ["build_grid", GRID, *(grid[key] for key in GRID_KEYS)],
                inputs=[],
                outputs=GRID_FILES,
                category="prepare",
            ),
            Rule(
                "encode-environment",
                ["encode_layers", "-m", "mean_value", GRID, ENV_ENCODED, *layers],
                then=[[PYTHON, STEPS, "nodata", ENV_ENCODED, ENV_GRID, *rasters]],
                inputs=[*GRID_FILES, *rasters, STEPS],
                outputs=[ENV_GRID],
                scratch=[ENV_ENCODED],
                category="encode",
            ),
            Rule(
                "encode-hypotheses",
                [
                    PYTHON,
                    STEPS,
                    "hypotheses",
                    GRID,
                    hypotheses,
                    params["hypothesis_field"],
                    BG_GRID,
                    HYPOTHESES_REPORT,
                ],
                inputs=[*GRID_FILES, hypotheses, STEPS],
                outputs=[BG_GRID, HYPOTHESES_REPORT],
                category="encode",
            ),
            Rule(
                "align-sites",
                [
                    PYTHON,
                    STEPS,
                    "align",
                    pam,
                    ENV_GRID,
                    BG_GRID,
                    grid["min_x"],
                    grid["max_y"],
                    grid["cell_size"],
                    SITE_PAM,
                    ENVIRONMENT,
                    BIOGEOGRAPHY,
                    SITES_REPORT,
                ],
                then=_csv_commands(ENVIRONMENT, BIOGEOGRAPHY),
                inputs=[pam, ENV_GRID, BG_GRID, STEPS],
                outputs=[
                    SITE_PAM,
                    ENVIRONMENT,
                    BIOGEOGRAPHY,
                    SITES_REPORT,
                    *_csv_names(ENVIRONMENT, BIOGEOGRAPHY),
                ],
                category="prepare",
            ),
            Rule(
                "match-pam",
                [
                    "wrangle_matrix",
                    "-r",
                    "outputs/matched_pam_report.json",
                    SITE_PAM,
                    MATCH_PAM_CONFIG,
                    MATCHED_PAM,
                ],
                inputs=[SITE_PAM, tree, MATCH_PAM_CONFIG],
                outputs=[MATCHED_PAM, "outputs/matched_pam_report.json"],
                category="prepare",
            ),
            Rule(
                "match-tree",
                [
                    "wrangle_tree",
                    "-r",
                    "outputs/matched_tree_report.json",
                    tree,
                    schema,
                    MATCH_TREE_CONFIG,
                    MATCHED_TREE,
                    "nexus",
                ],
                then=[
                    ["encode_tree_mcpa", MATCHED_TREE, "nexus", MATCHED_PAM, TREE_MATRIX],
                    *_csv_commands(TREE_MATRIX),
                ],
                inputs=[tree, MATCHED_PAM, MATCH_TREE_CONFIG],
                outputs=[
                    MATCHED_TREE,
                    "outputs/matched_tree_report.json",
                    TREE_MATRIX,
                    *_csv_names(TREE_MATRIX),
                ],
                category="prepare",
            ),
            Rule(
                "mcpa-observed",
                [
                    PYTHON,
                    STEPS,
                    "observed",
                    MATCHED_PAM,
                    TREE_MATRIX,
                    ENVIRONMENT,
                    BIOGEOGRAPHY,
                    OBSERVED,
                    F_VALUES,
                    F_TESTED,
                ],
                then=_csv_commands(OBSERVED, F_VALUES),
                inputs=[MATCHED_PAM, TREE_MATRIX, ENVIRONMENT, BIOGEOGRAPHY, STEPS],
                outputs=[OBSERVED, F_VALUES, F_TESTED, *_csv_names(OBSERVED, F_VALUES)],
                category="observed",
            ),
        ]
        chunks = _chunks(params["permutations"], RANDOMIZATIONS_PER_RULE)
        stacks = []
        for number, size in enumerate(chunks, start=1):
            rules.append(_chunk_rule(number, size))
            stacks.append(f"work/rand-{number:03d}/f_values.lmm")
        if chunks:
            rules.append(_p_values_rule(stacks, params))
        sources = [pam, tree, *rasters, hypotheses, *files]
        makeflow = render_makeflow(rules, CATEGORIES, "prepare", sources=sources)
        return Stage(STAGE, makeflow, files)


def _number(value: float) -> str:
    """A JSON number as a plain decimal argument: argparse takes "-1e-05" for an option."""
    return format(Decimal(repr(value)), "f")


def _check_grid(grid: dict) -> dict[str, str]:
    """The grid's build_grid arguments, once its bounds make sense (the schema cannot say)."""
    errors = []
    for low, high in (("min_x", "max_x"), ("min_y", "max_y")):
        if grid[low] >= grid[high]:
            errors.append(f"params/grid: {low} must be below {high}")
    if not errors:
        columns = math.ceil((grid["max_x"] - grid["min_x"]) / grid["cell_size"])
        rows = math.ceil((grid["max_y"] - grid["min_y"]) / grid["cell_size"])
        if columns * rows > MAX_GRID_CELLS:
            errors.append(
                f"params/grid: {columns} x {rows} cells, more than {MAX_GRID_CELLS}: "
                "a larger cell_size or a smaller extent"
            )
    if errors:
        raise InvalidRequest(errors)
    return {key: _number(grid[key]) for key in GRID_KEYS}


def _chunk_rule(number: int, size: int) -> Rule:
    """Randomize `size` PAMs and stack their F-values, all in one sandbox."""
    folder = f"work/rand-{number:03d}"
    digits = len(str(size))
    random_pams = [f"{folder}/pam-{i:0{digits}d}.lmm" for i in range(1, size + 1)]
    stack = f"{folder}/f_values.lmm"
    return Rule(
        f"rand-{number:03d}",
        ["randomize_pam", MATCHED_PAM, *random_pams],
        then=[
            [PYTHON, STEPS, "random", TREE_MATRIX, ENVIRONMENT, BIOGEOGRAPHY, stack, *random_pams]
        ],
        inputs=[MATCHED_PAM, TREE_MATRIX, ENVIRONMENT, BIOGEOGRAPHY, STEPS],
        outputs=[stack],
        scratch=random_pams,
        category="randomize",
    )


def _p_values_rule(stacks: list[str], params: dict) -> Rule:
    method = params["p_value_method"]
    if method == "bonferroni":
        # calculate_p_values -m bonferroni -s writes adjusted p-values, not a mask.
        significance = "outputs/p_values_bonferroni.lmm"
    else:
        significance = "outputs/significant.lmm"
    return Rule(
        "p-values",
        [
            "calculate_p_values",
            "-m",
            method,
            "--alpha",
            repr(float(params["alpha"])),
            "-s",
            significance,
            P_VALUES,
            F_TESTED,
            *stacks,
        ],
        then=_csv_commands(P_VALUES, significance),
        inputs=[F_TESTED, *stacks],
        outputs=[P_VALUES, significance, *_csv_names(P_VALUES, significance)],
        category="p-values",
    )


WORKFLOW = Mcpa()
