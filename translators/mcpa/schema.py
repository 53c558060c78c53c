"""mcpa's request parameters (JSON Schema); the grid and p-value parameters are shared."""

from __future__ import annotations

from translators.base import SCHEMA_DIALECT
from translators.common.grid import grid_schema
from translators.common.p_values import P_VALUE_PARAMS

# Encoding walks every grid cell of every layer in Python (~0.1 ms a cell) and rasterizes each
# hypothesis at a tenth of the cell size (~1 GB at this bound, hence the encode category).
MAX_GRID_CELLS = 500_000

PARAMS_SCHEMA = {
    "$schema": SCHEMA_DIALECT,
    "type": "object",
    "properties": {
        "grid": grid_schema(
            "The grid the PAM was built on, as lmpy's build_grid takes it, or any part of it "
            "covering the PAM's occupied sites: each must be the centre of a cell. Rasters and "
            "shapefiles are read in these coordinates (not reprojected)."
        ),
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
