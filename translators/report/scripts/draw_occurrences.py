"""occurrence-cleaning's figures: records kept and dropped per cleaning step and per species,
and a map of the kept against the dropped records (from the gather's work/report_points.json)."""

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np

# Kept dark, dropped light (and hatched, and crosses on the map): told apart in greyscale too.
KEPT_SHADE, DROPPED_SHADE = 0.15, 0.75
KEPT_MARKER, DROPPED_MARKER = "o", "x"


@functools.cache
def _drawing():
    """drawing.py beside this file (a worker runs scripts with `python -I`: their folder is not
    on the path)."""
    spec = importlib.util.spec_from_file_location("drawing", Path(__file__).with_name("drawing.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def colours():
    cmap = _drawing().plt.get_cmap(_drawing().SEQUENTIAL)
    return cmap(KEPT_SHADE), cmap(DROPPED_SHADE)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def step_table(data, steps):
    """[(label, received, dropped)] in the order the steps run; steps without a label (e.g.
    species whose replay disagreed with lmpy) come last under their key."""
    dropped = dict(data["steps"])
    known = [(s["key"], s["label"]) for s in steps]
    known += [(key, key) for key in dropped if key not in {k for k, _ in known}]
    rows, received = [], data["records_read"]
    for key, label in known:
        count = dropped.get(key, 0)
        rows.append((label, received, count))
        received -= count
    return rows


def _bars(axes, labels, kept, dropped):
    kept_colour, dropped_colour = colours()
    rows = np.arange(len(labels))
    axes.barh(rows, kept, color=kept_colour, edgecolor="black", label="kept")
    bars = axes.barh(
        rows,
        dropped,
        left=kept,
        color=dropped_colour,
        edgecolor="black",
        hatch="//",
        label="dropped",
    )
    # Each bar ends with what was dropped, as a number (room made for it on the right).
    axes.bar_label(bars, [f"{d:,} dropped" if d else "" for d in dropped], padding=3, fontsize=8)
    widest = max([k + d for k, d in zip(kept, dropped, strict=True)] or [1])
    axes.set_xlim(0, max(widest, 1) * 1.18)
    axes.set_yticks(rows, labels)
    axes.invert_yaxis()
    axes.set_xlabel("records (count)")
    axes.legend(loc="lower right")


def steps(args, path):
    """args: points (report_points.json), steps ([{key, label}] in order)."""
    drawing = _drawing()
    data = read(args["points"])
    rows = step_table(data, args["steps"])
    figure, axes = drawing.subplots(figsize=(8, 1.2 + 0.45 * len(rows)))
    _bars(
        axes,
        [label for label, _, _ in rows],
        [received - count for _, received, count in rows],
        [count for _, _, count in rows],
    )
    axes.set_title("Records kept and dropped by each cleaning step")
    drawing.save(figure, path)
    total = sum(count for _, _, count in rows)
    note = f"{data['records_read']:,} records read, {total:,} dropped."
    if total:
        label, _, count = max(rows, key=lambda row: row[2])
        note += f" Most dropped by {label}: {count:,}."
    if not data.get("split_dropped_known", True):
        note += " The split ran before drops were recorded: its counts are not shown."
    return note


def species(args, path):
    """args: points, shown (how many species at most)."""
    drawing = _drawing()
    data = read(args["points"])
    table = sorted(
        ((name or "(no name)", kept, dropped) for name, (kept, dropped) in data["species"].items()),
        key=lambda row: (-(row[1] + row[2]), row[0]),
    )
    shown = table[: args["shown"]]
    figure, axes = drawing.subplots(figsize=(8, 1.2 + 0.3 * max(len(shown), 1)))
    labels = [name if len(name) <= 40 else name[:39] + "\u2026" for name, _, _ in shown]
    _bars(axes, labels, [k for _, k, _ in shown], [d for _, _, d in shown])
    axes.set_title("Records kept and dropped per species")
    drawing.save(figure, path)
    note = f"{len(table):,} species"
    if len(table) > len(shown):
        note += f"; the {len(shown)} with the most records shown, {len(table) - len(shown):,} not"
    return note + "."


def _coordinate_system(xs, ys, epsg):
    drawing = _drawing()
    if epsg is None and not (
        len(xs)
        and np.nanmin(xs) >= -180
        and np.nanmax(xs) <= 180
        and np.nanmin(ys) >= -90
        and np.nanmax(ys) <= 90
    ):
        return (
            "x (the records' units)",
            "y (the records' units)",
            "Coordinate system: not given; the coordinates are beyond longitude and latitude.",
        )
    return drawing.coordinate_system(xs, ys, 4326 if epsg is None else epsg)


def points_map(args, path):
    """args: points, epsg (the records' coordinate system after cleaning, None: as read),
    other_crs (steps whose drops are in the coordinate system before a conversion)."""
    drawing = _drawing()
    data = read(args["points"])
    kept = np.array(data["kept"]["sample"], dtype=float).reshape(-1, 2)
    other = set(args.get("other_crs") or [])
    sample = data["dropped"]["sample"]
    mapped = [row for row in sample if row[0] not in other]
    dropped = np.array([[x, y] for _, _, x, y in mapped], dtype=float).reshape(-1, 2)
    both = np.vstack([kept, dropped])
    xlabel, ylabel, crs = _coordinate_system(both[:, 0], both[:, 1], args.get("epsg"))
    kept_colour, dropped_colour = colours()
    figure, axes = drawing.subplots(figsize=(8, 5.5))
    size = 12 if len(both) < 5_000 else 4
    axes.scatter(
        dropped[:, 0],
        dropped[:, 1],
        s=size * 2,
        marker=DROPPED_MARKER,
        color=dropped_colour,
        linewidths=1.5,
        label=f"dropped ({data['dropped']['records']:,})",
    )
    # Kept on top: a dropped repeated locality lies under its kept twin, so crosses alone
    # show where records were lost altogether.
    axes.scatter(
        kept[:, 0],
        kept[:, 1],
        s=size,
        marker=KEPT_MARKER,
        color=kept_colour,
        linewidths=0,
        label=f"kept ({data['kept']['records']:,})",
    )
    if len(both) == 0:
        axes.text(0.5, 0.5, "No records with coordinates", transform=axes.transAxes, ha="center")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title("Records kept and dropped by cleaning")
    axes.grid(color="#dddddd", linewidth=0.5)
    # Outside the axes: "best" would test every one of up to 200,000 markers.
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), markerscale=2)
    drawing.save(figure, path)
    limit = data["limit"]
    note = (
        f"{len(kept):,} of {data['kept']['records']:,} kept and {len(dropped):,} of "
        f"{data['dropped']['records']:,} dropped records drawn"
    )
    if data["kept"]["records"] > limit or data["dropped"]["mappable"] > limit:
        note += f" (a seeded random sample of at most {limit:,} of each)"
    unplaced = data["dropped"]["records"] - data["dropped"]["mappable"]
    if unplaced:
        note += f"; {unplaced:,} dropped records have no coordinates to draw"
    if len(mapped) < len(sample):
        note += (
            f"; {len(sample) - len(mapped):,} dropped before the coordinate conversion are "
            "left off (another coordinate system)"
        )
    return f"{note}. {crs}"
