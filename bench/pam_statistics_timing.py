"""Timing of pam-stats statistics: lmpy's PamStats against pam_statistics.statistics.

    .venv/bin/python -m bench.pam_statistics_timing [--species 400] [--skip-continental]

Prints, on the B10 grid (84 x 68 sites, ~2 % presences, synthetic.newick tree with squid
annotations): lmpy and ours at --species species (and whether they agree), then ours at the
continental size (7,033 species) in a fresh process, with its peak resident memory. Not a test.
"""

import argparse
import contextlib
import io
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from lmpy.matrix import Matrix
from lmpy.statistics.pam_stats import PamStats
from lmpy.tree import TreeWrapper

from tests import synthetic
from translators.pam_stats.scripts import pam_statistics

COLUMNS, ROWS, DENSITY, CONTINENTAL = 84, 68, 0.022, 7033


def inputs(species: int, folder: Path):
    names = synthetic.continental_pam(
        folder / "pam.lmm", species=species, columns=COLUMNS, rows=ROWS, density=DENSITY, seed=10
    )
    tree = TreeWrapper.get(data=synthetic.newick(names, seed=10).decode(), schema="newick")
    for taxon in tree.taxon_namespace:  # as scripts/annotate_tree.py
        taxon.annotations.add_new("squid", taxon.label)
    return Matrix.load(str(folder / "pam.lmm")), tree


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare(species: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        pam, tree = inputs(species, Path(folder))
    print(f"{species} species x {pam.shape[0]} sites, {np.asarray(pam).mean():.2%} presences")
    start = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = PamStats(pam, tree=tree)
        theirs = (
            stats.calculate_diversity_statistics(),
            stats.calculate_site_statistics(),
            stats.calculate_species_statistics(),
        )
    lmpy_s = time.monotonic() - start
    start = time.monotonic()
    ours = pam_statistics.statistics(pam, tree)
    ours_s = time.monotonic() - start
    worst = 0.0
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.get_headers() == other.get_headers()
        mine, other = np.asarray(mine), np.asarray(other)
        assert np.array_equal(np.isnan(mine), np.isnan(other))
        finite = np.isfinite(other)
        scale = np.maximum(np.abs(other[finite]), 1e-300)
        worst = max(worst, float((np.abs(mine[finite] - other[finite]) / scale).max(initial=0)))
    print(
        f"  lmpy PamStats: {lmpy_s:.1f} s; pam_statistics: {ours_s:.2f} s; "
        f"largest relative difference {worst:.1e}"
    )


def continental() -> None:
    with tempfile.TemporaryDirectory() as folder:
        pam, tree = inputs(CONTINENTAL, Path(folder))
    print(
        f"{CONTINENTAL} species x {pam.shape[0]} sites, {np.asarray(pam).mean():.2%} presences "
        f"(inputs loaded: peak {peak_mb():.0f} MB)"
    )
    start = time.monotonic()
    prepared = pam_statistics.prepare_tree(tree)
    prepare_s = time.monotonic() - start
    start = time.monotonic()
    pam_statistics.statistics(pam, prepared)
    stats_s = time.monotonic() - start
    print(
        f"  prepare_tree (distance matrix, once per tree): {prepare_s:.1f} s; per PAM: "
        f"{stats_s:.1f} s; together {prepare_s + stats_s:.1f} s; process peak {peak_mb():.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--species", type=int, default=400)
    parser.add_argument("--skip-continental", action="store_true")
    parser.add_argument("--continental-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.continental_only:
        continental()
        return
    compare(args.species)
    if not args.skip_continental:
        subprocess.run(
            [sys.executable, "-m", "bench.pam_statistics_timing", "--continental-only"], check=True
        )


if __name__ == "__main__":
    main()
