"""MCPA steps that lmpy 3.1.21's tools get wrong or lack (lmweb translators/mcpa/)."""

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
