"""pam-stats: matching, chunked randomizations, p-values, and the staged-path checks."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import rules_by_id, steps

import translators
from tests.support.stages import demo_inputs, run_stage, tool_path_env
from translators import InvalidRequest
from translators.common.chunks import tapering_sizes
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
    assert list(rules) == ["stats-observed", "report"]
    first = steps(rules["stats-observed"])[0]
    assert first == [
        "python3",
        "work/config/chunk_stats.py",
        "--observed",
        "inputs/pam.lmm",
        "outputs/observed_diversity.lmm",
        "outputs/observed_site_stats.lmm",
        "outputs/observed_species_stats.lmm",
    ]
    assert set(stage.files) == {
        "work/config/chunk_stats.py",
        "work/config/pam_statistics.py",
        "work/config/report/report.json",
        "work/config/report/report.py",
        "work/config/report/drawing.py",
        "work/config/report/draw_pam.py",
    }


@pytest.mark.parametrize(
    ("total", "sizes"),
    [
        (1, [1]),
        (20, [20]),
        (100, [25, 20, 20, 20, 15]),
        (500, [125, 94, 71, 53, 40, 30, 22, 20, 20, 20, 5]),
        (1000, [200, 200, 150, 113, 85, 63, 48, 36, 27, 20, 20, 20, 18]),
    ],
)
def test_randomizations_are_split_into_chunks_that_taper_off(total, sizes):
    assert (pam_stats.RANDOMIZATIONS_PER_RULE, pam_stats.SMALLEST_CHUNK) == (200, 20)
    assert tapering_sizes(total, 200, 20, 4) == sizes
    stage = plan({"pam": "inputs/pam.lmm"}, randomizations=total)
    rules = rules_by_id(stage)
    chunk_ids = [r for r in rules if r.startswith("rand-")]
    assert chunk_ids == [f"rand-{n:03d}" for n in range(1, len(sizes) + 1)]
    first = 1
    for rule_id, size in zip(chunk_ids, sizes, strict=True):
        (chunk,) = steps(rules[rule_id])
        assert chunk[:2] == ["python3", pam_stats.CHUNK_SCRIPT], "one process per chunk"
        assert chunk[2:5] == [str(first), str(size), "inputs/pam.lmm"]
        first += size
    assert first == total + 1
    assert stage.files[pam_stats.CHUNK_SCRIPT] == pam_stats.CHUNK_STATS
    assert stage.files[pam_stats.P_VALUES_SCRIPT] == pam_stats.P_VALUES


def same_matrix(a: Path, b: Path) -> bool:
    from lmpy import Matrix

    left, right = Matrix.load(str(a)), Matrix.load(str(b))
    return left.get_headers() == right.get_headers() and np.array_equal(
        np.asarray(left), np.asarray(right), equal_nan=True
    )


def test_the_chunks_and_p_values_equal_lmpys_tools_on_the_same_seeded_pams(tmp_path):
    """chunk_stats.py and p_values.py must stay lmpy's tools. The stage, run by hand in two
    chunks, against randomize_pam's own function seeded as documented, then calculate_pam_stats
    per PAM, aggregate_matrices, wrangle_matrix and calculate_p_values on the command line."""
    from copy import deepcopy

    from lmpy import Matrix
    from lmpy.tools.randomize_pam import randomize_pam

    ours = tmp_path / "ours"
    demo_inputs(ours)
    staged = {"pam": "inputs/pam.lmm", "tree": "inputs/tree.tre"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pam_stats, "RANDOMIZATIONS_PER_RULE", 3)
        stage = plan(staged, randomizations=5, seed=11, p_value_method="raw", alpha=0.3)
    assert [r for r in rules_by_id(stage) if r.startswith("rand-")] == ["rand-001", "rand-002"]
    run_stage(stage, ours, report=False)

    theirs = tmp_path / "theirs"
    theirs.mkdir()

    def tool(name, *args):
        subprocess.run([name, *map(str, args)], check=True, capture_output=True, cwd=theirs,
                       env=tool_path_env())  # fmt: skip

    pam, tree = ours / "outputs" / "matched_pam.lmm", ours / "outputs" / "matched_tree.nex"
    matched = Matrix.load(str(pam))
    sources = {"observed": pam}
    for number in range(1, 6):
        np.random.seed([11, number])
        sources[number] = theirs / f"random-{number}.lmm"
        randomize_pam(deepcopy(matched)).write(str(sources[number]))
    for name, source in sources.items():
        tool("calculate_pam_stats", "--tree_filename", tree, "--diversity_matrix",
             f"div-{name}.lmm", "--site_stats_matrix", f"site-{name}.lmm",
             "--species_stats_matrix", f"species-{name}.lmm", source)  # fmt: skip
    randoms = range(1, 6)
    tool("aggregate_matrices", "concatenate", 1, "div-all.lmm", *(f"div-{n}.lmm" for n in randoms))
    tool("calculate_p_values", "p_values_diversity.lmm", "div-observed.lmm", "div-all.lmm")
    for key, short in (("site_stats", "site"), ("species_stats", "species")):
        config = ours / pam_stats.TESTED_CONFIG[key]
        tool("aggregate_matrices", "concatenate", 2, f"{short}-all.lmm",
             *(f"{short}-{n}.lmm" for n in randoms))  # fmt: skip
        tool("wrangle_matrix", f"{short}-all.lmm", config, f"{short}-tested.lmm")
        tool("wrangle_matrix", f"{short}-observed.lmm", config, f"{short}-observed-tested.lmm")
        observed = f"{short}-observed-tested.lmm"
        tool("calculate_p_values", "-m", "raw", "--alpha", "0.3", "-s", f"significant_{key}.lmm",
             f"p_values_{key}.lmm", observed, f"{short}-tested.lmm")  # fmt: skip
    compared = [
        "p_values_diversity.lmm",
        "p_values_site_stats.lmm",
        "significant_site_stats.lmm",
        "p_values_species_stats.lmm",
        "significant_species_stats.lmm",
    ]
    for name in compared:
        assert same_matrix(ours / "outputs" / name, theirs / name), name
    values = np.asarray(Matrix.load(str(theirs / "p_values_site_stats.lmm")))
    assert np.nanmax(values) > 0, "the p-values compared are not all zero"
    assert (ours / "outputs" / "p_values_site_stats.csv").read_text().count("\n") > 10


def p_values_of(folder: Path) -> list[np.ndarray]:
    from lmpy import Matrix

    return [
        np.asarray(Matrix.load(str(folder / "outputs" / f"p_values_{key}.lmm")))
        for key in ("diversity", "site_stats", "species_stats")
    ]


def test_the_same_seed_gives_the_same_p_values_however_the_work_is_chunked(tmp_path):
    runs = {}
    for name, per_rule, seed in (("one", 100, 5), ("three", 2, 5), ("other", 100, 6)):
        folder = tmp_path / name
        demo_inputs(folder, species=8, side=6)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pam_stats, "RANDOMIZATIONS_PER_RULE", per_rule)
            stage = plan({"pam": "inputs/pam.lmm"}, randomizations=6, seed=seed)
        run_stage(stage, folder, report=False)
        runs[name] = p_values_of(folder)
    for same, other in zip(runs["one"], runs["three"], strict=True):
        assert np.array_equal(same, other, equal_nan=True)
    assert not all(
        np.array_equal(a, b, equal_nan=True)
        for a, b in zip(runs["one"], runs["other"], strict=True)
    ), "another seed draws other PAMs"


def test_a_chunk_ships_back_only_its_counts_and_random_diversity_values():
    rules = rules_by_id(plan({"pam": "inputs/pam.lmm"}, randomizations=5, seed=0))
    chunk = rules["rand-001"]
    assert chunk["outputs"] == [
        "work/rand-001/diversity.lmm",
        "work/rand-001/site_stats.lmm",
        "work/rand-001/species_stats.lmm",
        "work/rand-001/random_diversity.csv",
        "logs/rand-001.stdout",
        "logs/rand-001.stderr",
    ]
    (script,) = steps(chunk)
    assert script == [
        "python3",
        pam_stats.CHUNK_SCRIPT,
        "--seed",
        "0",
        "1",
        "5",
        "inputs/pam.lmm",
        "work/config/site_stats_tested.json",
        "work/config/species_stats_tested.json",
        *chunk["outputs"][:4],
    ]


def test_without_a_seed_no_rule_seeds():
    stage = plan({"pam": "inputs/pam.lmm"}, randomizations=5)
    assert "--seed" not in stage.dumps()


def test_the_largest_request_keeps_commands_short():
    stage = plan({"pam": "inputs/pam.lmm", "tree": "inputs/tree.nex"}, randomizations=10000)
    rules = stage.makeflow["rules"]
    assert len([r for r in rules if r["category"] == "randomize"]) == 58
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
    stage = plan({"pam": "inputs/pam.lmm"}, randomizations=30, p_value_method=method, alpha=0.01)
    rule = rules_by_id(stage)["p-values"]
    assert steps(rule) == [["python3", pam_stats.P_VALUES_SCRIPT, pam_stats.P_VALUES_CONFIG]]
    config = json.loads(stage.files[pam_stats.P_VALUES_CONFIG])
    assert (config["method"], config["alpha"], config["randomizations"]) == (method, 0.01, 30)
    site = config["matrices"][1]
    assert site == {
        "counts": ["work/rand-001/site_stats.lmm", "work/rand-002/site_stats.lmm"],
        "p_values": "outputs/p_values_site_stats.lmm",
        "significance": significance,
        "csv": True,
    }
    assert set(site["counts"]) < set(rule["inputs"])
    assert significance in rule["outputs"]
    assert significance.removesuffix(".lmm") + ".csv" in rule["outputs"]
    # The diversity matrix is one-dimensional: p-values only.
    assert config["matrices"][0]["significance"] is None
    assert "outputs/p_values_diversity.csv" not in rule["outputs"]


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
    assert observed[2:6] == [
        "--observed",
        "--tree_filename",
        "outputs/matched_tree.nex",
        "outputs/matched_pam.lmm",
    ]
    chunk = steps(rules["rand-001"])[0]
    assert chunk[2:4] == ["--tree_filename", "outputs/matched_tree.nex"]
    assert chunk[6] == "outputs/matched_pam.lmm"
    assert "outputs/matched_tree.nex" in rules["rand-001"]["inputs"]


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
