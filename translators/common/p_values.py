"""Empirical p-values against randomized PAMs: the parameters and the calculate_p_values call."""

from __future__ import annotations

P_VALUE_PARAMS = {
    "p_value_method": {
        "type": "string",
        "enum": ["fdr", "bonferroni", "raw"],
        "default": "fdr",
        "description": (
            "Multiple-testing correction for significance: fdr (Benjamini-Hochberg), "
            "bonferroni, or raw (p <= alpha)."
        ),
    },
    "alpha": {
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1,
        "default": 0.05,
        "description": "Significance level (or false discovery rate for fdr).",
    },
}


def significance_file(params: dict, suffix: str = "") -> str:
    """Where `calculate_p_values -s` writes: a mask, or adjusted p-values with bonferroni."""
    if params["p_value_method"] == "bonferroni":
        # calculate_p_values -m bonferroni -s writes adjusted p-values, not a mask.
        return f"outputs/p_values{suffix}_bonferroni.lmm"
    return f"outputs/significant{suffix}.lmm"


def p_values_command(
    params: dict, significance: str, p_values: str, observed: str, stacks: list[str]
) -> list[str]:
    """calculate_p_values of `observed` against the random `stacks`, with the method and alpha."""
    return [
        "calculate_p_values",
        "-m",
        params["p_value_method"],
        "--alpha",
        repr(float(params["alpha"])),
        "-s",
        significance,
        p_values,
        observed,
        *stacks,
    ]
