"""pam-stats: matching, chunked randomizations, p-values, and the staged-path checks."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import rules_by_id, steps

import translators
from translators import InvalidRequest
from translators.common.chunks import near_equal_sizes
from translators.pam_stats import workflow as pam_stats

PAM = "00000000-0000-0000-0000-000000000001"
TREE = "00000000-0000-0000-0000-000000000002"
ROOT = Path(__file__).resolve().parents[2]


def request(tree=False, **params):
    inputs = {"pam": PAM, **({"tree": TREE} if tree else {})}
    return {"workflow": "pam-stats", "inputs": inputs, "params": params}


def plan(staged, **params):
    return translators.get("pam-stats").plan(request("tree" in staged, **params), staged, [])


def test_zero_randomizations_compute_observed_statistics_only():
    stage = plan({"pam": "inputs/pam.lmm"}, randomizations=0)
    rules = rules_by_id(stage)
    assert list(rules) == ["stats-observed"]
    first = steps(rules["stats-observed"])[0]
    assert first == [
        "calculate_pam_stats",
        "--diversity_matrix",
        "outputs/observed_diversity.lmm",
        "--site_stats_matrix",
        "outputs/observed_site_stats.lmm",
        "--species_stats_matrix",
        "outputs/observed_species_stats.lmm",
        "inputs/pam.lmm",
    ]
    assert stage.files == {}


@pytest.mark.parametrize(
    ("total", "sizes"),
    [(1, [1]), (50, [50]), (51, [26, 25]), (120, [40, 40, 40]), (500, [50] * 10)],
)
def test_randomizations_are_split_into_near_equal_chunks(total, sizes):
    assert pam_stats.RANDOMIZATIONS_PER_RULE == 50
    assert near_equal_sizes(total, 50) == sizes
    stage = plan({"pam": "inputs/pam.lmm"}, randomizations=total)
    rules = rules_by_id(stage)
    chunk_ids = [r for r in rules if r.startswith("rand-")]
    assert chunk_ids == [f"rand-{n:03d}" for n in range(1, len(sizes) + 1)]
    for rule_id, size in zip(chunk_ids, sizes, strict=True):
        randomize = steps(rules[rule_id])[0]
        assert randomize[:2] == ["randomize_pam", "inputs/pam.lmm"]
        assert len(randomize) == 2 + size
        (chunk,) = [
            s for s in steps(rules[rule_id]) if s[:2] == ["python3", pam_stats.CHUNK_SCRIPT]
        ]
        assert chunk[-size:] == randomize[2:], "one process for the chunk's statistics"
    assert stage.files[pam_stats.CHUNK_SCRIPT] == pam_stats.CHUNK_STATS


def test_the_chunk_script_stacks_what_the_tools_stack(tmp_path):
    """chunk_stats.py must stay lmpy's tools: calculate_pam_stats per PAM, aggregate_matrices,
    wrangle_matrix. Same random PAMs in, same three stacks out, with and without a tree."""
    import dendropy
    import numpy as np
    from lmpy import Matrix

    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    names = demo.make_pam(tmp_path / "pam.lmm", species=12, side=8, seed=3)
    demo.make_tree(tmp_path / "tree.tre", names, seed=3)
    tree = dendropy.Tree.get(path=tmp_path / "tree.tre", schema="newick")
    for taxon in tree.taxon_namespace:
        taxon.annotations.add_new("squid", taxon.label)
    tree.write(path=tmp_path / "tree.nex", schema="nexus")
    bin_dir = Path(sys.executable).parent

    def tool(name, *args):
        subprocess.run([str(bin_dir / name), *map(str, args)], check=True, capture_output=True)

    pams = [tmp_path / f"random-{i}.lmm" for i in range(3)]
    tool("randomize_pam", tmp_path / "pam.lmm", *pams)
    (tmp_path / "chunk_stats.py").write_text(pam_stats.CHUNK_STATS)
    for tree_args in ([], ["--tree_filename", str(tmp_path / "tree.nex")]):
        with_tree = bool(tree_args)
        stage = plan({"pam": "inputs/pam.lmm", **({"tree": "inputs/t.nex"} if with_tree else {})},
                     randomizations=3)  # fmt: skip
        configs = []
        for key in ("site_stats", "species_stats"):
            path = tmp_path / f"{key}-{with_tree}.json"
            path.write_text(stage.files[pam_stats.TESTED_CONFIG[key]])
            configs.append(path)
        ours = [tmp_path / f"ours-{key}-{with_tree}.lmm" for key in ("div", "site", "species")]
        subprocess.run(
            [sys.executable, tmp_path / "chunk_stats.py", *tree_args, *configs, *ours, *pams],
            check=True,
            capture_output=True,
        )
        per_pam = {key: [] for key in ("div", "site", "species")}
        for n, pam in enumerate(pams):
            for key in per_pam:
                per_pam[key].append(tmp_path / f"{key}-{n}-{with_tree}.lmm")
            tool("calculate_pam_stats", *tree_args, "--diversity_matrix", per_pam["div"][n],
                 "--site_stats_matrix", per_pam["site"][n],
                 "--species_stats_matrix", per_pam["species"][n], pam)  # fmt: skip
        theirs = [tmp_path / f"tools-{key}-{with_tree}.lmm" for key in ("div", "site", "species")]
        tool("aggregate_matrices", "concatenate", 1, theirs[0], *per_pam["div"])
        for key, config, out in zip(("site", "species"), configs, theirs[1:], strict=True):
            full = tmp_path / f"all-{key}-{with_tree}.lmm"
            tool("aggregate_matrices", "concatenate", 2, full, *per_pam[key])
            tool("wrangle_matrix", full, config, out)
        for a, b in zip(ours, theirs, strict=True):
            left, right = Matrix.load(str(a)), Matrix.load(str(b))
            assert left.get_headers() == right.get_headers(), a.name
            assert np.array_equal(np.asarray(left), np.asarray(right), equal_nan=True), a.name


def test_a_chunk_ships_back_only_its_three_stacks():
    rules = rules_by_id(plan({"pam": "inputs/pam.lmm"}, randomizations=5))
    chunk = rules["rand-001"]
    assert chunk["outputs"] == [
        "work/rand-001/diversity.lmm",
        "work/rand-001/site_stats.lmm",
        "work/rand-001/species_stats.lmm",
        "logs/rand-001.stdout",
        "logs/rand-001.stderr",
    ]
    (script,) = [s for s in steps(chunk) if s[:2] == ["python3", pam_stats.CHUNK_SCRIPT]]
    assert script[2:7] == [
        "work/config/site_stats_tested.json",
        "work/config/species_stats_tested.json",
        *chunk["outputs"][:3],
    ]
    # The diversity matrix is one-dimensional: the script stacks it along axis 1.
    assert "Matrix.concatenate(diversity, axis=1)" in pam_stats.CHUNK_STATS
    assert steps(chunk)[-1][:3] == ["rm", "-f", "--"]


def test_the_largest_request_keeps_commands_short():
    stage = plan({"pam": "inputs/pam.lmm", "tree": "inputs/tree.nex"}, randomizations=10000)
    rules = stage.makeflow["rules"]
    assert len([r for r in rules if r["category"] == "randomize"]) == 200
    assert max(len(r["command"]) for r in rules) < 30_000


@pytest.mark.parametrize(
    ("method", "significance"),
    [
        ("fdr", "outputs/significant_site_stats.lmm"),
        ("raw", "outputs/significant_site_stats.lmm"),
        # lmpy writes adjusted p-values, not a mask, for bonferroni -s: name it for what it is.
        ("bonferroni", "outputs/p_values_site_stats_bonferroni.lmm"),
    ],
)
def test_p_values_use_the_method_and_alpha_and_name_the_significance_file(method, significance):
    stage = plan({"pam": "inputs/pam.lmm"}, randomizations=90, p_value_method=method, alpha=0.01)
    rule = rules_by_id(stage)["p-values-site-stats"]
    p_values = next(s for s in steps(rule) if s[0] == "calculate_p_values")
    assert p_values == [
        "calculate_p_values",
        "-m",
        method,
        "--alpha",
        "0.01",
        "-s",
        significance,
        "outputs/p_values_site_stats.lmm",
        "work/observed_site_stats_tested.lmm",
        "work/rand-001/site_stats.lmm",
        "work/rand-002/site_stats.lmm",
    ]
    assert significance in rule["outputs"]
    assert significance.removesuffix(".lmm") + ".csv" in rule["outputs"]


def test_only_statistics_that_vary_under_the_null_model_are_tested():
    plain = plan({"pam": "inputs/pam.lmm"}, randomizations=3).files
    site = json.loads(plain["work/config/site_stats_tested.json"])
    assert site == [
        {
            "wrangler_type": "SubsetReorderSlicesWrangler",
            "axes": {"1": ["phi", "phi average proportional"]},
        }
    ]
    species = json.loads(plain["work/config/species_stats_tested.json"])
    assert species[0]["axes"] == {"1": ["psi", "psi_average_proportional"]}
    with_tree = plan({"pam": "inputs/pam.lmm", "tree": "inputs/tree.nex"}, randomizations=3).files
    names = json.loads(with_tree["work/config/site_stats_tested.json"])[0]["axes"]["1"]
    assert "Phylogenetic Diversity" in names
    assert "alpha" not in names and "pearson_correlation" not in names


@pytest.mark.parametrize(("extension", "schema"), [("nex", "nexus"), ("tre", "newick")])
def test_a_tree_is_matched_to_the_pam_and_annotated_before_the_statistics(extension, schema):
    tree = f"inputs/tree.{extension}"
    stage = plan({"pam": "inputs/pam.lmm", "tree": tree}, randomizations=2)
    rules = rules_by_id(stage)
    assert list(rules)[:3] == ["match-pam", "match-tree", "stats-observed"]
    match_pam = json.loads(stage.files["work/config/match_pam.json"])
    assert match_pam[0] == {
        "wrangler_type": "MatchTreeMatrixWrangler",
        "tree": tree,
        "species_axis": 1,
    }
    assert tree in rules["match-pam"]["inputs"]
    wrangle_tree, annotate = steps(rules["match-tree"])[:2]
    assert wrangle_tree[:4] == ["wrangle_tree", "-r", "outputs/matched_tree_report.json", tree]
    assert wrangle_tree[4] == schema
    assert wrangle_tree[-1] == "nexus"
    assert annotate[:2] == ["python3", "work/config/annotate_tree.py"]
    compile(stage.files["work/config/annotate_tree.py"], "annotate_tree.py", "exec")
    observed = steps(rules["stats-observed"])[0]
    assert observed[1:3] == ["--tree_filename", "outputs/matched_tree.nex"]
    assert observed[-1] == "outputs/matched_pam.lmm"
    for rule_id in ("rand-001",):
        assert steps(rules[rule_id])[0][1] == "outputs/matched_pam.lmm"
        assert "outputs/matched_tree.nex" in rules[rule_id]["inputs"]


def test_the_annotation_script_writes_squid_annotations(tmp_path):
    dendropy = pytest.importorskip("dendropy")
    stage = plan({"pam": "inputs/pam.lmm", "tree": "inputs/tree.nex"}, randomizations=0)
    script = tmp_path / "annotate.py"
    script.write_text(stage.files["work/config/annotate_tree.py"])
    source = tmp_path / "in.nex"
    source.write_text("#NEXUS\nBEGIN TREES;\n  TREE t = ((Sp_a:1,Sp_b:1):1,Sp_c:2);\nEND;\n")
    target = tmp_path / "out.nex"
    subprocess.run([sys.executable, str(script), str(source), str(target)], check=True)
    tree = dendropy.Tree.get(path=str(target), schema="nexus")
    pairs = {t.label: t.annotations.get_value("squid") for t in tree.taxon_namespace}
    assert pairs == {"Sp a": "Sp a", "Sp b": "Sp b", "Sp c": "Sp c"}


def test_a_staged_path_with_awkward_characters_stays_one_argument_and_valid_json():
    pam, tree = "inputs/my pam $x;'q'.lmm", 'inputs/tree "1".nex'
    stage = plan({"pam": pam, "tree": tree}, randomizations=1)
    rules = rules_by_id(stage)
    assert steps(rules["match-pam"])[0][3] == pam
    assert steps(rules["match-tree"])[0][3] == tree
    assert json.loads(stage.files["work/config/match_pam.json"])[0]["tree"] == tree


@pytest.mark.parametrize(
    ("staged", "problem"),
    [
        ({"pam": "/data/jobs/1/inputs/pam.lmm"}, "relative"),
        ({"pam": "inputs/../../etc/pam.lmm"}, "normalized"),
        ({"pam": "inputs/pam.tif"}, "not one of"),
        ({"pam": "inputs/pam"}, "not one of"),
        ({"pam": ["inputs/pam.lmm"]}, "expected a path"),
        ({}, "differ"),
        ({"pam": "inputs/pam.lmm", "tree": "inputs/tree.xml"}, "not one of"),
    ],
)
def test_bad_staged_inputs_are_refused(staged, problem):
    workflow = translators.get("pam-stats")
    good = {"pam": "inputs/pam.lmm", **({"tree": "inputs/t.nex"} if "tree" in staged else {})}
    workflow.plan(request("tree" in staged), good, [])
    with pytest.raises(InvalidRequest, match=problem):
        workflow.plan(request("tree" in staged), staged, [])


def test_a_tree_staged_without_being_requested_is_refused():
    with pytest.raises(InvalidRequest, match="differ"):
        translators.get("pam-stats").plan(
            request(tree=False), {"pam": "inputs/pam.lmm", "tree": "inputs/t.nex"}, []
        )


def test_an_invalid_request_is_refused_before_planning():
    with pytest.raises(InvalidRequest, match="randomizations"):
        plan({"pam": "inputs/pam.lmm"}, randomizations=-1)
