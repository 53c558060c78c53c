"""The one grid of square cells that build_grid makes: its schema, its checks, its arguments."""

from __future__ import annotations

import math

from translators.common.args import number_arg

GRID_KEYS = ("min_x", "min_y", "max_x", "max_y", "cell_size", "epsg")
COORDINATE_LIMIT = 100_000_000

EDGES = {
    "min_x": "Western edge (smallest x), in the units of `epsg`.",
    "min_y": "Southern edge (smallest y), in the units of `epsg`.",
    "max_x": "Eastern edge (largest x); must be greater than min_x.",
    "max_y": "Northern edge (largest y); must be greater than min_y.",
}


def grid_schema(description: str) -> dict:
    """The JSON Schema of a `grid` parameter; what it cannot say, grid_errors checks."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            **{
                field: {
                    "type": "number",
                    "minimum": -COORDINATE_LIMIT,
                    "maximum": COORDINATE_LIMIT,
                    "description": text,
                }
                for field, text in EDGES.items()
            },
            "cell_size": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": COORDINATE_LIMIT,
                "description": "Side of a cell, in the units of `epsg` (degrees for 4326).",
            },
            "epsg": {
                "type": "integer",
                "minimum": 1024,
                "maximum": 999999,
                "description": "EPSG code of the grid; the rasters read on it must use the same.",
            },
        },
        "required": list(GRID_KEYS),
        "additionalProperties": False,
    }


def grid_cells(grid: dict) -> tuple[int, int]:
    """Columns and rows build_grid makes (np.arange: a last partial cell is kept)."""
    size = grid["cell_size"]
    columns = math.ceil((grid["max_x"] - grid["min_x"]) / size - 1e-9)
    rows = math.ceil((grid["max_y"] - grid["min_y"]) / size - 1e-9)
    return max(columns, 1), max(rows, 1)


def grid_errors(grid: dict, max_cells: int) -> list[str]:
    """What the JSON Schema cannot say: edges in order, a bounded cell count, degrees in range."""
    errors = []
    for low, high in (("min_x", "max_x"), ("min_y", "max_y")):
        if grid[low] >= grid[high]:
            errors.append(
                f"params/grid: {low} ({grid[low]}) must be less than {high} ({grid[high]})"
            )
    if grid["epsg"] == 4326:
        for field, limit in (("min_x", 180), ("max_x", 180), ("min_y", 90), ("max_y", 90)):
            if abs(grid[field]) > limit:
                errors.append(
                    f"params/grid: {field} ({grid[field]}) is outside -{limit}..{limit} degrees"
                    " (EPSG:4326)"
                )
    spans = [(grid["max_x"] - grid["min_x"]), (grid["max_y"] - grid["min_y"])]
    spans = [span / grid["cell_size"] for span in spans]
    if not errors and not all(math.isfinite(span) and span <= max_cells for span in spans):
        # A tiny cell_size (1e-300) makes the cell count infinite: no integer can hold it.
        errors.append(
            f"params/grid/cell_size: {grid['cell_size']} makes more than {max_cells} cells"
            " (use a larger cell_size or a smaller extent)"
        )
    if not errors:
        columns, rows = grid_cells(grid)
        if columns * rows > max_cells:
            errors.append(
                f"params/grid: {columns} x {rows} = {columns * rows} cells; at most {max_cells}"
                " (use a larger cell_size or a smaller extent)"
            )
    return errors


def grid_args(grid: dict) -> list[str]:
    """build_grid's positional arguments after the shapefile: edges, cell size, EPSG code."""
    return [number_arg(grid[key]) for key in GRID_KEYS]
