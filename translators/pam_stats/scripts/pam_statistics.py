"""PAM statistics exactly as lmpy's PamStats computes them, fast enough for continental PAMs.

    diversity, site_stats, species_stats = statistics(pam, tree)

returns what `PamStats(pam, tree=tree)` returns from calculate_diversity_statistics(),
calculate_site_statistics() and calculate_species_statistics() (lmpy 3.1.21): same headers, shapes,
column order and values, NaN where lmpy gives NaN, quirks included:

- c-score runs over the first `num species` PAM columns (the species with a presence are counted,
  then that many columns are taken from the left); it is computed from site-by-site co-occurrence
  counts (one symmetric product) in exact integer arithmetic.
- The distance matrix follows TreeWrapper.get_distance_matrix step for step (same additions in the
  same order), so a tip's distance to itself can be a rounding residue above 0 and the last tip's
  is 0: MNTD keeps only positive distances, which makes those residues matter.
- MNTD, mean and sum pairwise distance use the distances between the tree tips whose `squid`
  annotation is a present species' column header; a site none of whose species is in the tree
  gets 0 in these columns and in phylogenetic diversity, as in lmpy.
- Phylogenetic diversity is the sum of edge lengths of the tree lmpy extracts for a site
  (extract_tree_with_taxa_labels: unifurcations folded into their child): the edges on the paths
  from the site's tips to the root, the root's own edge included if it has a length. Without one,
  lmpy's sum fails and gives 0 at every site whose tips span two children of the root.
- pearson_correlation takes, at a site with n species, the pairs among the first n tree tips and
  the first n PAM columns, so it depends only on n: it is computed once per distinct n.

The tree may be given as a TreeWrapper or as `prepare_tree(tree)`, which holds the distance matrix
and can be reused across PAMs that share the tree (randomizations). A PAM with values other than 0
and 1, or a tree outside what the fast path reproduces (repeated or missing tip labels, a non-root
edge without a length), is handed to lmpy itself.

Timings: `python -m bench.pam_statistics_timing` (B10's 7,033 x 5,712 PAM and tree: about 2 s to
prepare the tree, 6 s per PAM, 1.1 GB peak with the inputs loaded; lmpy takes about 2 h per PAM).
The distance matrix costs tips^2 x mean tip depth: fine for coalescent-like trees, slow for a
caterpillar of thousands of tips.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from lmpy.matrix import Matrix
from lmpy.statistics import pam_stats as lm
from lmpy.tree import TreeWrapper

DIVERSITY = ["c-score", "lande", "legendre", "num sites", "num species", "whittaker"]
SITE_MATRIX = [
    ("alpha", lm.alpha),
    ("alpha proportional", lm.alpha_proportional),
    ("phi", lm.phi),
    ("phi average proportional", lm.phi_average_proportional),
]
SPECIES_MATRIX = [
    ("omega", lm.omega),
    ("omega_proportional", lm.omega_proportional),
    ("psi", lm.psi),
    ("psi_average_proportional", lm.psi_average_proportional),
]
DISTANCE_STATS = ["MNTD", "Mean Pairwise Distance", "Sum Pairwise Distance"]
BLOCK = 256  # rows per block in the distance matrix, sites per block in phylogenetic diversity


class PreparedTree:
    """What the statistics need from a tree, computed once: reuse it for PAMs sharing the tree."""

    def __init__(self, tree: TreeWrapper):
        self.tree = tree
        taxa = list(tree.taxon_namespace)
        self.labels = [taxon.label for taxon in taxa]
        self.squid_labels = {squid: label for label, squid in tree.get_annotations("squid")}
        nodes = list(tree.preorder_node_iter())
        self.fast = (
            all(isinstance(label, str) for label in self.labels)
            and len(set(self.labels)) == len(self.labels)
            and all(node.edge_length is not None for node in nodes[1:])
        )
        if not self.fast:
            return
        index = {id(node): i for i, node in enumerate(nodes)}
        parent = np.array(
            [-1] + [index[id(node.parent_node)] for node in nodes[1:]], dtype=np.int64
        )
        size = np.ones(len(nodes), dtype=np.int64)
        for i in range(len(nodes) - 1, 0, -1):
            size[parent[i]] += size[i]
        pre = np.arange(len(nodes), dtype=np.int64)
        end = pre + size
        self.distances = _distances(tree, taxa, nodes, index, parent, pre, end)

        # Phylogenetic diversity: each node's range of leaves (leaves in preorder).
        is_leaf = np.array([not node._child_nodes for node in nodes])
        leaf_before = np.concatenate([[0], np.cumsum(is_leaf)])  # leaves preceding node i
        self.leaf_lo = leaf_before[pre]
        self.leaf_hi = leaf_before[end]
        taxon_index = {id(taxon): i for i, taxon in enumerate(taxa)}
        leaves = [node for node in nodes if not node._child_nodes]
        # Each leaf's namespace index, -1 for a leaf without a taxon (extraction always keeps it).
        self.leaf_taxon = np.array(
            [taxon_index[id(leaf.taxon)] if leaf.taxon is not None else -1 for leaf in leaves],
            dtype=np.int64,
        )
        self.lengths = np.array([0.0] + [node.edge_length for node in nodes[1:]])
        self.root_length = nodes[0].edge_length
        self.root_children = [index[id(child)] for child in nodes[0].child_nodes()]


def _distances(tree, taxa, nodes, index, parent, pre, end):
    """TreeWrapper.get_distance_matrix, same operations in the same order, in numpy blocks.

    lmpy sets D[i, j] = D[j, i] (i <= j, namespace order) to: the lengths on i's path to the root
    added one by one from 0, then each length on j's path, tip upward, added if the node is not an
    ancestor of i's node and subtracted if it is (nodes without a length skipped). D[n-1, n-1]
    is never computed and stays 0."""
    count = len(taxa)
    first_node = {}
    for node in tree.postorder_node_iter():
        if node.taxon is not None:
            first_node.setdefault(id(node.taxon), index[id(node)])
    paths = []
    for taxon in taxa:
        path = []
        i = first_node.get(id(taxon), -1)
        while i >= 0:
            if nodes[i].edge_length is not None:
                path.append(i)
            i = parent[i]
        paths.append(path)
    depth = np.array([len(path) for path in paths], dtype=np.int64)
    steps = int(depth.max()) if count else 0
    step_node = np.full((count, max(steps, 1)), -1, dtype=np.int64)
    for t, path in enumerate(paths):
        step_node[t, : len(path)] = path
    lengths = np.array([node.edge_length or 0.0 for node in nodes] + [0.0])
    step_length = lengths[step_node]  # index -1 is the padding 0.0
    lo = np.where(step_node >= 0, pre[step_node], 0)
    hi = np.where(step_node >= 0, end[step_node], 0)
    own = np.array([first_node.get(id(taxon), -1) for taxon in taxa], dtype=np.int64)
    own_pre = np.where(own >= 0, pre[own], -1)
    start = np.cumsum(step_length, axis=1)[:, -1]  # sequential, as lmpy's running sum

    distances = np.zeros((count, count))
    if count < 2:
        return distances
    for first in range(0, count, BLOCK):
        last = min(first + BLOCK, count)
        rows = np.arange(first, last)
        rows = rows[np.argsort(-depth[rows], kind="stable")]
        width = last  # j in this block pairs with i <= j < last
        block = np.repeat(start[None, :width], len(rows), axis=0)
        others = own_pre[None, :width]
        for k in range(int(depth[rows[0]])):
            active = int(np.count_nonzero(depth[rows] > k))
            r = rows[:active]
            inside = (others >= lo[r, k, None]) & (others < hi[r, k, None])
            step = step_length[r, k, None]
            block[:active] += np.where(inside, -step, step)
        for row, j in zip(block, rows, strict=True):
            distances[j, : j + 1] = row[: j + 1]
    for first in range(0, count, BLOCK):  # mirror the lower triangle, block by block
        last = min(first + BLOCK, count)
        square = distances[first:last, first:last]
        upper = np.triu_indices(last - first, 1)
        square[upper] = square.T[upper]
        distances[first:last, last:] = distances[last:, first:last].T
    distances[count - 1, count - 1] = 0.0
    return distances


def prepare_tree(tree: TreeWrapper) -> PreparedTree:
    return PreparedTree(tree)


def _binary(pam) -> bool:
    values = np.asarray(pam)
    return bool(((values == 0) | (values == 1)).all())


def _with_lmpy(pam, tree):
    with contextlib.redirect_stdout(io.StringIO()):
        stats = lm.PamStats(pam, tree=tree)
        return (
            stats.calculate_diversity_statistics(),
            stats.calculate_site_statistics(),
            stats.calculate_species_statistics(),
        )


def c_score(pam) -> float:
    """lmpy's c_score: over the first N columns (N = species with a presence), pairs i <= j,
    sum (omega_i - shared_ij)(omega_j - shared_ij), times 2 / (N (N - 1)); 0/1 PAM only.

    With A the first N columns, C = A'A, alpha = row sums of A: the sum over i < j expands to
    sum omega_i omega_j - sum_i omega_i ((A' alpha)_i - omega_i) + (|AA'|^2 - sum omega^2) / 2,
    all exact integers (the i = j terms are 0)."""
    n = lm.num_species(pam)
    if n == 0:  # lmpy divides 0.0 by 0 here
        raise ZeroDivisionError("c-score of a PAM without presences")
    a = np.asarray(pam)[:, :n]
    omega = a.sum(axis=0, dtype=np.int64)
    alpha = a.sum(axis=1, dtype=np.int64)
    total, squares = int(omega.sum()), int((omega * omega).sum())
    pairs = (total * total - squares) // 2
    shared_omega = 0  # sum_i omega_i ((A' alpha)_i - omega_i), in column blocks
    for start in range(0, n, 1024):
        block = a[:, start : start + 1024].astype(np.int64)
        part = omega[start : start + 1024]
        shared_omega += int((part * (alpha @ block - part)).sum())
    del block
    dense = a.astype(np.float32)
    overlap = np.dot(dense, dense.T)  # site x site co-occurrence, exact below 2**24
    del dense
    frobenius = 0
    for start in range(0, overlap.shape[0], 1024):
        part = overlap[start : start + 1024].astype(np.int64)
        frobenius += int((part * part).sum())
    del overlap
    temp = np.float64(pairs - shared_omega + (frobenius - squares) // 2)
    with np.errstate(all="ignore"):
        return 2 * temp / (n * (n - 1))


def diversity_statistics(pam) -> Matrix:
    values = [
        c_score(pam),
        lm.lande(pam),
        lm.legendre(pam),
        lm.num_sites(pam),
        lm.num_species(pam),
        lm.whittaker(pam),
    ]
    return Matrix(np.array(values), headers={"0": ["value"], "1": list(DIVERSITY)})


def species_statistics(pam) -> Matrix:
    matrix = Matrix(
        np.zeros((pam.shape[1], len(SPECIES_MATRIX))),
        headers={"0": pam.get_column_headers(), "1": [name for name, _ in SPECIES_MATRIX]},
    )
    with np.errstate(all="ignore"):
        for i, (_, func) in enumerate(SPECIES_MATRIX):
            matrix[:, i] = func(pam)
    return matrix


def _site_matrix_statistics(pam) -> Matrix:
    matrix = Matrix(
        np.zeros((pam.shape[0], len(SITE_MATRIX))),
        headers={"0": pam.get_row_headers(), "1": [name for name, _ in SITE_MATRIX]},
    )
    with np.errstate(all="ignore"):
        for i, (_, func) in enumerate(SITE_MATRIX):
            matrix[:, i] = func(pam)
    return matrix


def _pearson(pam, present_count, distances):
    """lmpy's pearson_correlation: at a site with n present species, the pairs i < j < n of the
    first n tips (distance) and first n PAM columns (sites shared); n < 3 gives 0."""
    values = np.asarray(pam)
    result = np.zeros((values.shape[0], 1))
    needed = np.unique(present_count[present_count >= 3])
    if needed.size == 0:
        return result
    top = int(needed[-1])
    if top > distances.shape[0]:
        raise IndexError(f"index {distances.shape[0]} is out of bounds for the distance matrix")
    columns = values[:, :top]
    shared = columns.T.dot(columns)  # each entry is lmpy's pam[:, i].dot(pam[:, j])
    with np.errstate(all="ignore"):
        for n in needed:
            n = int(n)
            upper = np.triu_indices(n, 1)
            x_val = distances[:n, :n][upper]
            y_val = shared[:n, :n][upper]
            num_pairs = n * (n - 1) / 2
            sum_xy = np.sum(x_val * y_val)
            sum_x = np.sum(x_val)
            sum_y = np.sum(y_val)
            sum_x_sq = np.sum(x_val**2)
            sum_y_sq = np.sum(y_val**2)
            p_num = sum_xy - sum_x * sum_y / num_pairs
            p_denom = np.sqrt(
                (sum_x_sq - (sum_x**2 / num_pairs)) * (sum_y_sq - (sum_y**2 / num_pairs))
            )
            result[present_count == n, 0] = p_num / p_denom
    return result


def _present_tips(pam, prepared: PreparedTree):
    """sites x namespace taxa: the tips lmpy takes at each site (label of a present species)."""
    present = np.asarray(pam) == 1
    position = {label: i for i, label in enumerate(prepared.labels)}
    columns, taxa = [], []
    for column, squid in enumerate(pam.get_column_headers()):
        label = prepared.squid_labels.get(squid, "")
        if label:
            columns.append(column)
            taxa.append(position[label])
    tips = np.zeros((present.shape[0], len(prepared.labels)), dtype=bool)
    if columns:
        columns, taxa = np.array(columns), np.array(taxa)
        order = np.argsort(taxa, kind="stable")
        columns, taxa = columns[order], taxa[order]
        firsts = np.concatenate([[True], taxa[1:] != taxa[:-1]])
        tips[:, taxa[firsts]] = present[:, columns[firsts]]
        for column, taxon in zip(columns[~firsts], taxa[~firsts], strict=True):
            tips[:, taxon] |= present[:, column]
    return present.sum(axis=1), tips


def _phylogenetic_diversity(tips, prepared: PreparedTree):
    """Per site: the extracted tree's edge-length sum, and whether extraction kept any leaf."""
    sites = tips.shape[0]
    diversity = np.zeros(sites)
    kept = np.zeros(sites, dtype=bool)
    taxonless = prepared.leaf_taxon < 0
    for start in range(0, sites, BLOCK):
        chunk = tips[start : start + BLOCK]
        leaves = np.where(taxonless[None, :], True, chunk[:, np.maximum(prepared.leaf_taxon, 0)])
        counts = np.zeros((chunk.shape[0], leaves.shape[1] + 1), dtype=np.int32)
        np.cumsum(leaves, axis=1, out=counts[:, 1:])
        covered = (counts[:, prepared.leaf_hi] - counts[:, prepared.leaf_lo]) > 0
        total = covered.astype(np.float64) @ prepared.lengths  # root's entry is 0.0
        if prepared.root_length is not None:
            total = total + prepared.root_length
        else:
            branching = covered[:, prepared.root_children].sum(axis=1) > 1
            total[branching] = 0.0
        diversity[start : start + BLOCK] = total
        kept[start : start + BLOCK] = covered[:, 0]
    return diversity, kept


def _distance_statistics(tips, kept, distances):
    result = np.zeros((tips.shape[0], len(DISTANCE_STATS)))
    with np.errstate(all="ignore"):
        for site in np.flatnonzero(kept & tips.any(axis=1)):
            idx = np.flatnonzero(tips[site])
            sub = distances[np.ix_(idx, idx)]
            count = idx.size
            positive = sub > 0.0
            if positive.any(axis=1).all():
                nearest = np.where(positive, sub, np.inf).min(axis=1).sum()
                mntd = float(nearest / count)
            else:
                mntd = 0.0
            off_diagonal = sub.sum() - sub.trace()
            result[site] = (
                mntd,
                float(off_diagonal / (count * (count - 1))),
                float(off_diagonal / 2.0),
            )
    return result


def site_statistics(pam, prepared: PreparedTree | None) -> Matrix:
    site_stats = _site_matrix_statistics(pam)
    if prepared is None:
        return site_stats
    rows = pam.get_row_headers()
    present_count, tips = _present_tips(pam, prepared)
    pearson = _pearson(pam, present_count, prepared.distances)
    diversity, kept = _phylogenetic_diversity(tips, prepared)
    distance_stats = _distance_statistics(tips, kept, prepared.distances)
    diversity[~(kept & tips.any(axis=1))] = 0.0
    parts = [
        site_stats,
        Matrix(diversity[:, None], headers={"0": rows, "1": ["Phylogenetic Diversity"]}),
        Matrix(distance_stats, headers={"0": rows, "1": list(DISTANCE_STATS)}),
        Matrix(pearson, headers={"0": rows, "1": ["pearson_correlation"]}),
    ]
    return Matrix.concatenate(parts, axis=1)


def statistics(pam: Matrix, tree: TreeWrapper | PreparedTree | None = None):
    """(diversity, site_stats, species_stats) as lmpy's PamStats(pam, tree=tree) computes them."""
    prepared = tree
    if tree is not None and not isinstance(tree, PreparedTree):
        prepared = PreparedTree(tree)
    if not _binary(pam) or (prepared is not None and not prepared.fast):
        return _with_lmpy(pam, prepared.tree if prepared is not None else None)
    return diversity_statistics(pam), site_statistics(pam, prepared), species_statistics(pam)
