"""pam-stats: PAM statistics (optionally phylogenetic) tested against randomized PAMs."""

# lmpy 3.1.21, checked by hand on the Heuchera PAM and tree (arguments as built below):
# - Matching works: wrangle_matrix (MatchTreeMatrixWrangler, PurgeEmptySlicesWrangler) keeps the
#   PAM's species found in the tree, in tree order, and drops emptied sites (Heuchera: 55 -> 45
#   species, 2,114 -> 2,070 sites); wrangle_tree (MatchMatrixTreeWrangler) prunes the tree to them
#   (64 -> 45 tips). The wrangler configurations name files, so those files are rule inputs.
# - calculate_pam_stats finds tips by a `squid` annotation equal to the PAM column header, and no
#   lmpy tool writes one: with a plain tree every phylogenetic column is 0. Three lines of dendropy
#   (an lmpy dependency) add it; nexus keeps it, newick would not.
# - pearson_correlation indexes the first n PAM species, not the n present at the site: it is
#   reported as computed but never tested.
# - The diversity matrix is one-dimensional: it stacks on axis 1 (axis 2: AxisError), cannot be
#   subset by statistic name, and convert_lmm_to_csv crashes on it (so no CSV for it).
# - calculate_p_values counts random > observed strictly, so a statistic the null model fixes
#   (row and column totals: alpha, omega, lande, legendre, whittaker...) always gets p = 0: only
#   statistics that vary are tested. Per-cell ties and NaN observations (mean pairwise distance at
#   one-species sites) still get p = 0; the observed matrices show where.
# - `calculate_p_values -m bonferroni -s F` writes adjusted p-values to F, not a mask: F is named
#   p_values_*_bonferroni and users compare it with alpha.
# - Start-up is ~0.5 s per tool on an idle host (1.5 s on the shared 2-core build box), and
#   calculate_pam_stats takes one PAM per run: a chunk of 50 spent most of its time starting that
#   tool (bench/, B8). A chunk therefore randomizes, computes its PAMs' statistics and counts them
#   against the observed ones in one process with the tools' own library calls
#   (scripts/chunk_stats.py), and one rule adds up the counts into p-values (scripts/p_values.py):
#   a test holds both equal to randomize_pam, calculate_pam_stats, aggregate_matrices,
#   wrangle_matrix and calculate_p_values run one by one. Nothing but counts leaves a chunk: the
#   stacked statistics of 10,000 Heuchera PAMs would be ~1 GB for one serial step to read.
# - randomize_pam draws from numpy's global legacy generator and never seeds it; chunk_stats.py
#   seeds it with [seed, n] before PAM number n when the request has a seed (bench/, B9).
# - PamStats' pair loops (c-score, pearson_correlation, the tree's distance matrix) take about
#   2 h per PAM of 7,033 species on 5,712 sites (B10). The observed statistics and every chunk's
#   therefore come from scripts/pam_statistics.py: the same values, vectorized (6 s there), with
#   lmpy's own functions where they are fast; tests hold it equal to PamStats, quirks included.

from __future__ import annotations

from translators.base import InputSpec, Stage, Workflow, canonical_json
from translators.common.chunks import tapering_sizes
from translators.common.lmpy import PYTHON, TREE_SCHEMAS, csv_commands, csv_names
from translators.common.p_values import significance_file
from translators.common.scripts import script_text
from translators.makeflow import Category, Rule, render_makeflow
from translators.pam_stats.schema import PARAMS_SCHEMA
from translators.report import CATEGORY as REPORT
from translators.report import REPORT_CATEGORY, Figure, figure_path, report_files, report_rule

STAGE = "main"
# A chunk rule pays one start-up (~1 s idle: Python, lmpy, the PAM and tree, and the observed
# statistics it counts against) against ~0.4 s per randomization of the Heuchera PAM with its
# tree (0.1 s randomizing, 0.3 s statistics). Chunks of at most 200 keep start-ups near 1 %
# (B9's goal is 5 % over lmpy in one process per core); the work then tapers (a quarter of what
# is left per chunk, down to 20) so that the slots end together: five equal chunks of 100 on two
# slots left one idle for a whole chunk, 60 s of a 430 s run (bench/, B9). 10,000
# randomizations make 58 rules, 1,000 make 13.
RANDOMIZATIONS_PER_RULE = 200
SMALLEST_CHUNK = 20
CHUNK_SHARE = 4

CONFIG = "work/config"
MATCH_PAM_CONFIG = f"{CONFIG}/match_pam.json"
MATCH_TREE_CONFIG = f"{CONFIG}/match_tree.json"
ANNOTATE_SCRIPT = f"{CONFIG}/annotate_tree.py"
CHUNK_SCRIPT = f"{CONFIG}/chunk_stats.py"
STATISTICS_SCRIPT = f"{CONFIG}/pam_statistics.py"
P_VALUES_SCRIPT = f"{CONFIG}/p_values.py"
P_VALUES_CONFIG = f"{CONFIG}/p_values.json"
CSV_PAM = "work/pam.lmm"
TESTED_CONFIG = {
    "site_stats": f"{CONFIG}/site_stats_tested.json",
    "species_stats": f"{CONFIG}/species_stats_tested.json",
}

MATCHED_PAM = "outputs/matched_pam.lmm"
MATCHED_TREE = "outputs/matched_tree.nex"

# Statistics the null model leaves free to vary (see the module docstring for the others).
TESTED = {
    "site_stats": ["phi", "phi average proportional"],
    "species_stats": ["psi", "psi_average_proportional"],
}
TESTED_WITH_TREE = {
    "site_stats": [
        "Phylogenetic Diversity",
        "MNTD",
        "Mean Pairwise Distance",
        "Sum Pairwise Distance",
    ],
}
# (matrix, calculate_pam_stats option, aggregate_matrices axis)
MATRICES = (
    ("diversity", "--diversity_matrix", "1"),
    ("site_stats", "--site_stats_matrix", "2"),
    ("species_stats", "--species_stats_matrix", "2"),
)
CATEGORIES = {
    "prepare": Category(cores=1, memory=1024, disk=1024),
    "observed": Category(cores=1, memory=1024, disk=1024),
    "randomize": Category(cores=1, memory=1024, disk=2048),
    "p-values": Category(cores=1, memory=2048, disk=2048),
    REPORT: REPORT_CATEGORY,
}
RANDOM_DIVERSITY = "outputs/random_diversity_stats.csv"
# Site statistics as the report maps them: column -> what the colour scale shows, with units.
SITE_LABELS = {
    "alpha": "richness (species)",
    "alpha proportional": "richness (share of all species)",
    "phi": "range-size sum (sites)",
    "phi average proportional": "mean range size (share of all sites)",
}
SITE_LABELS_WITH_TREE = {
    "Phylogenetic Diversity": "phylogenetic diversity (branch length)",
    "MNTD": "mean nearest taxon distance (branch length)",
    "Mean Pairwise Distance": "mean pairwise distance (branch length)",
    "Sum Pairwise Distance": "sum of pairwise distances (branch length)",
    "pearson_correlation": "Pearson correlation (unitless)",
}
SPECIES_LABELS = {
    "omega": "range size (sites)",
    "omega_proportional": "range size (share of all sites)",
    "psi": "range richness (species, summed over the range)",
    "psi_average_proportional": "mean range richness (share of all species)",
}


class PamStats(Workflow):
    name = "pam-stats"
    title = "PAM statistics with a null model"
    description = (
        "Computes diversity, site and species statistics of a presence-absence matrix (PAM, "
        ".lmm), with phylogenetic site statistics when a tree is given (the PAM and the tree are "
        "first matched: species missing from the tree and sites left empty are dropped). The "
        "statistics are then recomputed on randomized PAMs that keep every site's and species' "
        "totals, and each statistic that can vary under that null model gets an empirical "
        "p-value (share of random values strictly greater than the observed one) and, with the "
        "fdr or raw method, a significance mask at `alpha`; with bonferroni, adjusted p-values "
        "(significant where <= alpha). With 0 randomizations only the observed statistics are "
        "computed. Results are lmpy matrices (.lmm), two-dimensional ones also as CSV."
    )
    params_schema = PARAMS_SCHEMA
    dataset_inputs = {
        "pam": InputSpec(
            formats=("lmm", "csv"),
            description=(
                "Presence-absence matrix: sites are rows, species are columns (.lmm, or a CSV "
                "as convert_lmm_to_csv writes it: a species header row, then site id, x, y and "
                "one value per species on each row)."
            ),
            content="pam",
        ),
        "tree": InputSpec(
            formats=tuple(TREE_SCHEMAS),
            required=False,
            description="Phylogeny whose tip labels are the PAM's species names (nexus or newick).",
            content="tree",
        ),
    }
    example = {
        "workflow": "pam-stats",
        "name": "Heuchera PAM, 20 randomizations",
        "inputs": {
            "pam": "00000000-0000-0000-0000-000000000001",
            "tree": "00000000-0000-0000-0000-000000000002",
        },
        "params": {"randomizations": 20, "seed": 1, "p_value_method": "fdr", "alpha": 0.05},
        "tags": {"project": "heuchera"},
    }
    example_data = {
        "00000000-0000-0000-0000-000000000001": "heuchera/heuchera_rfolk_1deg_global_noempties.lmm",
        "00000000-0000-0000-0000-000000000002": "heuchera/heuchera.nex",
    }

    def next_stage(self, params, inputs, done, produced):
        if STAGE in done:
            return None
        rules: list[Rule] = []
        files: dict[str, str] = {}
        pam = inputs["pam"]
        tree = inputs.get("tree")
        if pam.endswith(".csv"):
            # A CSV PAM as convert_lmm_to_csv writes it: one header row of species, three
            # header columns per site (id, x, y).
            rules.append(
                Rule(
                    "import-pam",
                    [
                        "convert_csv_to_lmm",
                        "--header_rows",
                        "1",
                        "--header_cols",
                        "3",
                        pam,
                        CSV_PAM,
                    ],
                    inputs=[pam],
                    outputs=[CSV_PAM],
                    category="prepare",
                )
            )
            pam = CSV_PAM
        tree_args: list[str] = []
        tree_inputs: list[str] = []
        tested = {key: list(names) for key, names in TESTED.items()}

        if tree is not None:
            schema = TREE_SCHEMAS[tree.rpartition(".")[2].lower()]
            files[MATCH_PAM_CONFIG] = canonical_json(
                [
                    {"wrangler_type": "MatchTreeMatrixWrangler", "tree": tree, "species_axis": 1},
                    {"wrangler_type": "PurgeEmptySlicesWrangler", "purge_axes": [0, 1]},
                ]
            )
            files[MATCH_TREE_CONFIG] = canonical_json(
                [
                    {
                        "wrangler_type": "MatchMatrixTreeWrangler",
                        "matrix": MATCHED_PAM,
                        "species_axis": 1,
                    }
                ]
            )
            files[ANNOTATE_SCRIPT] = ANNOTATE_TREE
            pam_report = "outputs/matched_pam_report.json"
            tree_report = "outputs/matched_tree_report.json"
            pruned = "work/matched_tree_plain.nex"
            rules.append(
                Rule(
                    "match-pam",
                    ["wrangle_matrix", "-r", pam_report, pam, MATCH_PAM_CONFIG, MATCHED_PAM],
                    inputs=[pam, tree, MATCH_PAM_CONFIG],
                    outputs=[MATCHED_PAM, pam_report],
                    category="prepare",
                )
            )
            rules.append(
                Rule(
                    "match-tree",
                    [
                        "wrangle_tree",
                        "-r",
                        tree_report,
                        tree,
                        schema,
                        MATCH_TREE_CONFIG,
                        pruned,
                        "nexus",
                    ],
                    then=[[PYTHON, ANNOTATE_SCRIPT, pruned, MATCHED_TREE]],
                    inputs=[tree, MATCHED_PAM, MATCH_TREE_CONFIG, ANNOTATE_SCRIPT],
                    outputs=[MATCHED_TREE, tree_report],
                    scratch=[pruned],
                    category="prepare",
                )
            )
            pam = MATCHED_PAM
            tree_args = ["--tree_filename", MATCHED_TREE]
            tree_inputs = [MATCHED_TREE]
            for key, names in TESTED_WITH_TREE.items():
                tested[key] += names

        observed = {key: f"outputs/observed_{key}.lmm" for key, _, _ in MATRICES}
        # A rule is sized from its inputs as they are when the stage is written, before the
        # matched PAM exists: the staged PAM, as large, is declared beside it (B10: 321 MB
        # loaded from a 1.8 MB file).
        declared = [*tree_inputs, *([inputs["pam"]] if pam != inputs["pam"] else [])]
        rules.append(
            Rule(
                "stats-observed",
                [
                    PYTHON,
                    CHUNK_SCRIPT,
                    "--observed",
                    *tree_args,
                    pam,
                    *(observed[key] for key, _, _ in MATRICES),
                ],
                then=csv_commands(observed["site_stats"], observed["species_stats"]),
                inputs=[pam, *declared, CHUNK_SCRIPT, STATISTICS_SCRIPT],
                outputs=[
                    *observed.values(),
                    *csv_names(observed["site_stats"], observed["species_stats"]),
                ],
                category="observed",
            )
        )

        chunks = tapering_sizes(
            params["randomizations"], RANDOMIZATIONS_PER_RULE, SMALLEST_CHUNK, CHUNK_SHARE
        )
        files[CHUNK_SCRIPT] = CHUNK_STATS
        files[STATISTICS_SCRIPT] = PAM_STATISTICS
        if chunks:
            files[P_VALUES_SCRIPT] = P_VALUES
            for key in TESTED:
                files[TESTED_CONFIG[key]] = canonical_json(
                    [{"wrangler_type": "SubsetReorderSlicesWrangler", "axes": {"1": tested[key]}}]
                )
            seed_args = [] if params.get("seed") is None else ["--seed", str(params["seed"])]
            counts = {key: [] for key, _, _ in MATRICES}
            diversity_parts = []
            first = 1
            for number, size in enumerate(chunks, start=1):
                rules.append(_chunk_rule(number, first, size, pam, tree_args + seed_args, declared))
                first += size
                for key, _, _ in MATRICES:
                    counts[key].append(f"work/rand-{number:03d}/{key}.lmm")
                diversity_parts.append(f"work/rand-{number:03d}/random_diversity.csv")
            files[P_VALUES_CONFIG], outputs = _p_values_config(params, counts, diversity_parts)
            rules.append(
                Rule(
                    "p-values",
                    [PYTHON, P_VALUES_SCRIPT, P_VALUES_CONFIG],
                    inputs=[
                        P_VALUES_SCRIPT,
                        P_VALUES_CONFIG,
                        *(p for c in counts.values() for p in c),
                        *diversity_parts,
                    ],
                    outputs=outputs,
                    category="p-values",
                )
            )
        figures = _figures(params, observed, tree is not None, bool(chunks), tested)
        written = [o for rule in rules for o in rule.outputs if o.startswith("outputs/")]
        rules.append(report_rule(figures, written))
        files.update(report_files(self.title, self.name, params, inputs, figures, written))

        sources = [*(v for v in inputs.values()), *files]
        makeflow = render_makeflow(rules, CATEGORIES, "observed", sources=sources)
        return Stage(STAGE, makeflow, files)


def _chunk_rule(
    number: int, first: int, size: int, pam: str, options: list[str], declared: list[str]
) -> Rule:
    """Randomized PAMs `first` to `first + size - 1`: their statistics and p-value counts in
    one process (scripts/chunk_stats.py). Only the three count matrices and the randomized
    PAMs' diversity values (a few numbers each, for the report) leave the worker."""
    folder = f"work/rand-{number:03d}"
    counts = [f"{folder}/{key}.lmm" for key, _, _ in MATRICES]
    tested = [TESTED_CONFIG[key] for key, _, _ in MATRICES if key in TESTED]
    diversity = f"{folder}/random_diversity.csv"
    return Rule(
        f"rand-{number:03d}",
        [PYTHON, CHUNK_SCRIPT, *options, str(first), str(size), pam, *tested, *counts, diversity],
        inputs=[pam, *declared, CHUNK_SCRIPT, STATISTICS_SCRIPT, *TESTED_CONFIG.values()],
        outputs=[*counts, diversity],
        category="randomize",
    )


def _p_values_config(
    params: dict, counts: dict[str, list[str]], diversity_parts: list[str]
) -> tuple[str, list[str]]:
    """scripts/p_values.py's configuration, and the files it writes."""
    matrices, outputs = [], []
    for key, _, _ in MATRICES:
        p_values = f"outputs/p_values_{key}.lmm"
        # The diversity matrix is one-dimensional: no significance mask and no CSV for it.
        significance = significance_file(params, f"_{key}") if key in TESTED else None
        written = [p_values, *([significance] if significance else [])]
        matrices.append(
            {
                "counts": counts[key],
                "p_values": p_values,
                "significance": significance,
                "csv": key in TESTED,
            }
        )
        outputs += written + (csv_names(*written) if key in TESTED else [])
    config = {
        "randomizations": params["randomizations"],
        "method": params["p_value_method"],
        "alpha": float(params["alpha"]),
        "matrices": matrices,
        "random_diversity": {"parts": diversity_parts, "output": RANDOM_DIVERSITY},
    }
    return canonical_json(config), [*outputs, RANDOM_DIVERSITY]


def _figures(
    params: dict, observed: dict[str, str], tree: bool, tested_at_all: bool, tested: dict
) -> list[Figure]:
    """The report's figures: every site statistic mapped, the tested ones again masked to
    their significant sites, each species statistic's histogram, and each diversity statistic
    against its null distribution."""
    labels = {**SITE_LABELS, **(SITE_LABELS_WITH_TREE if tree else {})}
    site, species = observed["site_stats"], observed["species_stats"]
    figures = [
        Figure(
            figure_path(f"site {name}"),
            "pam.site_map",
            f"Map of {name} ({label}) at each site of the {'matched ' if tree else ''}PAM, "
            "as calculate_pam_stats computes it; white: no site.",
            [site],
            {
                "matrix": site,
                "statistic": name,
                "label": label,
                "title": f"{name} per site: {label}",
            },
        )
        for name, label in labels.items()
    ]
    if tested_at_all:
        significance = significance_file(params, "_site_stats")
        adjusted = params["p_value_method"] == "bonferroni"
        method = {"fdr": "Benjamini-Hochberg FDR", "bonferroni": "Bonferroni", "raw": "no"}
        for name in tested["site_stats"]:
            figures.append(
                Figure(
                    figure_path(f"significant {name}"),
                    "pam.site_map",
                    f"{name} ({labels[name]}) at the sites where it is significantly higher "
                    f"than under the null model (p <= {params['alpha']} with "
                    f"{method[params['p_value_method']]} correction, "
                    f"{params['randomizations']} randomizations); grey: not significant.",
                    [site, significance],
                    {
                        "matrix": site,
                        "statistic": name,
                        "label": labels[name],
                        "title": f"{name}, significant sites: {labels[name]}",
                        "significance": significance,
                        "adjusted": adjusted,
                        "alpha": params["alpha"],
                    },
                )
            )
    for name, label in SPECIES_LABELS.items():
        figures.append(
            Figure(
                figure_path(f"species {name}"),
                "pam.species_histogram",
                f"Histogram of {name} ({label}) over the species of the "
                f"{'matched ' if tree else ''}PAM.",
                [species],
                {"matrix": species, "statistic": name, "label": label, "title": f"{name}"},
            )
        )
    if tested_at_all:
        for name in DIVERSITY:
            figures.append(
                Figure(
                    figure_path(f"null {name}"),
                    "pam.null_distribution",
                    f"The PAM's {name} (dashed line) against its values on the "
                    f"{params['randomizations']} randomized PAMs (histogram), which keep every "
                    "site's and species' totals (Grady's algorithm).",
                    [observed["diversity"], RANDOM_DIVERSITY],
                    {
                        "observed": observed["diversity"],
                        "random": RANDOM_DIVERSITY,
                        "statistic": name,
                        "title": f"{name}: observed and null distribution",
                    },
                )
            )
    return figures


# The diversity statistics calculate_pam_stats computes (scripts/pam_statistics.py).
DIVERSITY = ["c-score", "lande", "legendre", "num sites", "num species", "whittaker"]


# The worker scripts' text (translators/pam_stats/scripts/), written into the stage.
ANNOTATE_TREE = script_text(__package__, "annotate_tree.py")
# A chunk's randomizations, statistics and p-value counts in one process, with the library calls
# of lmpy's own tools; and the p-values from those counts.
CHUNK_STATS = script_text(__package__, "chunk_stats.py")
PAM_STATISTICS = script_text(__package__, "pam_statistics.py")
P_VALUES = script_text(__package__, "p_values.py")

WORKFLOW = PamStats()
