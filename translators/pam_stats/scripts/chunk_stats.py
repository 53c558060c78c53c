"""A pam-stats chunk in one process: what lmpy's tools do, without a start-up per PAM.

Usage: chunk_stats.py [--tree_filename TREE] SITE_TESTED SPECIES_TESTED
                      DIVERSITY_OUT SITE_STATS_OUT SPECIES_STATS_OUT PAM...

For each PAM, as calculate_pam_stats: load the PAM and the tree, compute the diversity, site and
species statistics. Then, as aggregate_matrices concatenate: stack the diversity matrices on axis
1 and the others on axis 2; and as wrangle_matrix: keep the tested statistics of the last two
(SITE_TESTED and SPECIES_TESTED are wrangler configurations).
"""

import json
import sys

from lmpy.data_wrangling.factory import WranglerFactory
from lmpy.matrix import Matrix
from lmpy.statistics.pam_stats import PamStats
from lmpy.tools.wrangle_matrix import wrangle_matrix
from lmpy.tree import TreeWrapper


def stacks(pams, tree_file=None):
    """Diversity, site and species statistics of each PAM, as calculate_pam_stats computes them."""
    diversity, site_stats, species_stats = [], [], []
    for pam in pams:
        tree = TreeWrapper.from_filename(tree_file) if tree_file else None
        stats = PamStats(Matrix.load(pam), tree=tree)
        diversity.append(stats.calculate_diversity_statistics())
        site_stats.append(stats.calculate_site_statistics())
        species_stats.append(stats.calculate_species_statistics())
    return diversity, site_stats, species_stats


def main(args):
    tree_file = None
    if args[:1] == ["--tree_filename"]:
        tree_file, args = args[1], args[2:]
    if len(args) < 6:
        sys.exit(__doc__)
    site_tested, species_tested, diversity_out, site_out, species_out, *pams = args
    diversity, site_stats, species_stats = stacks(pams, tree_file)
    Matrix.concatenate(diversity, axis=1).write(diversity_out)
    for matrices, config, out in (
        (site_stats, site_tested, site_out),
        (species_stats, species_tested, species_out),
    ):
        with open(config) as handle:
            wranglers = WranglerFactory(logger=None).get_wranglers(json.load(handle))
        wrangled, _ = wrangle_matrix(Matrix.concatenate(matrices, axis=2), wranglers)
        wrangled.write(out)


if __name__ == "__main__":
    main(sys.argv[1:])
