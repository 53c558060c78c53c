"""species-pam's request parameters (JSON Schema); the grid's own schema is shared."""

from __future__ import annotations

from translators.base import SCHEMA_DIALECT
from translators.common.grid import grid_schema

# Sites of the grid; the global 0.5-degree grid (259,200) fits.
MAX_CELLS = 300_000

PARAMS_SCHEMA = {
    "$schema": SCHEMA_DIALECT,
    "type": "object",
    "properties": {
        "species_column": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "default": "species_name",
            "description": "CSV column holding the species name of each record.",
        },
        "x_column": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "default": "x",
            "description": "CSV column holding the x coordinate (longitude in EPSG:4326).",
        },
        "y_column": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "default": "y",
            "description": "CSV column holding the y coordinate (latitude in EPSG:4326).",
        },
        "grid": grid_schema(
            "The PAM's sites: square cells of `cell_size` from (min_x, min_y) to "
            "(max_x, max_y), in the projection `epsg` of the occurrences and the "
            "ecoregions raster. min_x < max_x and min_y < max_y (checked with the "
            f"request), at most {MAX_CELLS:,} cells; in EPSG:4326, x within -180..180 "
            "and y within -90..90. A last partial row or column is kept whole."
        ),
        "min_points": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100000,
            "default": 3,
            "description": (
                "Species with fewer distinct localities (inside the ecoregions raster) "
                "are left out; one or two points still make a model (a buffered point or "
                "line)."
            ),
        },
        "min_coverage": {
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "default": 25,
            "description": (
                "Percentage of a grid cell's model pixels that must be present for the "
                "species to count as present in the cell; 0 means any one pixel."
            ),
        },
    },
    "required": ["grid"],
    "additionalProperties": False,
}
