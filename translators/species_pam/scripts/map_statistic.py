"""Map one site statistic as a PNG with a colour scale: the mean over the sites in each cell.

Stands in for lmpy's create_stat_heatmap, which divides with `where=` but no `out=`: cells
holding no site (all of them once empty sites are purged) get whatever memory held, which also
wrecks the colour scale. Arguments: PNG, matrix, statistic, title, min_x min_y max_x max_y size.
"""

import io
import json
import math
import sys
import zipfile

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np


def cell_means(sites, values, min_x, min_y, max_x, max_y, size):
    """Rows x columns of the mean value of the sites (id, x, y) in each cell; NaN where none."""
    # Cells as build_grid makes them: a last partial row or column is a whole cell.
    rows = max(1, math.ceil((max_y - min_y) / size - 1e-9))
    columns = max(1, math.ceil((max_x - min_x) / size - 1e-9))
    total, hits = np.zeros((rows, columns)), np.zeros((rows, columns))
    for (_, x, y), value in zip(sites, values, strict=True):
        row = min(rows - 1, max(0, int((max_y - y) // size)))
        column = min(columns - 1, max(0, int((x - min_x) // size)))
        total[row, column] += value
        hits[row, column] += 1
    return np.divide(total, hits, out=np.full_like(total, np.nan), where=hits > 0)


def main(plot_path, matrix_path, statistic, title, *bounds):
    min_x, min_y, max_x, max_y, size = (float(v) for v in bounds[:5])
    with zipfile.ZipFile(matrix_path) as archive:
        headers = json.loads(archive.read("headers.json"))["headers"]
        arrays = np.load(io.BytesIO(archive.read("data.npz")), allow_pickle=False)
        data = arrays[arrays.files[0]]
    values = data[:, headers["1"].index(statistic)]
    mean = cell_means(headers["0"], values, min_x, min_y, max_x, max_y, size)
    rows, columns = mean.shape
    figure, axes = plt.subplots(figsize=(8, 8 * max(0.3, min(2.0, rows / columns))))
    extent = (min_x, min_x + columns * size, max_y - rows * size, max_y)
    image = axes.imshow(
        np.ma.masked_invalid(mean), extent=extent, cmap="Reds", interpolation="nearest"
    )
    figure.colorbar(image, ax=axes, label=statistic, shrink=0.8)
    axes.set_title(title)
    axes.set_xlabel("x")
    axes.set_ylabel("y")
    figure.savefig(plot_path, dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main(*sys.argv[1:10])
