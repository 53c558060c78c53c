"""mcpa's figures: a clade (tree node) by predictor heatmap of a matrix MCPA writes, with the
cells that test significant marked."""

import functools
import importlib.util
from pathlib import Path

import numpy as np

# Beyond this many nodes the rows stop being readable (about 0.2 inch each): the nodes with the
# most significant cells, then the largest values, are shown, and the note says how many.
MAX_ROWS = 60
# The colour of a significant cell's mark: white with a black rim reads on both ends of cividis.
MARK = "white"


@functools.cache
def _drawing():
    """drawing.py beside this file (a worker runs scripts with `python -I`: their folder is not
    on the path)."""
    spec = importlib.util.spec_from_file_location("drawing", Path(__file__).with_name("drawing.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def significant_cells(args, shape, headers):
    """Nodes x predictors booleans from args["significance"] (a 0/1 mask, or adjusted p-values
    with `adjusted`, significant where <= alpha); None without significance."""
    if not args.get("significance"):
        return None
    drawing = _drawing()
    marks, mark_headers = drawing.read_lmm(args["significance"])
    if mark_headers.get("0") != headers.get("0") or mark_headers.get("1") != headers.get("1"):
        raise ValueError("the significance matrix's nodes or predictors differ from the values'")
    marks = np.asarray(marks, dtype=float).reshape(shape)
    if args.get("adjusted"):
        return marks <= float(args["alpha"])
    return marks > 0


def shown_rows(values, significant, limit=MAX_ROWS):
    """Indices of the rows to draw, in matrix order: all of them, or the `limit` rows with the
    most significant cells, then the largest absolute value."""
    rows = values.shape[0]
    if rows <= limit:
        return np.arange(rows)
    hits = significant.sum(axis=1) if significant is not None else np.zeros(rows)
    magnitude = np.where(np.isfinite(values), np.abs(values), -1.0).max(axis=1, initial=-1.0)
    # lexsort sorts by its last key first: most significant cells, then largest value, then
    # matrix order (stable).
    order = np.lexsort((np.arange(rows), -magnitude, -hits))
    return np.sort(order[:limit])


def clade_sizes(args, nodes):
    """How many species each node's clade holds: its non-zero entries in the encoded tree
    (species x nodes, as encode_tree_mcpa writes it)."""
    drawing = _drawing()
    tree, tree_headers = drawing.read_lmm(args["tree"])
    names = [str(name) for name in tree_headers.get("1") or []]
    if names != nodes:
        raise ValueError("the encoded tree's nodes differ from the values' nodes")
    return (np.asarray(tree, dtype=float) != 0).sum(axis=0)


def layout(rows, columns):
    """(width, height) in inches: a fixed margin for labels plus a share per cell."""
    return max(6.0, 3.0 + 0.55 * columns), max(4.0, 2.0 + 0.22 * rows)


def heatmap(args, path):
    """args: matrix (nodes x predictors .lmm), label (the colour scale's quantity and unit),
    title, symmetric (scale from -m to m, m the largest absolute value: signed values);
    optionally tree (the encoded tree .lmm: rows labelled with their clade's species count),
    significance, adjusted, alpha (as significant_cells reads them)."""
    figure, _axes, _rows, note = heatmap_figure(args)
    _drawing().save(figure, path)
    return note


def heatmap_figure(args):
    """(figure, axes, the matrix rows drawn from top to bottom, note) of `heatmap`: cell (row
    i, column j) of the drawing is centred on the axes' point (j, i)."""
    drawing = _drawing()
    plt = drawing.plt
    values, headers = drawing.read_lmm(args["matrix"])
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"expected nodes x predictors, got a matrix of shape {values.shape}")
    nodes = [str(name) for name in headers.get("0") or range(values.shape[0])]
    predictors = [str(name) for name in headers.get("1") or range(values.shape[1])]
    significant = significant_cells(args, values.shape, headers)
    rows = shown_rows(values, significant)
    shown = values[rows]
    finite = shown[np.isfinite(shown)]
    if args.get("symmetric"):
        top = float(np.abs(finite).max()) if len(finite) else 1.0
        low, high = -(top or 1.0), top or 1.0
    else:
        low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        if high == low:
            high = low + 1.0
    width, height = layout(len(rows), len(predictors))
    figure, axes = drawing.subplots(figsize=(width, height))
    colormap = plt.get_cmap(drawing.SECOND).with_extremes(bad=drawing.NO_DATA)
    image = axes.imshow(
        np.ma.masked_invalid(shown),
        cmap=colormap,
        vmin=low,
        vmax=high,
        interpolation="nearest",
        aspect="auto",
    )
    labels = [nodes[i] for i in rows]
    if args.get("tree"):
        sizes = clade_sizes(args, nodes)[rows]
        labels = [f"{name} ({count:,} sp.)" for name, count in zip(labels, sizes, strict=True)]
    axes.set_xticks(range(len(predictors)), predictors, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(rows)), labels, fontsize=7)
    axes.set_xlabel("predictor (column of the matrix)")
    axes.set_ylabel("clade (tree node, its species)")
    axes.set_title(args["title"])
    figure.colorbar(image, ax=axes, label=args["label"], shrink=0.8)
    if significant is not None:
        marked = np.argwhere(significant[rows])
        # A round dot a third of the smaller side of a cell, whatever the figure's shape: its
        # size is in points, known once the layout is done.
        figure.canvas.draw()
        axes.autoscale(False)  # the dots must not widen the axes beyond the cells
        box = axes.get_window_extent()
        side = min(box.width / len(predictors), box.height / len(rows)) * 72 / figure.dpi
        axes.scatter(
            marked[:, 1],
            marked[:, 0],
            s=(side * 0.35) ** 2,
            c=MARK,
            edgecolors="black",
            linewidths=0.8,
        )
    fitted = np.isfinite(values).any(axis=1)
    note = f"{int(fitted.sum()):,} of {len(nodes):,} nodes fitted ({len(predictors)} columns)."
    if len(rows) < len(nodes):
        note += (
            f" {len(rows)} of {len(nodes):,} nodes shown: those with the most significant "
            "cells, then the largest absolute values."
        )
    if significant is not None:
        note += f" {int(significant.sum()):,} of {significant.size:,} cells significant."
    if np.isfinite(values).any():
        all_finite = np.where(np.isfinite(values), values, -np.inf)
        node, column = np.unravel_index(int(np.argmax(all_finite)), values.shape)
        note += (
            f" Highest: {drawing.number(values[node, column])} at node {nodes[node]}, "
            f"{predictors[column]}."
        )
    return figure, axes, rows, note
