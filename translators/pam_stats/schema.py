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
        "seed": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": 2**32 - 1,
            "description": (
                "Makes the randomizations reproducible: randomized PAM number n (1 to "
                "`randomizations`) is drawn right after numpy.random.seed([seed, n]) (numpy's "
                "legacy generator, which lmpy's grady_randomize uses), so the same PAM, tree "
                "and seed give identical p-values however the work is split into rules. "
                "With null (the default) each rule's generator is seeded by the operating system."
            ),
            "default": None,
        },
        **P_VALUE_PARAMS,
    },
    "additionalProperties": False,
}
