"""What every figure shares: matplotlib set up for a sandbox, lmpy matrices read without lmpy,
site coordinates on their grid, the coordinate system's label, colour maps and saving."""

import io
import json
import math
import os
import tempfile
import zipfile

# matplotlib writes a font cache under MPLCONFIGDIR; a rule's home may not be writable.
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

# Sequential scales that read in greyscale and for colour-blind readers.
SEQUENTIAL = "viridis"
SECOND = "cividis"
NO_DATA = (
    "#d9d9d9"  # cells outside the map (or masked): a light grey, brighter than viridis' low end
)
DPI = 100
# Above this many grid cells a map is drawn as points, not as an image of the grid.
MAX_CELLS = 4_000_000


def read_lmm(path):
    """(values, headers) of an lmpy matrix file (.lmm: a zip of headers.json and data.npz)."""
    with zipfile.ZipFile(path) as archive:
        headers = json.loads(archive.read("headers.json"))["headers"]
        arrays = np.load(io.BytesIO(archive.read("data.npz")), allow_pickle=False)
        values = arrays[arrays.files[0]]
    return values, headers


def column(values, headers, name):
    """Column `name` (axis 1) of a matrix as floats."""
    names = headers.get("1", [])
    if name not in names:
        raise KeyError(f"no column {name!r} (columns: {names})")
    return np.asarray(values[:, names.index(name)], dtype=float)


def site_coordinates(headers):
    """x and y of each row of a site matrix: its row headers are [site id, x, y]."""
    rows = headers.get("0") or []
    xy = np.array([[float(row[1]), float(row[2])] for row in rows], dtype=float)
    return (xy[:, 0], xy[:, 1]) if len(xy) else (np.array([]), np.array([]))


def _step(values):
    """The grid's spacing along one axis: the smallest gap between distinct coordinates."""
    unique = np.unique(np.round(values, 9))
    gaps = np.diff(unique)
    gaps = gaps[gaps > 1e-9]
    return float(gaps.min()) if len(gaps) else 1.0


class Grid:
    """The regular grid the sites lie on (PAM sites are cell centres): cell size, extent, and
    each site's row and column."""

    def __init__(self, xs, ys):
        self.dx, self.dy = _step(xs), _step(ys)
        self.min_x, self.max_x = float(xs.min()), float(xs.max())
        self.min_y, self.max_y = float(ys.min()), float(ys.max())
        self.columns = round((self.max_x - self.min_x) / self.dx) + 1
        self.rows = round((self.max_y - self.min_y) / self.dy) + 1
        self.column = np.rint((xs - self.min_x) / self.dx).astype(int)
        self.row = np.rint((self.max_y - ys) / self.dy).astype(int)

    @property
    def cells(self):
        return self.rows * self.columns

    @property
    def extent(self):
        """imshow's (left, right, bottom, top): cell edges, half a cell beyond the centres."""
        return (
            self.min_x - self.dx / 2,
            self.max_x + self.dx / 2,
            self.min_y - self.dy / 2,
            self.max_y + self.dy / 2,
        )

    def raster(self, values):
        """rows x columns: the mean of the sites' values in each cell, NaN where no site."""
        total = np.zeros((self.rows, self.columns))
        hits = np.zeros((self.rows, self.columns))
        finite = np.isfinite(values)
        np.add.at(total, (self.row[finite], self.column[finite]), values[finite])
        np.add.at(hits, (self.row[finite], self.column[finite]), 1)
        return np.divide(total, hits, out=np.full_like(total, np.nan), where=hits > 0)


def coordinate_system(xs, ys, epsg=None):
    """(x label, y label, a line naming the coordinate system) for sites at xs, ys."""
    if epsg == 4326 or (
        epsg is None
        and len(xs)
        and np.nanmin(xs) >= -180
        and np.nanmax(xs) <= 360
        and np.nanmin(ys) >= -90
        and np.nanmax(ys) <= 90
    ):
        told = "" if epsg else " (the coordinates are within longitude and latitude bounds)"
        return (
            "longitude (degrees east)",
            "latitude (degrees north)",
            f"Coordinate system: WGS 84, EPSG:4326{told}.",
        )
    if epsg:
        return "x (map units)", "y (map units)", f"Coordinate system: EPSG:{epsg}."
    return (
        "x (the PAM's units)",
        "y (the PAM's units)",
        "Coordinate system: not recorded in the matrix; axes in its own units.",
    )


def map_figure(xs, ys, values, *, label, title, epsg=None, cmap=SEQUENTIAL, mask=None):
    """A map of one value per site: the grid's cells coloured by value (sites outside `mask`,
    when given, in grey). Returns (figure, raster or None, a line naming the coordinate system)."""
    xlabel, ylabel, crs = coordinate_system(xs, ys, epsg)
    shown = np.array(values, dtype=float)
    if mask is not None:
        shown[~mask] = np.nan
    # The figure takes the map's shape (a band of longitudes is wide and low); a wide map gets
    # its colour scale underneath, a tall one beside it.
    width = 8.0
    spread_x = float(np.ptp(xs)) if len(xs) else 1.0
    spread_y = float(np.ptp(ys)) if len(ys) else 1.0
    shape = (spread_y + 1e-9) / (spread_x + 1e-9) if spread_x > 0 else 1.0
    wide = shape < 0.6
    # Whole pixels: the saved file is exactly the figure the tests transform points on.
    height = round(min(9.0, max(1.2, width * shape)) + (1.6 if wide else 0.8), 2)
    figure, axes = subplots(figsize=(width, height))
    axes.set_facecolor("white")
    # Cells without a value stay see-through: the grey of their site (or white) shows.
    colormap = plt.get_cmap(cmap).with_extremes(bad=(0, 0, 0, 0))
    raster = None
    finite = shown[np.isfinite(shown)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if high == low:
        high = low + 1.0
    if len(xs) and Grid(xs, ys).cells <= MAX_CELLS:
        grid = Grid(xs, ys)
        raster = grid.raster(shown)
        present = grid.raster(np.ones(len(xs)))
        # Sites without a value (masked, or NaN) in grey; cells without a site left white.
        background = np.where(np.isfinite(present), 1.0, np.nan)
        axes.imshow(
            np.ma.masked_invalid(background),
            extent=grid.extent,
            cmap=matplotlib.colors.ListedColormap([NO_DATA]),
            interpolation="nearest",
            aspect="equal" if grid.columns / max(grid.rows, 1) < 8 else "auto",
        )
        image = axes.imshow(
            np.ma.masked_invalid(raster),
            extent=grid.extent,
            cmap=colormap,
            vmin=low,
            vmax=high,
            interpolation="nearest",
            aspect="equal" if grid.columns / max(grid.rows, 1) < 8 else "auto",
        )
    else:
        axes.scatter(xs, ys, c=NO_DATA, s=4, marker="s", linewidths=0)
        keep = np.isfinite(shown)
        image = axes.scatter(
            xs[keep],
            ys[keep],
            c=shown[keep],
            s=4,
            marker="s",
            cmap=colormap,
            vmin=low,
            vmax=high,
            linewidths=0,
        )
    figure.colorbar(
        image,
        ax=axes,
        label=label,
        shrink=0.8,
        location="bottom" if wide else "right",
        aspect=40 if wide else 20,
    )
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
    axes.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return figure, raster, crs


def subplots(**options):
    """A figure and its axes, laid out when drawn: saved as drawn (no cropping), so a point's
    pixel in the file is where the figure's own transforms put it (tests rely on it)."""
    return plt.subplots(layout="constrained", dpi=DPI, **options)


def save(figure, path):
    """Write `figure` as PNG at `path` and close it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(figure)


def number(value):
    """A value for a caption: integers as integers, others to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"
