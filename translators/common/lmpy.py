"""Conventions of the lmpy tools that several workflows call."""

from __future__ import annotations

# Run with the interpreter found beside the lmpy tools on the worker's PATH.
PYTHON = "python3"
# Tree file extensions -> the schema name lmpy's tree tools take.
TREE_SCHEMAS = {"nex": "nexus", "tre": "newick"}


def csv_names(*lmm_paths: str) -> list[str]:
    """The CSV beside each lmpy matrix (.lmm)."""
    return [p.removesuffix(".lmm") + ".csv" for p in lmm_paths]


def csv_commands(*lmm_paths: str) -> list[list[str]]:
    """convert_lmm_to_csv of each matrix to the CSV beside it (two-dimensional matrices only)."""
    return [
        ["convert_lmm_to_csv", lmm, csv]
        for lmm, csv in zip(lmm_paths, csv_names(*lmm_paths), strict=True)
    ]
