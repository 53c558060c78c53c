"""pam-stats: matching, chunked randomizations, p-values, and the staged-path checks."""

import json
import subprocess
import sys

import pytest
from rendered import rules_by_id, steps

import translators
from translators import InvalidRequest, pam_stats

PAM = "00000000-0000-0000-0000-000000000001"
TREE = "00000000-0000-0000-0000-000000000002"


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
    assert pam_stats._chunks(total, 50) == sizes
    stage = plan({"pam": "inputs/pam.lmm"}, randomizations=total)
    rules = rules_by_id(stage)
    chunk_ids = [r for r in rules if r.startswith("rand-")]
    assert chunk_ids == [f"rand-{n:03d}" for n in range(1, len(sizes) + 1)]
    for rule_id, size in zip(chunk_ids, sizes, strict=True):
        randomize = steps(rules[rule_id])[0]
        assert randomize[:2] == ["randomize_pam", "inputs/pam.lmm"]
        assert len(randomize) == 2 + size
        stats = [s for s in steps(rules[rule_id]) if s[0] == "calculate_pam_stats"]
        assert [s[-1] for s in stats] == randomize[2:]


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
    aggregates = [s for s in steps(chunk) if s[0] == "aggregate_matrices"]
    # The diversity matrix is one-dimensional: it only stacks along axis 1.
    axes = [s[1:3] for s in aggregates]
    assert axes == [["concatenate", "1"], ["concatenate", "2"], ["concatenate", "2"]]
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
