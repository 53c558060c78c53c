"""species-pam's figures: species richness mapped from the PAM, and a sheet of small maps of
where each species is present (at most MAX_SPECIES of them: the widest ranges when there are more).
"""

import functools
import importlib.util
import math
import re
from pathlib import Path

import numpy as np

# The sheet's cap: past 100 panels the maps are too small to read and the PNG keeps growing.
MAX_SPECIES = 100
# A panel shows at most this many cells a side: a finer grid is drawn in blocks (present when
# any of its cells is), so a panel's cost stays bounded on species-pam's largest grid (300,000
# cells) and a panel about 2 inches wide loses nothing it could show.
PANEL_CELLS = 200
PANELS_PER_ROW = 10
PANEL_INCHES = 1.9
# The sheet's margins in inches: title, coordinate system and legend above; tick labels and the
# axis label below and on the left; room for each panel's title between rows.
TOP, BOTTOM, LEFT, RIGHT, ROW_GAP, COLUMN_GAP = 1.0, 0.65, 1.0, 0.2, 0.3, 0.12
# Panel colours: where the species is present a dark viridis blue (dark in greyscale too), the
# PAM's other sites light grey, cells without a site white (as the richness map draws them).
PRESENT_AT = 0.25
NO_SITE = "#ffffff"
TITLE_CHARACTERS = 26


@functools.cache
def _drawing():
    """drawing.py beside this file (a worker runs scripts with `python -I`: their folder is not
    on the path)."""
    spec = importlib.util.spec_from_file_location("drawing", Path(__file__).with_name("drawing.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def presences(path):
    """(sites x species booleans, headers) of a PAM: present where the value is above 0."""
    values, headers = _drawing().read_lmm(path)
    present = np.nan_to_num(np.asarray(values, dtype=float)) > 0
    return present.reshape(len(headers.get("0") or []), -1), headers


def richness(args, path):
    """args: pam (.lmm, sites x species), label, title; optionally epsg. The number of species
    present at each site, mapped on the sites' grid."""
    drawing = _drawing()
    present, headers = presences(args["pam"])
    xs, ys = drawing.site_coordinates(headers)
    counts = present.sum(axis=1).astype(float)
    figure, _raster, crs = drawing.map_figure(
        xs, ys, counts, label=args["label"], title=args["title"], epsg=args.get("epsg")
    )
    drawing.save(figure, path)
    note = f"{len(counts):,} sites, {present.shape[1]:,} species."
    if len(counts):
        best = int(np.argmax(counts))
        note += (
            f" Highest: {drawing.number(counts[best])} species at site {headers['0'][best][0]} "
            f"({drawing.number(xs[best])}, {drawing.number(ys[best])})."
        )
    return f"{note} {crs}"


def shown_species(present, names, limit):
    """The columns the sheet shows, in name order: all of them, or the `limit` present at the
    most sites (ties by name)."""
    sizes = present.sum(axis=0)
    widest = sorted(range(len(names)), key=lambda i: (-int(sizes[i]), str(names[i]), i))
    return sorted(widest[:limit], key=lambda i: (str(names[i]), i))


def panel_title(name):
    """A species name as a panel title: one line, cut to fit."""
    text = re.sub(r"\s+", " ", str(name)).strip()
    if len(text) > TITLE_CHARACTERS:
        text = text[: TITLE_CHARACTERS - 1] + "\u2026"
    return text


class Blocks:
    """The sites' grid in blocks of `size` x `size` cells, at most PANEL_CELLS a side."""

    def __init__(self, grid):
        self.size = max(1, math.ceil(max(grid.rows, grid.columns) / PANEL_CELLS))
        self.rows = math.ceil(grid.rows / self.size)
        self.columns = math.ceil(grid.columns / self.size)
        self.row = grid.row // self.size
        self.column = grid.column // self.size
        left = grid.min_x - grid.dx / 2
        top = grid.max_y + grid.dy / 2
        # imshow's (left, right, bottom, top): whole blocks, so a partial last one is stretched
        # no more than the cells it holds.
        self.extent = (
            left,
            left + self.columns * self.size * grid.dx,
            top - self.rows * self.size * grid.dy,
            top,
        )

    def cells(self, where):
        """rows x columns: True in each block holding one of the sites `where` is True for."""
        hit = np.zeros((self.rows, self.columns), dtype=bool)
        hit[self.row[where], self.column[where]] = True
        return hit


def presence_sheet(args, path):
    """args: pam (.lmm, sites x species), title; optionally epsg, limit (MAX_SPECIES). One small
    map per species: its sites where present, the PAM's other sites in grey."""
    drawing = _drawing()
    plt = drawing.plt
    colors = drawing.matplotlib.colors
    present, headers = presences(args["pam"])
    names = list(headers.get("1") or [])
    xs, ys = drawing.site_coordinates(headers)
    limit = int(args.get("limit", MAX_SPECIES))
    shown = shown_species(present, names, limit)
    xlabel, ylabel, crs = drawing.coordinate_system(xs, ys, args.get("epsg"))
    figure, panels, blocks = sheet_layout(xs, ys, len(shown))
    _rows, columns = panel_grid(len(shown))
    palette = np.array(
        [
            colors.to_rgb(NO_SITE),
            colors.to_rgb(drawing.NO_DATA),
            plt.get_cmap(drawing.SEQUENTIAL)(PRESENT_AT)[:3],
        ]
    )
    sites = blocks.cells(np.ones(len(xs), dtype=bool)) if blocks is not None else None
    ticker = drawing.matplotlib.ticker
    # Whole values (metres of a projection too), not an offset ("1e6") over a panel's title.
    plain = ticker.FuncFormatter(lambda value, _: drawing.number(value))
    for number, species in enumerate(shown):
        panel = panels[number]
        if blocks is not None:
            code = sites.astype(np.uint8) + blocks.cells(present[:, species])
            panel.imshow(
                palette[code], extent=blocks.extent, interpolation="nearest", aspect="auto"
            )
        panel.set_title(panel_title(names[species]), fontsize=8, pad=3, parse_math=False)
        # Ticks on the left column and on the lowest panel of each column only: computing
        # them on 100 panels is most of the sheet's time.
        if number % columns == 0:
            panel.yaxis.set_major_locator(ticker.MaxNLocator(3))
            panel.yaxis.set_major_formatter(plain)
            panel.tick_params(axis="y", labelsize=7)
        else:
            panel.set_yticks([])
        if number + columns >= len(shown):
            panel.xaxis.set_major_locator(ticker.MaxNLocator(3, prune="both"))
            panel.xaxis.set_major_formatter(plain)
            panel.tick_params(axis="x", labelsize=7)
        else:
            panel.set_xticks([])
    for panel in panels[len(shown) :]:
        panel.set_axis_off()
    figure.suptitle(f"{args['title']}\n{crs}", fontsize=11, y=1 - 0.1 / figure.get_figheight())
    figure.supxlabel(xlabel, fontsize=10, y=0.1 / figure.get_figheight())
    figure.supylabel(ylabel, fontsize=10, x=0.1 / figure.get_figwidth())
    patch = drawing.matplotlib.patches.Patch
    figure.legend(
        handles=[
            patch(facecolor=palette[2], edgecolor="black", label="present"),
            patch(facecolor=palette[1], edgecolor="black", label="absent (a site of the PAM)"),
            patch(facecolor=palette[0], edgecolor="black", label="no site"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.6 / figure.get_figheight()),
        ncols=3,
        fontsize=9,
        frameon=False,
    )
    drawing.save(figure, path)
    note = f"{len(shown):,} of {len(names):,} species shown"
    if len(shown) < len(names):
        smallest = int(present[:, shown].sum(axis=0).min()) if shown else 0
        note += (
            f" (the sheet is capped at {limit:,}): the {len(shown):,} present at the most sites "
            f"(each at {smallest:,} or more; ties by name), in name order."
        )
    else:
        note += ", in name order."
    if blocks is not None and blocks.size > 1:
        note += (
            f" Each panel cell is a block of {blocks.size} x {blocks.size} grid cells, "
            "present where the species is present in any of them."
        )
    return f"{note} {crs}"


def panel_grid(count):
    """(rows, columns) of the sheet's panels: near square, at most PANELS_PER_ROW wide."""
    columns = max(1, min(PANELS_PER_ROW, math.ceil(math.sqrt(count))))
    return max(1, math.ceil(count / columns)), columns


def sheet_layout(xs, ys, count):
    """(figure, its panels, the sites' grid in Blocks or None without sites) for `count`
    species: panels at fixed places and sizes, each with the grid's limits. No layout engine:
    constrained layout measured every panel's ticks, half of a 100-panel sheet's time. Saved
    uncropped, so a site's pixel is where the panel's transforms put it."""
    plt = _drawing().plt
    blocks = Blocks(_drawing().Grid(xs, ys)) if len(xs) else None
    ratio = 1.0
    if blocks is not None:
        left, right, bottom, top = blocks.extent
        ratio = min(2.0, max(0.3, (top - bottom) / (right - left)))
    rows, columns = panel_grid(count)
    panel_height = PANEL_INCHES * ratio
    width = LEFT + columns * PANEL_INCHES + (columns - 1) * COLUMN_GAP + RIGHT
    height = TOP + rows * panel_height + (rows - 1) * ROW_GAP + BOTTOM
    figure = plt.figure(figsize=(width, height), dpi=_drawing().DPI)
    panels = []
    for row in range(rows):
        for column in range(columns):
            left = LEFT + column * (PANEL_INCHES + COLUMN_GAP)
            bottom = height - TOP - (row + 1) * panel_height - row * ROW_GAP
            panels.append(
                figure.add_axes(
                    (left / width, bottom / height, PANEL_INCHES / width, panel_height / height)
                )
            )
            if blocks is not None:
                panels[-1].set_xlim(blocks.extent[0], blocks.extent[1])
                panels[-1].set_ylim(blocks.extent[2], blocks.extent[3])
    return figure, panels, blocks
