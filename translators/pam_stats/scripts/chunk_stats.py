"""A pam-stats chunk in one process: randomized PAMs, their statistics and their p-value counts.

Usage: chunk_stats.py [--tree_filename TREE] [--seed SEED] FIRST COUNT PAM SITE_TESTED
                      SPECIES_TESTED DIVERSITY_OUT SITE_STATS_OUT SPECIES_STATS_OUT

With lmpy's own library calls, as its tools would run them one after another:
- observed: calculate_pam_stats of PAM (with TREE), then wrangle_matrix with SITE_TESTED and
  SPECIES_TESTED (wrangler configurations keeping the tested statistics);
- randomized PAMs number FIRST to FIRST + COUNT - 1: randomize_pam (grady_randomize of a copy of
  PAM), then the same statistics and subsets;
- calculate_p_values' running count (PermutationTests.add_permutation): for each statistic, how
  many randomized values are greater than the observed one.
Each *_OUT gets that count matrix, with the observed matrix's headers; p_values.py adds up the
chunks.

With --seed, PAM number N is drawn right after numpy.random.seed([SEED, N]) (the legacy generator
lmpy's randomization uses): the same seed gives the same randomized PAMs however the numbers are
split into chunks. Without it, numpy seeds itself from the operating system.
"""

import contextlib
import io
import json
import sys
from copy import deepcopy

import numpy as np
from lmpy.data_wrangling.factory import WranglerFactory
from lmpy.matrix import Matrix
from lmpy.randomize.grady import grady_randomize
from lmpy.statistics.pam_stats import PamStats
from lmpy.statistics.significance import PermutationTests
from lmpy.tools.wrangle_matrix import wrangle_matrix
from lmpy.tree import TreeWrapper


def load_wranglers(config):
    with open(config) as handle:
        return WranglerFactory(logger=None).get_wranglers(json.load(handle))


def statistics(pam, tree, site_wranglers, species_wranglers):
    """Diversity, tested site and tested species statistics of one PAM."""
    # PamStats prints progress lines for every PAM: thousands of lines of noise in a rule's log.
    with contextlib.redirect_stdout(io.StringIO()):
        stats = PamStats(pam, tree=tree)
        diversity = stats.calculate_diversity_statistics()
        site_stats = stats.calculate_site_statistics()
        species_stats = stats.calculate_species_statistics()
    site_stats, _ = wrangle_matrix(site_stats, site_wranglers)
    species_stats, _ = wrangle_matrix(species_stats, species_wranglers)
    return diversity, site_stats, species_stats


def randomized(pam, number, seed=None):
    """Randomized PAM `number`, as randomize_pam makes it (seeded by [seed, number] if given)."""
    if seed is not None:
        np.random.seed([seed, number])
    return grady_randomize(deepcopy(pam))


def counts(pam, tree, site_wranglers, species_wranglers, numbers, seed=None):
    """For the observed diversity, site and species statistics of `pam`: how many of the
    randomized PAMs `numbers` exceed each value, as calculate_p_values counts them."""
    observed = statistics(pam, tree, site_wranglers, species_wranglers)
    tests = [PermutationTests(matrix) for matrix in observed]
    for number in numbers:
        random = statistics(randomized(pam, number, seed), tree, site_wranglers, species_wranglers)
        for test, matrix in zip(tests, random, strict=True):
            test.add_permutation(matrix)
    return [
        Matrix(np.asarray(test.f_counts), headers=deepcopy(matrix.get_headers()))
        for test, matrix in zip(tests, observed, strict=True)
    ]


def main(args):
    tree_file = seed = None
    while args[:1] in (["--tree_filename"], ["--seed"]):
        if args[0] == "--seed":
            seed = int(args[1])
        else:
            tree_file = args[1]
        args = args[2:]
    if len(args) != 8:
        sys.exit(__doc__)
    first, count, pam_file, site_tested, species_tested, *outputs = args
    first, count = int(first), int(count)
    tree = TreeWrapper.from_filename(tree_file) if tree_file else None
    matrices = counts(
        Matrix.load(pam_file),
        tree,
        load_wranglers(site_tested),
        load_wranglers(species_tested),
        range(first, first + count),
        seed,
    )
    for matrix, out in zip(matrices, outputs, strict=True):
        matrix.write(out)


if __name__ == "__main__":
    main(sys.argv[1:])
