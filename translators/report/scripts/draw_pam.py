"""pam-stats' figures: site statistics mapped (all sites, then only the significant ones),
species statistics as histograms, diversity statistics against their null distribution."""

import csv
import functools
import importlib.util
from pathlib import Path

import numpy as np


@functools.cache
def _drawing():
    """drawing.py beside this file (a worker runs scripts with `python -I`: their folder is not
    on the path)."""
    spec = importlib.util.spec_from_file_location("drawing", Path(__file__).with_name("drawing.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def site_map(args, path):
    """args: matrix (site statistics .lmm), statistic, label; optionally significance (.lmm of
    the tested statistics: a 0/1 mask, or adjusted p-values with `adjusted` true, significant
    where <= alpha), alpha, epsg."""
    drawing = _drawing()
    values, headers = drawing.read_lmm(args["matrix"])
    xs, ys = drawing.site_coordinates(headers)
    stat = drawing.column(values, headers, args["statistic"])
    mask = None
    if args.get("significance"):
        marks, mark_headers = drawing.read_lmm(args["significance"])
        if [list(r) for r in mark_headers.get("0", [])] != [list(r) for r in headers.get("0", [])]:
            raise ValueError("the significance matrix's sites differ from the statistics' sites")
        mark = drawing.column(marks, mark_headers, args["statistic"])
        mask = (mark <= args["alpha"]) if args.get("adjusted") else (mark > 0)
    figure, _raster, crs = drawing.map_figure(
        xs, ys, stat, label=args["label"], title=args["title"], epsg=args.get("epsg"), mask=mask
    )
    drawing.save(figure, path)
    finite = np.isfinite(stat) if mask is None else (np.isfinite(stat) & mask)
    if mask is not None:
        note = f"{int(finite.sum()):,} of {len(stat):,} sites significant."
    else:
        note = f"{len(stat):,} sites."
    if finite.any():
        best = int(np.flatnonzero(finite)[np.argmax(stat[finite])])
        note += (
            f" Highest: {drawing.number(stat[best])} at site {headers['0'][best][0]} "
            f"({drawing.number(xs[best])}, {drawing.number(ys[best])})."
        )
    return f"{note} {crs}"


def species_histogram(args, path):
    """args: matrix (species statistics .lmm), statistic, label, title."""
    drawing = _drawing()
    plt = drawing.plt
    values, headers = drawing.read_lmm(args["matrix"])
    stat = drawing.column(values, headers, args["statistic"])
    finite = stat[np.isfinite(stat)]
    figure, axes = drawing.subplots(figsize=(7, 4))
    bins = min(50, max(5, int(np.sqrt(max(len(finite), 1)))))
    axes.hist(finite, bins=bins, color=plt.get_cmap(drawing.SEQUENTIAL)(0.35), edgecolor="black")
    axes.set_xlabel(args["label"])
    axes.set_ylabel("species (count)")
    axes.set_title(args["title"])
    drawing.save(figure, path)
    missing = len(stat) - len(finite)
    note = f"{len(finite):,} species"
    if len(finite):
        note += f", from {drawing.number(finite.min())} to {drawing.number(finite.max())}"
    if missing:
        note += f"; {missing:,} without a value left out"
    return note + "."


def read_random(path):
    """The random diversity values: (randomization numbers, column names, rows x columns)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    names = rows[0][1:]
    numbers = [int(row[0]) for row in rows[1:]]
    values = np.array([[float(v) for v in row[1:]] for row in rows[1:]], dtype=float)
    return numbers, names, values.reshape(len(numbers), len(names))


def null_distribution(args, path):
    """args: observed (diversity .lmm), random (CSV: randomization, then one column per
    statistic), statistic, title. A histogram of the random values with the observed value
    marked; the note gives the share of random values above it."""
    drawing = _drawing()
    plt = drawing.plt
    values, headers = drawing.read_lmm(args["observed"])
    names = headers.get("1") or headers.get("0") or []
    flat = np.asarray(values, dtype=float).ravel()
    observed = float(flat[list(names).index(args["statistic"])])
    _, random_names, random = read_random(args["random"])
    null = random[:, random_names.index(args["statistic"])]
    null = null[np.isfinite(null)]
    figure, axes = drawing.subplots(figsize=(7, 4))
    if len(null) and np.ptp(null) > 0:
        axes.hist(
            null,
            bins=min(50, max(5, int(np.sqrt(len(null))))),
            color=plt.get_cmap(drawing.SECOND)(0.3),
            edgecolor="black",
            label="randomized",
        )
    elif len(null):
        axes.bar(
            [null[0]],
            [len(null)],
            width=max(abs(null[0]) * 0.02, 0.5),
            color=plt.get_cmap(drawing.SECOND)(0.3),
            edgecolor="black",
            label="randomized",
        )
    axes.axvline(observed, color="black", linestyle="--", linewidth=2, label="observed")
    axes.set_xlabel(f"{args['statistic']} (value)")
    axes.set_ylabel("randomized PAMs (count)")
    axes.set_title(args["title"])
    axes.legend()
    drawing.save(figure, path)
    above = int((null > observed).sum())
    share = above / len(null) if len(null) else float("nan")
    return (
        f"Observed {drawing.number(observed)}; {above:,} of {len(null):,} randomized PAMs "
        f"above it (p = {drawing.number(share)})."
    )
