"""pam_statistics.statistics returns what lmpy's PamStats returns, on seeded random PAMs."""

import contextlib
import io
import warnings

import numpy as np
import pytest
from lmpy.matrix import Matrix
from lmpy.statistics.pam_stats import PamStats
from lmpy.tree import TreeWrapper

from tests import synthetic
from translators.pam_stats.scripts import pam_statistics


def random_pam(sites, species, *, density, seed, empty_sites=0, single_sites=0, dtype=float):
    rng = np.random.default_rng(seed)
    data = rng.random((sites, species)) < density
    data[:empty_sites] = False
    for row in range(empty_sites, empty_sites + single_sites):
        data[row] = False
        data[row, rng.integers(species)] = True
    names = [f"sp{i:04d}" for i in range(species)]
    rows = [(i, float(i % 7), float(i // 7)) for i in range(sites)]
    return Matrix(data.astype(dtype), headers={"0": rows, "1": names})


def random_tree(labels, *, seed, zero_fraction=0.0, root_length=None, annotate=True):
    """A random binary tree over `labels` (shuffled), some branch lengths 0; tips get squid."""
    rng = np.random.default_rng(seed)
    nodes = [str(label) for label in rng.permutation(labels)]

    def length():
        return 0.0 if rng.random() < zero_fraction else float(rng.exponential(1.0))

    while len(nodes) > 1:
        a = nodes.pop(int(rng.integers(len(nodes))))
        b = nodes.pop(int(rng.integers(len(nodes))))
        nodes.append(f"({a}:{length():.6f},{b}:{length():.6f})")
    text = nodes[0] + (f":{root_length};" if root_length is not None else ";")
    tree = TreeWrapper.get(data=text, schema="newick")
    if annotate:
        for taxon in tree.taxon_namespace:
            taxon.annotations.add_new("squid", taxon.label)
    return tree


def lmpy_statistics(pam, tree):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = PamStats(pam, tree=tree)
        return (
            stats.calculate_diversity_statistics(),
            stats.calculate_site_statistics(),
            stats.calculate_species_statistics(),
        )


def assert_same(ours, theirs):
    assert ours.get_headers() == theirs.get_headers()
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-9, atol=0)


def check(pam, tree=None):
    expected = lmpy_statistics(pam, tree)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ours does not warn either
        got = pam_statistics.statistics(pam, tree)
    for ours, theirs in zip(got, expected, strict=True):
        assert_same(ours, theirs)
    return got, expected


def test_small_pam_without_tree():
    got, _ = check(random_pam(30, 12, density=0.3, seed=1))
    assert got[1].shape == (30, 4)


def test_pam_with_empty_and_one_species_sites_without_tree():
    check(random_pam(40, 25, density=0.2, seed=2, empty_sites=4, single_sites=5))


def test_bool_and_integer_pams():
    check(random_pam(30, 12, density=0.3, seed=3, dtype=bool))
    pam = random_pam(30, 12, density=0.3, seed=4, dtype=np.int64)
    check(pam, random_tree(pam.get_column_headers(), seed=4))


def test_pam_with_tree():
    pam = random_pam(40, 200, density=0.1, seed=5, empty_sites=3, single_sites=4)
    got, expected = check(pam, random_tree(pam.get_column_headers(), seed=5))
    site = np.asarray(expected[1])
    assert got[1].shape == (40, 9)
    # the case covers what it claims: NaN mean pairwise distance at one-species sites, 0 at empty
    assert np.isnan(site[3:7, 6]).all() and (site[:3, 4:] == 0).all()


def test_root_with_length_and_zero_length_branches():
    pam = random_pam(60, 80, density=0.05, seed=6, single_sites=6)
    tree = random_tree(pam.get_column_headers(), seed=6, zero_fraction=0.3, root_length=0.25)
    check(pam, tree)


def test_zero_length_branches_without_root_length():
    pam = random_pam(80, 60, density=0.04, seed=7, single_sites=10)
    check(pam, random_tree(pam.get_column_headers(), seed=7, zero_fraction=0.4))


def test_species_absent_from_the_tree_and_tips_absent_from_the_pam():
    pam = random_pam(50, 120, density=0.03, seed=8, empty_sites=2, single_sites=5)
    names = pam.get_column_headers()
    # 40 PAM species have no tip; the tree has 30 tips no PAM column names
    labels = names[40:] + [f"other{i}" for i in range(30)]
    check(pam, random_tree(labels, seed=8, zero_fraction=0.1))


def test_tree_without_squid_gives_lmpy_zeros():
    pam = random_pam(30, 40, density=0.2, seed=9)
    got, _ = check(pam, random_tree(pam.get_column_headers(), seed=9, annotate=False))
    assert (np.asarray(got[1])[:, 4:8] == 0).all()


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_denser_pams_with_trees(seed):
    pam = random_pam(45, 70, density=0.35, seed=seed, single_sites=2)
    check(pam, random_tree(pam.get_column_headers(), seed=seed, zero_fraction=0.2))


def test_prepared_tree_is_reusable():
    pam = random_pam(30, 50, density=0.2, seed=13)
    tree = random_tree(pam.get_column_headers(), seed=13)
    prepared = pam_statistics.prepare_tree(tree)
    for seed in (14, 15):
        other = random_pam(30, 50, density=0.2, seed=seed)
        expected = lmpy_statistics(other, tree)
        for ours, theirs in zip(pam_statistics.statistics(other, prepared), expected, strict=True):
            assert_same(ours, theirs)


def test_distance_matrix_is_lmpy_bit_for_bit():
    tree = random_tree([f"sp{i:04d}" for i in range(300)], seed=16, zero_fraction=0.2)
    prepared = pam_statistics.prepare_tree(tree)
    expected = np.asarray(tree.get_distance_matrix())
    assert np.array_equal(prepared.distances, expected)


def test_non_binary_pam_is_left_to_lmpy():
    pam = random_pam(20, 10, density=0.3, seed=17)
    pam[0, 0] = 2.0
    check(pam)


def test_pam_without_presences_fails_as_lmpy_does():
    pam = random_pam(10, 5, density=0.0, seed=18)
    with pytest.raises(ZeroDivisionError):
        lmpy_statistics(pam, None)
    with pytest.raises(ZeroDivisionError):
        pam_statistics.statistics(pam)


def test_heuchera_sample_pam_and_tree():
    """The real Heuchera PAM with its NEXUS tree annotated as scripts/annotate_tree.py does."""
    folder = synthetic.sample_data() / "heuchera"
    pam = Matrix.load(str(folder / "heuchera_rfolk_1deg_global_noempties.lmm"))
    tree = TreeWrapper.from_filename(str(folder / "heuchera.nex"))
    for taxon in tree.taxon_namespace:
        taxon.annotations.add_new("squid", taxon.label)
    got, _ = check(pam, tree)
    site = np.asarray(got[1])
    assert (site[:, 5] > 0).any() and (site[:, 4] > 0).any()  # MNTD and diversity are computed


def test_site_with_more_species_than_tips_fails_as_lmpy_does():
    """pearson_correlation reads the first n tips for a site of n species: past the last, lmpy
    raises IndexError; so does ours."""
    pam = random_pam(10, 20, density=0.6, seed=19)
    tree = random_tree(pam.get_column_headers()[:5], seed=19)
    with pytest.raises(IndexError):
        lmpy_statistics(pam, tree)
    with pytest.raises(IndexError):
        pam_statistics.statistics(pam, tree)
