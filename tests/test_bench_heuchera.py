"""B9's baseline (lmpy's calls in one process per core) reproduces pam-stats' seeded chunks
exactly: same counts as a chunk, same p-values as the p-values rule, however the work is split."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from bench import direct
from translators.pam_stats.scripts import chunk_stats, p_values
from translators.pam_stats.workflow import TESTED, TESTED_WITH_TREE

ROOT = Path(__file__).resolve().parents[1]
TESTED_NAMES = [TESTED["site_stats"] + TESTED_WITH_TREE["site_stats"], TESTED["species_stats"]]


@pytest.fixture
def inputs(tmp_path):
    """A demo PAM and its tree, annotated as pam-stats' matching leaves it."""
    import dendropy

    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    names = demo.make_pam(tmp_path / "pam.lmm", species=8, side=6, seed=4)
    demo.make_tree(tmp_path / "tree.tre", names, seed=4)
    tree = dendropy.Tree.get(path=tmp_path / "tree.tre", schema="newick")
    for taxon in tree.taxon_namespace:
        taxon.annotations.add_new("squid", taxon.label)
    tree.write(path=tmp_path / "tree.nex", schema="nexus")
    return tmp_path / "pam.lmm", tmp_path / "tree.nex"


def chunk_counts(pam_file, tree_file, folder, numbers, seed):
    from lmpy.matrix import Matrix
    from lmpy.tree import TreeWrapper

    wranglers = []
    for key, names in zip(("site", "species"), TESTED_NAMES, strict=True):
        path = folder / f"{key}.json"
        path.write_text(
            json.dumps([{"wrangler_type": "SubsetReorderSlicesWrangler", "axes": {"1": names}}])
        )
        wranglers.append(chunk_stats.load_wranglers(str(path)))
    return chunk_stats.counts(
        Matrix.load(str(pam_file)),
        TreeWrapper.from_filename(str(tree_file)),
        *wranglers,
        numbers,
        seed,
    )


def test_the_baseline_counts_what_a_chunk_counts(inputs, tmp_path):
    pam, tree = inputs
    ours = chunk_counts(pam, tree, tmp_path, range(3, 7), seed=21)
    theirs = direct._pam_stats_counts((str(pam), str(tree), TESTED_NAMES, [3, 4, 5, 6], 21, False))
    for matrix, (counts, headers) in zip(ours, theirs, strict=True):
        assert matrix.get_headers() == headers
        assert np.array_equal(np.asarray(matrix), counts)
    other = direct._pam_stats_counts((str(pam), str(tree), TESTED_NAMES, [3, 4, 5, 6], 22, False))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(theirs, other, strict=True))


def test_the_baselines_p_values_equal_the_p_values_rules_from_two_chunks(inputs, tmp_path):
    from lmpy.matrix import Matrix

    pam, tree = inputs
    files = {key: [] for key in ("diversity", "site_stats", "species_stats")}
    for number, numbers in enumerate((range(1, 5), range(5, 8))):
        for key, matrix in zip(files, chunk_counts(pam, tree, tmp_path, numbers, 8), strict=True):
            files[key].append(str(tmp_path / f"{key}-{number}.lmm"))
            matrix.write(files[key][-1])
    out = tmp_path / "per-core"
    direct.pam_stats_per_core(pam, tree, TESTED_NAMES, 7, 8, "fdr", 0.05, out, processes=2)
    for key, counts in files.items():
        ours = p_values.p_values(counts, 7)
        theirs = Matrix.load(str(out / f"p_values_{key}.lmm"))
        assert ours.get_headers() == theirs.get_headers()
        assert np.array_equal(np.asarray(ours), np.asarray(theirs), equal_nan=True)
    assert (out / "significant_site_stats.lmm").is_file()
