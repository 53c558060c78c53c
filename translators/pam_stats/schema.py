"""pam-stats' request parameters (JSON Schema); the p-value parameters are shared with mcpa."""

from __future__ import annotations

from translators.base import SCHEMA_DIALECT
from translators.common.p_values import P_VALUE_PARAMS

PARAMS_SCHEMA = {
    "$schema": SCHEMA_DIALECT,
    "type": "object",
    "properties": {
        "randomizations": {
            "type": "integer",
            "minimum": 0,
            "maximum": 10000,
            "default": 100,
            "description": "Number of randomized PAMs for the null model; 0 skips testing.",
        },
        **P_VALUE_PARAMS,
    },
    "additionalProperties": False,
}
