"""Worker scripts: self-contained files shipped as they are, and their functions on small inputs."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import write_lmm

import translators
from translators.common.scripts import script_text
from translators.species_pam.scripts import check_pam, lmm_to_csv

PACKAGE = Path(translators.__file__).parent
SCRIPTS = sorted(p for p in PACKAGE.glob("*/scripts/*.py") if p.name != "__init__.py")
GOLDEN = Path(__file__).parent / "golden"


def test_every_workflow_with_scripts_has_them_as_files():
    folders = {p.parent.parent.name for p in SCRIPTS}
    assert folders == {"species_pam", "occurrence_cleaning", "mcpa", "pam_stats", "report"}
    assert len(SCRIPTS) == 16


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_a_script_imports_nothing_from_this_project(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names = [node.module]
        else:
            continue
        assert not any(n.split(".")[0] in ("translators", "jobs", "lmweb") for n in names), names


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_a_script_loads_in_an_isolated_interpreter(path, tmp_path):
    # As on a worker: `python3 -I` puts neither the script's folder nor this project on the path.
    code = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='loaded')"
    copy = tmp_path / path.name
    copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, str(copy)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_the_stages_ship_each_script_file_unchanged(path):
    package = f"translators.{path.parent.parent.name}"
    assert script_text(package, path.name) == path.read_text(encoding="utf-8")
    shipped = [
        golden.name
        for golden in GOLDEN.glob("*.files.json")
        if f'/{path.name}": ' in golden.read_text(encoding="utf-8")
    ]
    assert shipped, f"no golden stage ships {path.name}"


def test_check_pam_lists_modelled_species_missing_from_the_pam():
    all_sites = {"0": [[0, 0.5, 0.5], [1, 1.5, 0.5]], "1": ["A a", "B b", "C"]}
    pam = {"0": [[0, 0.5, 0.5]], "1": ["A a"]}
    assert check_pam.summarize(["A a", "B b", "C"], all_sites, pam) == {
        "grid_cells": 2,
        "species_modelled": 3,
        "sites": 1,
        "species": 1,
        "species_not_in_pam": ["B b", "C"],
    }
    empty = check_pam.summarize(["A a"], all_sites, {"0": [], "1": []})
    assert (empty["sites"], empty["species"], empty["species_not_in_pam"]) == (0, 0, ["A a"])


@pytest.mark.parametrize(
    ("value", "text"), [(1.0, "1"), (-3, "-3"), (0.25, "0.25"), (2.0**53, "9007199254740992.0")]
)
def test_lmm_to_csv_writes_whole_numbers_without_a_point(value, text):
    assert lmm_to_csv.text(value) == text


def test_lmm_to_csv_rows_are_the_labels_then_each_row_headers_and_values(tmp_path):
    write_lmm(tmp_path / "m.lmm", [[1, 0.5], [0, 2]], [[0, -1.5, 2.5], [3, 0.5, 2.5]], ["a,b", "c"])
    assert list(lmm_to_csv.rows(tmp_path / "m.lmm", ["site_id", "x", "y"])) == [
        ["site_id", "x", "y", "a,b", "c"],
        [0, -1.5, 2.5, "1", "0.5"],
        [3, 0.5, 2.5, "0", "2"],
    ]


def test_annotating_a_tree_copies_each_label_to_squid(tmp_path):
    dendropy = pytest.importorskip("dendropy")
    from translators.pam_stats.scripts import annotate_tree

    source = tmp_path / "in.nex"
    source.write_text("#NEXUS\nBEGIN TREES;\n  TREE t = ((Sp_a:1,Sp_b:1):1,Sp_c:2);\nEND;\n")
    annotate_tree.annotate(str(source), str(tmp_path / "out.nex"))
    tree = dendropy.Tree.get(path=str(tmp_path / "out.nex"), schema="nexus")
    pairs = {t.label: t.annotations.get_value("squid") for t in tree.taxon_namespace}
    assert pairs == {"Sp a": "Sp a", "Sp b": "Sp b", "Sp c": "Sp c"}


def test_a_chunk_counts_random_values_above_the_observed_ones(tmp_path):
    np = pytest.importorskip("numpy")
    lmpy = pytest.importorskip("lmpy")
    from translators.pam_stats.scripts import chunk_stats

    data = [[1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0]]
    rows = [[i, float(i), 0.0] for i in range(len(data))]
    pam = lmpy.Matrix(np.array(data, dtype=float), headers={"0": rows, "1": list("ABCD")})
    keep = [{"wrangler_type": "SubsetReorderSlicesWrangler", "axes": {"1": ["phi"]}}]
    (tmp_path / "keep.json").write_text(json.dumps(keep))
    wranglers = chunk_stats.load_wranglers(str(tmp_path / "keep.json"))
    keep_species = [{"wrangler_type": "SubsetReorderSlicesWrangler", "axes": {"1": ["psi"]}}]
    (tmp_path / "species.json").write_text(json.dumps(keep_species))
    species = chunk_stats.load_wranglers(str(tmp_path / "species.json"))
    _, site, psi = chunk_stats.counts(pam, None, wranglers, species, range(1, 8), seed=4)
    assert site.shape == (5, 1) and psi.shape == (4, 1)
    assert site.get_headers()["1"] == ["phi"]
    # Each count is how many of the 7 randomized PAMs beat the observed value.
    assert np.min(site) >= 0 and np.max(site) <= 7
    again = chunk_stats.counts(pam, None, wranglers, species, range(1, 8), seed=4)
    assert np.array_equal(np.asarray(site), np.asarray(again[1]))
    first = chunk_stats.randomized(pam, 3, seed=4)
    assert np.array_equal(first, chunk_stats.randomized(pam, 3, seed=4))
    assert np.array_equal(np.sum(first, axis=0), np.sum(pam, axis=0)), "species totals kept"
