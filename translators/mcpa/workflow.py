"""mcpa: metacommunity phylogenetics analysis (MCPA) of a PAM, tested against randomized PAMs."""

# lmpy 3.1.21, checked by hand on the Heuchera PAM, tree, hypotheses and ecoregions raster (the
# example request; commands as built below, run by makeflow -T local):
# - mcpa_run is not used. lmpy.statistics.mcpa's _beta_helper fills only the entries (i, j >= i)
#   of an np.empty array, so every regression on two predictors or more (the biogeographic one
#   always has) inverts uninitialized memory: two runs on the same files differ. It also clips
#   F-values to [-1, 1] (10 of the Heuchera observed ones: a clipped F is never exceeded, p = 0)
#   and leaves singular nodes to rounding: zeros in one run, F-values of 1e4 in the next.
#   scripts/mcpa_steps.py runs lmpy's per-node MCPA with the helper replaced, F unclipped, and nodes
#   whose sites leave a predictor constant or collinear (decided by rank) as NaN; its values
#   match a plain weighted least-squares fit (tests). Heuchera: 25 of 44 nodes can be fitted.
# - encode_layers -m biogeo drops the attribute of --layer (every polygon burns one value: a
#   two-sided hypothesis becomes one region against the rest) and --min_coverage does nothing
#   (its counts start at 0). mcpa_steps.py calls the same LayerEncoder with the attribute, reading
#   the shapefiles inside the zip through /vsizip/: one contrast column (-1/+1, 0 outside) per
#   two-valued shapefile, one column per value otherwise, signs drawn at random (seeded).
# - encode_layers -m mean_value writes the raster's own nodata value (NaN if it has none) where a
#   cell has no data; nothing is reprojected: layers must use the grid's coordinates.
# - mcpa needs the environment and biogeography rows to be the PAM's sites, in its order: the
#   PAM's occupied sites are matched to grid cells by centre (a PAM without its empty sites and a
#   grid covering only the occupied ones both work); empty sites and sites without environment
#   values are dropped from all three; constant predictor columns (every node singular) are
#   dropped and reported, collinear ones refused. Cells straddling a hypothesis border may fall
#   on either side with another grid extent (lmpy's windowing): 1 of 2,114 Heuchera sites.
# - encode_tree_mcpa needs a binary, ultrametric tree with exactly the PAM's species (else "PAM
#   and Tree do not match"): they are matched first, purging only species columns. It draws node
#   signs with unseeded numpy: semi-partial signs vary between runs, F-values do not.
# - calculate_p_values counts random > observed strictly, and cannot compare a 3-D observed
#   matrix (what mcpa_run writes) with a stack (ValueError: non-broadcastable): observed F-values
#   are 2-D (nodes x predictors), random ones are stacked on axis 2. It is given a copy of the
#   observed F with unfit nodes as -inf (p = 1), and random unfit F as +inf (counted as
#   exceeding: p errs high, never low; Heuchera: 1 fitted node has a few unfit random runs).
# - Costs on the 2-core build box, shared (load 3.5-4.7): tool start-up 1-2 s; build_grid 4 s for
#   the example's 14,476 cells (7-13 s for the global 54,000); encoding the ecoregions raster
#   15 s, the three hypotheses 17-22 s (30 s and 18-48 s on the global grid); per randomization
#   ~0.5 s randomize_pam and ~0.6 s MCPA (1.2 s with two rasters). The report rule (one heatmap
#   of 44 nodes x 6 columns) 1.0 s CPU, 92 MB peak (tests/translators/test_report_mcpa.py).

from __future__ import annotations

from translators.base import InputSpec, InvalidRequest, Stage, Workflow, canonical_json
from translators.common.chunks import near_equal_sizes
from translators.common.grid import GRID_KEYS, grid_args, grid_errors
from translators.common.lmpy import PYTHON, TREE_SCHEMAS, csv_commands, csv_names
from translators.common.p_values import p_values_command, significance_file
from translators.common.scripts import script_text
from translators.makeflow import Category, Rule, render_makeflow
from translators.mcpa.schema import MAX_GRID_CELLS, PARAMS_SCHEMA
from translators.report import CATEGORY as REPORT
from translators.report import REPORT_CATEGORY, Figure, figure_path, report_files, report_rule

STAGE = "main"
# A chunk rule pays two start-ups (randomize_pam, the MCPA script: ~3 s) against 1-2 s per
# randomization on the Heuchera data: with 20 a rule runs 25-45 s, the fixed part under 15%, and
# 10,000 permutations make 500 rules.
RANDOMIZATIONS_PER_RULE = 20

CONFIG = "work/config"
MATCH_PAM_CONFIG = f"{CONFIG}/match_pam.json"
MATCH_TREE_CONFIG = f"{CONFIG}/match_tree.json"
STEPS = f"{CONFIG}/mcpa_steps.py"

GRID = "work/grid/grid.shp"
GRID_FILES = [GRID.removesuffix(".shp") + ext for ext in (".shp", ".shx", ".dbf", ".prj")]
ENV_ENCODED = "work/environment_encoded.lmm"
ENV_GRID = "work/environment_grid.lmm"
BG_GRID = "work/biogeography_grid.lmm"
SITE_PAM = "work/site_pam.lmm"
ENVIRONMENT = "outputs/environment.lmm"
BIOGEOGRAPHY = "outputs/biogeography.lmm"
HYPOTHESES_REPORT = "outputs/hypotheses_report.json"
SITES_REPORT = "outputs/sites_report.json"
MATCHED_PAM = "outputs/matched_pam.lmm"
MATCHED_TREE = "outputs/matched_tree.nex"
TREE_MATRIX = "outputs/tree_matrix.lmm"
OBSERVED = "outputs/mcpa_observed.lmm"
F_VALUES = "outputs/mcpa_f_values.lmm"
F_TESTED = "work/f_values_tested.lmm"
P_VALUES = "outputs/p_values.lmm"

# What GDAL may open in the rules that use it: rasters, the grid's shapefile, memory copies.
GDAL_DRIVERS = ("GTiff", "ESRI Shapefile", "MEM", "Memory")
CATEGORIES = {
    "prepare": Category(cores=1, memory=1024, disk=1024, gdal=GDAL_DRIVERS),
    # The hypotheses' shapefiles are read inside their zip (/vsizip/, one level, local file).
    "encode": Category(cores=1, memory=4096, disk=4096, gdal=GDAL_DRIVERS, vsi=("/vsizip/",)),
    "observed": Category(cores=1, memory=2048, disk=1024),
    "randomize": Category(cores=1, memory=2048, disk=2048),
    "p-values": Category(cores=1, memory=2048, disk=2048),
    REPORT: REPORT_CATEGORY,
}


class Mcpa(Workflow):
    name = "mcpa"
    title = "Metacommunity phylogenetics analysis (MCPA) with a null model"
    description = (
        "Relates the phylogeny of a PAM's species to environment and biogeographic history "
        "(Leibold, Economo and Peres-Neto 2010). Environment rasters are encoded as mean values "
        "and hypothesis shapefiles as contrasts (-1/+1 for the two sides split by "
        "`hypothesis_field`, 0 outside) on the grid the PAM was built on; empty sites and sites "
        "without environment values are left out. The PAM (.lmm) and the tree are matched "
        "(species missing from either are dropped) and the tree is encoded by node. For each "
        "node, MCPA gives semi-partial correlations and adjusted R-squared (observed values) "
        "and pseudo-F values for every predictor; nodes whose sites leave a predictor constant "
        "cannot be fitted (NaN, p = 1). With `permutations` > 0, the F-values are recomputed on "
        "randomized PAMs that keep every site's and species' totals; each gets an empirical "
        "p-value (share of random F strictly greater) and a significance mask at `alpha` (fdr "
        "or raw) or bonferroni-adjusted p-values. Results are lmpy matrices (.lmm) and CSV."
    )
    params_schema = PARAMS_SCHEMA
    dataset_inputs = {
        "pam": InputSpec(
            formats=("lmm",),
            description="Presence-absence matrix built on `grid`: sites are rows, species columns.",
            content="pam",
        ),
        "tree": InputSpec(
            formats=tuple(TREE_SCHEMAS),
            description="Binary, ultrametric phylogeny whose tips are the PAM's species names.",
            content="tree",
        ),
        "environment": InputSpec(
            formats=("tif",),
            many=True,
            description="Environment rasters, one predictor each, labelled environment-0, -1...",
            content="raster",
        ),
        "hypotheses": InputSpec(
            formats=("zip",),
            description="Zip of biogeographic hypothesis shapefiles (.shp with .shx, .dbf).",
            content="shapefiles",
        ),
    }
    example = {
        "workflow": "mcpa",
        "name": "Heuchera MCPA: ecoregions and three hypotheses, 20 permutations",
        "inputs": {
            "pam": "00000000-0000-0000-0000-000000000001",
            "tree": "00000000-0000-0000-0000-000000000002",
            "environment": ["00000000-0000-0000-0000-000000000003"],
            "hypotheses": "00000000-0000-0000-0000-000000000004",
        },
        "params": {
            # The Heuchera PAM's 1-degree grid (-180 -60 180 90) cut to its occupied sites.
            "grid": {
                "min_x": -163,
                "min_y": 17,
                "max_x": 145,
                "max_y": 64,
                "cell_size": 1,
                "epsg": 4326,
            },
            "permutations": 20,
            "hypothesis_field": "hypSide",
            "p_value_method": "fdr",
            "alpha": 0.05,
        },
        "tags": {"project": "heuchera"},
    }
    # The hypotheses are a folder of shapefiles in the sample data: upload it zipped.
    example_data = {
        "00000000-0000-0000-0000-000000000001": "heuchera/heuchera_rfolk_1deg_global_noempties.lmm",
        "00000000-0000-0000-0000-000000000002": "heuchera/heuchera.nex",
        "00000000-0000-0000-0000-000000000003": "heuchera/ecoregions.tif",
        "00000000-0000-0000-0000-000000000004": "heuchera/hypotheses",
    }

    def validate(self, request) -> None:
        super().validate(request)
        _check_grid(request["params"]["grid"])  # at submission too, not only when planning

    def next_stage(self, params, inputs, done, produced):
        if STAGE in done:
            return None
        grid = _check_grid(params["grid"])
        pam, tree, rasters = inputs["pam"], inputs["tree"], inputs["environment"]
        hypotheses = inputs["hypotheses"]
        schema = TREE_SCHEMAS[tree.rpartition(".")[2].lower()]
        files = {
            MATCH_PAM_CONFIG: canonical_json(
                [
                    {"wrangler_type": "MatchTreeMatrixWrangler", "tree": tree, "species_axis": 1},
                    # Only species: the sites must stay those of the encoded matrices.
                    {"wrangler_type": "PurgeEmptySlicesWrangler", "purge_axes": [1]},
                ]
            ),
            MATCH_TREE_CONFIG: canonical_json(
                [
                    {
                        "wrangler_type": "MatchMatrixTreeWrangler",
                        "matrix": MATCHED_PAM,
                        "species_axis": 1,
                    }
                ]
            ),
            STEPS: STEPS_SCRIPT,
        }
        layers = []
        for index, raster in enumerate(rasters):
            # Named by position (as staged and as validation errors name them): a label from a
            # file name could start with "-", which encode_layers would take for an option.
            layers += ["--layer", raster, f"environment-{index}"]
        rules = [
            Rule(
                "grid",
                ["build_grid", GRID, *grid.values()],
                inputs=[],
                outputs=GRID_FILES,
                category="prepare",
            ),
            Rule(
                "encode-environment",
                ["encode_layers", "-m", "mean_value", GRID, ENV_ENCODED, *layers],
                then=[[PYTHON, STEPS, "nodata", ENV_ENCODED, ENV_GRID, *rasters]],
                inputs=[*GRID_FILES, *rasters, STEPS],
                outputs=[ENV_GRID],
                scratch=[ENV_ENCODED],
                category="encode",
            ),
            Rule(
                "encode-hypotheses",
                [
                    PYTHON,
                    STEPS,
                    "hypotheses",
                    GRID,
                    hypotheses,
                    params["hypothesis_field"],
                    BG_GRID,
                    HYPOTHESES_REPORT,
                ],
                inputs=[*GRID_FILES, hypotheses, STEPS],
                outputs=[BG_GRID, HYPOTHESES_REPORT],
                category="encode",
            ),
            Rule(
                "align-sites",
                [
                    PYTHON,
                    STEPS,
                    "align",
                    pam,
                    ENV_GRID,
                    BG_GRID,
                    grid["min_x"],
                    grid["max_y"],
                    grid["cell_size"],
                    SITE_PAM,
                    ENVIRONMENT,
                    BIOGEOGRAPHY,
                    SITES_REPORT,
                ],
                then=csv_commands(ENVIRONMENT, BIOGEOGRAPHY),
                inputs=[pam, ENV_GRID, BG_GRID, STEPS],
                outputs=[
                    SITE_PAM,
                    ENVIRONMENT,
                    BIOGEOGRAPHY,
                    SITES_REPORT,
                    *csv_names(ENVIRONMENT, BIOGEOGRAPHY),
                ],
                category="prepare",
            ),
            Rule(
                "match-pam",
                [
                    "wrangle_matrix",
                    "-r",
                    "outputs/matched_pam_report.json",
                    SITE_PAM,
                    MATCH_PAM_CONFIG,
                    MATCHED_PAM,
                ],
                inputs=[SITE_PAM, tree, MATCH_PAM_CONFIG],
                outputs=[MATCHED_PAM, "outputs/matched_pam_report.json"],
                category="prepare",
            ),
            Rule(
                "match-tree",
                [
                    "wrangle_tree",
                    "-r",
                    "outputs/matched_tree_report.json",
                    tree,
                    schema,
                    MATCH_TREE_CONFIG,
                    MATCHED_TREE,
                    "nexus",
                ],
                then=[
                    ["encode_tree_mcpa", MATCHED_TREE, "nexus", MATCHED_PAM, TREE_MATRIX],
                    *csv_commands(TREE_MATRIX),
                ],
                inputs=[tree, MATCHED_PAM, MATCH_TREE_CONFIG],
                outputs=[
                    MATCHED_TREE,
                    "outputs/matched_tree_report.json",
                    TREE_MATRIX,
                    *csv_names(TREE_MATRIX),
                ],
                category="prepare",
            ),
            Rule(
                "mcpa-observed",
                [
                    PYTHON,
                    STEPS,
                    "observed",
                    MATCHED_PAM,
                    TREE_MATRIX,
                    ENVIRONMENT,
                    BIOGEOGRAPHY,
                    OBSERVED,
                    F_VALUES,
                    F_TESTED,
                ],
                then=csv_commands(OBSERVED, F_VALUES),
                inputs=[MATCHED_PAM, TREE_MATRIX, ENVIRONMENT, BIOGEOGRAPHY, STEPS],
                outputs=[OBSERVED, F_VALUES, F_TESTED, *csv_names(OBSERVED, F_VALUES)],
                category="observed",
            ),
        ]
        chunks = near_equal_sizes(params["permutations"], RANDOMIZATIONS_PER_RULE)
        stacks = []
        for number, size in enumerate(chunks, start=1):
            rules.append(_chunk_rule(number, size))
            stacks.append(f"work/rand-{number:03d}/f_values.lmm")
        if chunks:
            rules.append(_p_values_rule(stacks, params))
        figures = _figures(params, tested=bool(chunks))
        written = [o for rule in rules for o in rule.outputs if o.startswith("outputs/")]
        rules.append(report_rule(figures, written))
        files.update(report_files(self.title, self.name, params, inputs, figures, written))
        sources = [pam, tree, *rasters, hypotheses, *files]
        makeflow = render_makeflow(rules, CATEGORIES, "prepare", sources=sources)
        return Stage(STAGE, makeflow, files)


def _check_grid(grid: dict) -> dict[str, str]:
    """The grid's build_grid arguments, once its bounds make sense (the schema cannot say)."""
    errors = grid_errors(grid, MAX_GRID_CELLS)
    if errors:
        raise InvalidRequest(errors)
    return dict(zip(GRID_KEYS, grid_args(grid), strict=True))


def _chunk_rule(number: int, size: int) -> Rule:
    """Randomize `size` PAMs and stack their F-values, all in one sandbox."""
    folder = f"work/rand-{number:03d}"
    digits = len(str(size))
    random_pams = [f"{folder}/pam-{i:0{digits}d}.lmm" for i in range(1, size + 1)]
    stack = f"{folder}/f_values.lmm"
    return Rule(
        f"rand-{number:03d}",
        ["randomize_pam", MATCHED_PAM, *random_pams],
        then=[
            [PYTHON, STEPS, "random", TREE_MATRIX, ENVIRONMENT, BIOGEOGRAPHY, stack, *random_pams]
        ],
        inputs=[MATCHED_PAM, TREE_MATRIX, ENVIRONMENT, BIOGEOGRAPHY, STEPS],
        outputs=[stack],
        scratch=random_pams,
        category="randomize",
    )


def _p_values_rule(stacks: list[str], params: dict) -> Rule:
    significance = significance_file(params)
    return Rule(
        "p-values",
        p_values_command(params, significance, P_VALUES, F_TESTED, stacks),
        then=csv_commands(P_VALUES, significance),
        inputs=[F_TESTED, *stacks],
        outputs=[P_VALUES, significance, *csv_names(P_VALUES, significance)],
        category="p-values",
    )


def _figures(params: dict, tested: bool) -> list[Figure]:
    """The report's figure: the observed values as a node by predictor heatmap, the cells whose
    F-value tests significant marked when there are permutations."""
    caption = (
        "Observed MCPA values of each tree node (clade) of the matched tree for each predictor: "
        "semi-partial correlations of the environment and biogeography columns and the adjusted "
        "R-squared of each group (Leibold, Economo and Peres-Neto 2010). A semi-partial "
        "correlation's sign follows the sign encode_tree_mcpa drew for the node's two sides "
        "(unseeded): read its size. Grey: the node's sites leave a predictor constant or "
        "collinear (not fitted)."
    )
    args = {
        "matrix": OBSERVED,
        "tree": TREE_MATRIX,
        "label": "semi-partial correlation\nor adjusted R-squared (unitless)",
        "title": "MCPA observed values by clade and predictor",
        "symmetric": True,
    }
    inputs = [OBSERVED, TREE_MATRIX]
    if tested:
        significance = significance_file(params)
        method = {"fdr": "Benjamini-Hochberg FDR", "bonferroni": "Bonferroni", "raw": "no"}
        caption += (
            " Dots: cells whose pseudo-F is significantly higher than on "
            f"{params['permutations']} randomized PAMs (p, the share of random F-values "
            f"strictly greater, <= {params['alpha']} with {method[params['p_value_method']]} "
            "correction)."
        )
        args |= {
            "significance": significance,
            "adjusted": params["p_value_method"] == "bonferroni",
            "alpha": params["alpha"],
        }
        inputs.append(significance)
    return [Figure(figure_path("mcpa observed"), "mcpa.heatmap", caption, inputs, args)]


# The worker script's text (translators/mcpa/scripts/mcpa_steps.py), written into the stage.
STEPS_SCRIPT = script_text(__package__, "mcpa_steps.py")

WORKFLOW = Mcpa()
