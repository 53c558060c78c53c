"""A pam-stats chunk in one process: randomized PAMs, their statistics and their p-value counts.

Usage: chunk_stats.py [--tree_filename TREE] [--seed SEED] FIRST COUNT PAM SITE_TESTED
                      SPECIES_TESTED DIVERSITY_OUT SITE_STATS_OUT SPECIES_STATS_OUT
                      [RANDOM_DIVERSITY_CSV]
       chunk_stats.py --observed [--tree_filename TREE] PAM DIVERSITY_OUT SITE_STATS_OUT
                      SPECIES_STATS_OUT

With lmpy's own library calls, as its tools would run them one after another:
- observed: calculate_pam_stats of PAM (with TREE), then wrangle_matrix with SITE_TESTED and
  SPECIES_TESTED (wrangler configurations keeping the tested statistics);
- randomized PAMs number FIRST to FIRST + COUNT - 1: randomize_pam (grady_randomize of a copy of
  PAM), then the same statistics and subsets;
- calculate_p_values' running count (PermutationTests.add_permutation): for each statistic, how
  many randomized values are greater than the observed one.
Each *_OUT gets that count matrix, with the observed matrix's headers; p_values.py adds up the
chunks. RANDOM_DIVERSITY_CSV, when given, gets every randomized PAM's diversity statistics (its
number, then one column per statistic): the null distributions the report draws.

With --seed, PAM number N is drawn right after numpy.random.seed([SEED, N]) (the legacy generator
lmpy's randomization uses): the same seed gives the same randomized PAMs however the numbers are
split into chunks. Without it, numpy seeds itself from the operating system.

The statistics are PamStats' own values, computed by pam_statistics.py (shipped beside this
script): lmpy's loops over species pairs take hours on a continental PAM (B10), the vectorized
ones seconds, and tests hold the two equal. With --observed, the three observed matrices are
written whole, as calculate_pam_stats writes them.
"""

import csv
import functools
import importlib.util
import json
import sys
import types
from copy import deepcopy
from pathlib import Path

# `import lmpy` imports every lmpy command-line tool, and matplotlib's pyplot through them: 0.65 s
# of a chunk's 1 s start, paid by each of a 10,000-randomization job's 59 chunks (B9). A chunk
# runs none of the tools: run as a rule, an empty package stands in for lmpy.tools, so importing
# lmpy skips the tools' __init__ (a tool module can still be imported from it by name).
if __name__ == "__main__":
    _lmpy = importlib.util.find_spec("lmpy")
    _tools = types.ModuleType("lmpy.tools")
    _tools.__path__ = [str(Path(_lmpy.submodule_search_locations[0]) / "tools")]
    sys.modules.setdefault("lmpy.tools", _tools)

import numpy as np
from lmpy.data_wrangling.factory import WranglerFactory
from lmpy.matrix import Matrix
from lmpy.randomize.grady import grady_randomize
from lmpy.statistics.significance import PermutationTests
from lmpy.tree import TreeWrapper


def wrangle_matrix(matrix, wranglers):
    """lmpy.tools.wrangle_matrix.wrangle_matrix, the same loop (lmpy's tools are not imported
    here: see above)."""
    for wrangler in wranglers:
        matrix = wrangler.wrangle_matrix(matrix)
    return matrix, None


def load_wranglers(config):
    with open(config) as handle:
        return WranglerFactory(logger=None).get_wranglers(json.load(handle))


@functools.cache
def pam_statistics():
    """The module pam_statistics.py beside this file (a worker runs scripts with `python -I`:
    their folder is not on the path)."""
    spec = importlib.util.spec_from_file_location(
        "pam_statistics", Path(__file__).with_name("pam_statistics.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepared(tree):
    """The tree ready for every PAM of the chunk (its distance matrix computed once)."""
    return None if tree is None else pam_statistics().prepare_tree(tree)


def statistics(pam, tree, site_wranglers, species_wranglers):
    """Diversity, tested site and tested species statistics of one PAM (`tree`: prepared)."""
    diversity, site_stats, species_stats = pam_statistics().statistics(pam, tree)
    site_stats, _ = wrangle_matrix(site_stats, site_wranglers)
    species_stats, _ = wrangle_matrix(species_stats, species_wranglers)
    return diversity, site_stats, species_stats


def randomized(pam, number, seed=None):
    """Randomized PAM `number`, as randomize_pam makes it (seeded by [seed, number] if given)."""
    if seed is not None:
        np.random.seed([seed, number])
    return grady_randomize(deepcopy(pam))


def counts(pam, tree, site_wranglers, species_wranglers, numbers, seed=None, diversity=None):
    """For the observed diversity, site and species statistics of `pam`: how many of the
    randomized PAMs `numbers` exceed each value, as calculate_p_values counts them. Each
    randomized PAM's (number, diversity values) is appended to the list `diversity` if given."""
    tree = prepared(tree)
    observed = statistics(pam, tree, site_wranglers, species_wranglers)
    tests = [PermutationTests(matrix) for matrix in observed]
    for number in numbers:
        random = statistics(randomized(pam, number, seed), tree, site_wranglers, species_wranglers)
        if diversity is not None:
            diversity.append((number, np.asarray(random[0], dtype=float).ravel()))
        for test, matrix in zip(tests, random, strict=True):
            test.add_permutation(matrix)
    return [
        Matrix(np.asarray(test.f_counts), headers=deepcopy(matrix.get_headers()))
        for test, matrix in zip(tests, observed, strict=True)
    ]


def observed(pam_file, tree_file, outputs):
    """calculate_pam_stats' three matrices of the PAM, whole."""
    tree = TreeWrapper.from_filename(tree_file) if tree_file else None
    matrices = pam_statistics().statistics(Matrix.load(pam_file), prepared(tree))
    for matrix, out in zip(matrices, outputs, strict=True):
        matrix.write(out)


def main(args):
    tree_file = seed = None
    whole = args[:1] == ["--observed"]
    args = args[1:] if whole else args
    while args[:1] in (["--tree_filename"], ["--seed"]):
        if args[0] == "--seed":
            seed = int(args[1])
        else:
            tree_file = args[1]
        args = args[2:]
    if whole:
        if len(args) != 4:
            sys.exit(__doc__)
        observed(args[0], tree_file, args[1:])
        return
    if len(args) not in (8, 9):
        sys.exit(__doc__)
    first, count, pam_file, site_tested, species_tested, *outputs = args[:8]
    diversity = [] if len(args) == 9 else None
    first, count = int(first), int(count)
    tree = TreeWrapper.from_filename(tree_file) if tree_file else None
    matrices = counts(
        Matrix.load(pam_file),
        tree,
        load_wranglers(site_tested),
        load_wranglers(species_tested),
        range(first, first + count),
        seed,
        diversity,
    )
    for matrix, out in zip(matrices, outputs, strict=True):
        matrix.write(out)
    if diversity is not None:
        names = matrices[0].get_headers().get("1") or matrices[0].get_headers().get("0")
        with open(args[8], "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["randomization", *names])
            for number, values in diversity:
                writer.writerow([number, *(repr(float(v)) for v in values)])


if __name__ == "__main__":
    main(sys.argv[1:])
