"""species-pam: occurrences to rare-species models, a presence-absence matrix and its statistics."""

# lmpy 3.1.21, checked by hand on heuchera.csv and ecoregions.tif (arguments as built below):
# - Point() capitalizes every species name (`diplomenziesii` -> `Diplomenziesii`, so it no longer
#   matches the tree tip) and split_occurrence_data names each file `<out_dir>/<key>.csv` with
#   os.path.join: a `/` makes folders, a leading `/` or `..` writes outside out_dir. So a script
#   gathers the records first, keeping names exactly, and gives each species a reversible ASCII
#   key (species_key); the split writes `work/split/<key>.csv` and the real names are decoded
#   from the file names when the second stage is planned.
# - split_occurrence_data never closes a writer early (`self.flush_writers` is not called), so
#   it holds one open file per species: with a soft limit of 256 it fails after ~250 species.
#   The rule raises the soft limit to the hard one first.
# - Per-species wranglers see only consecutive rows of one species: the gathered file is sorted.
# - create_rare_species_model indexes the ecoregions raster with each point's row and column
#   unchecked: a point past the right or bottom edge crashes it, one far left or above wraps
#   around silently. The gathering script drops points outside the raster (same arithmetic).
#   It leaves a 3.9 MB temporary raster and shapefile per run in TMPDIR (never deleted), so each
#   rule points TMPDIR into its own folder and removes it. It takes the raster's nodata for one
#   more ecoregion: a coastal point on a nodata pixel makes the sea in its hull present (Heuchera:
#   216 such records; 60-70% of the Mitella nuda, Tellima and H. glabra models were sea), so a
#   script clears nodata pixels. Models are bytes, 50 inside, 0 outside (its -9999 nodata does not
#   fit a byte), uncompressed (1.9 MB for the 10' world raster): the script compresses (11 KB).
# - encode_layers --min_coverage is a fraction below 1 and a percentage from 1 up (1 means 1%,
#   not 100%): users give a percentage and the argument is written in whichever form means it.
#   Labels go through --config_file (JSON), which also keeps labels starting with `-` from being
#   read as options and keeps the command short; a chunk of layers per rule keeps the encoder's
#   column-by-column concatenation (quadratic) small and runs chunks in parallel.
# - calculate_pam_stats divides by zero on an empty PAM; the PAM is purged of empty sites and
#   species first and a check stops with a readable message if nothing is left.
# - convert_lmm_to_csv writes headers unquoted (a name with a comma shifts columns): CSV files are
#   written by a small script instead. convert_lmm_to_geojson -o crashes on the command line
#   (append + nargs='*' gives a list of lists) but works from --config_file; with -s it pairs
#   matrix rows with grid features by position, wrong once empty sites are purged, so -r is used.
# - create_stat_heatmap divides with `where=` but no `out=`: cells without a site hold leftover
#   memory (seen: 2,283 on a map of richness <= 13) and the colour scale follows; it also has no
#   legend. The report draws the richness map instead (translators/report/scripts/draw_species.py),
#   from the PAM, with a sheet of per-species presence maps.
# - Timings (2 cores): ~0.6-1.5 s start-up per tool; a model ~1.2-1.9 s; encoding ~0.07 s per
#   layer on a 2,450-cell grid.

from __future__ import annotations

from decimal import Decimal

from translators.base import InputSpec, InvalidRequest, Stage, Workflow, canonical_json
from translators.common.args import number_arg
from translators.common.chunks import near_equal_sizes
from translators.common.grid import grid_args, grid_errors
from translators.common.lmpy import PYTHON
from translators.common.scripts import script_text
from translators.common.species_names import species_name
from translators.makeflow import Category, Rule, render_makeflow
from translators.report import CATEGORY as REPORT
from translators.report import REPORT_CATEGORY, Figure, figure_path, report_files, report_rule
from translators.species_pam.schema import MAX_CELLS, PARAMS_SCHEMA

SPLIT, PAM = "split", "pam"
CONFIG = "work/config"
SPLIT_DIR = "work/split"
ECOREGIONS_INPUT = "ecoregions"

PREPARE_SCRIPT = f"{CONFIG}/prepare_occurrences.py"
PREPARE_CONFIG = f"{CONFIG}/prepare_occurrences.json"
SPLIT_WRANGLERS = f"{CONFIG}/split_wranglers.json"
GATHERED = "work/occurrences.csv"
OCCURRENCE_REPORT = "outputs/occurrence_report.json"

FINISH_SCRIPT = f"{CONFIG}/finish_model.py"
CHECK_SCRIPT = f"{CONFIG}/check_pam.py"
CSV_SCRIPT = f"{CONFIG}/lmm_to_csv.py"
PURGE_CONFIG = f"{CONFIG}/purge_empty.json"
PAM_GEOJSON_CONFIG = f"{CONFIG}/pam_geojson.json"
MANIFEST = "outputs/species.json"
GRID = "outputs/grid.shp"
GRID_FILES = tuple(f"outputs/grid.{ext}" for ext in ("shp", "shx", "dbf", "prj"))
ALL_SITES = "work/pam/all_sites.lmm"
PAM_FILE = "outputs/pam.lmm"
PAM_SUMMARY = "outputs/pam_summary.json"
STATS = {
    "diversity": "outputs/diversity.lmm",
    "site_stats": "outputs/site_stats.lmm",
    "species_stats": "outputs/species_stats.lmm",
}

# Layers per encode_layers run: ~7 s of encoding against ~1 s of start-up on a 2,450-cell grid.
LAYERS_PER_ENCODE = 100
# split files are named <key>.csv: keep the name well under 255 bytes (the script drops longer).
KEY_MAX = 200

# What GDAL may open in the rules that use it: rasters, the grid's shapefile, memory copies.
GDAL_DRIVERS = ("GTiff", "ESRI Shapefile", "MEM", "Memory")
CATEGORIES = {
    # The split reads the ecoregions raster's grid to check the request against it.
    "split": Category(cores=1, memory=2048, disk=4096, gdal=("GTiff",)),
    # Peak ~160 MB on the 10-minute world raster (2160 x 900); room for a few times larger.
    "model": Category(cores=1, memory=1024, disk=1024, gdal=GDAL_DRIVERS),
    "grid": Category(cores=1, memory=512, disk=512, gdal=GDAL_DRIVERS),
    "encode": Category(cores=1, memory=2048, disk=2048, gdal=GDAL_DRIVERS),
    "pam": Category(cores=1, memory=2048, disk=2048, gdal=GDAL_DRIVERS),
    REPORT: REPORT_CATEGORY,
}
# The presence sheet's cap: past 100 panels the maps are too small to read (issue 16).
SHEET_SPECIES = 100


def coverage_arg(percent: float) -> str:
    """lmpy divides --min_coverage by 100 only when it is >= 1: pass whichever form means it."""
    if percent >= 1:
        return number_arg(percent)
    return number_arg(float(Decimal(repr(float(percent))) / 100))


class SpeciesPam(Workflow):
    name = "species-pam"
    title = "Species PAM from occurrence records"
    description = (
        "Builds a presence-absence matrix (PAM) from occurrence records. Records are gathered "
        "from every CSV (columns named by species_column, x_column, y_column; names kept exactly, "
        "surrounding spaces removed), points outside the ecoregions raster are dropped, and each "
        "species with at least `min_points` distinct localities gets a rare-species model: the "
        "convex hull of its points (buffered by 0.5 map units) intersected with the ecoregions "
        "its points fall in (never where the raster has no data, such as the sea). Models are "
        "encoded as presence-absence on a grid of square cells (`grid`: min_x < max_x and "
        "min_y < max_y are checked with the request, at most "
        f"{MAX_CELLS:,} cells; occurrences, raster and grid must share the grid's EPSG "
        "projection, checked against the raster before anything is modelled). A species is "
        "present in a cell when at least `min_coverage` percent of the cell is modelled present. "
        "Empty sites and species are removed, then diversity, site and species statistics are "
        "computed. Outputs: the PAM (.lmm, CSV, GeoJSON), statistics (.lmm, CSV; site statistics "
        "also as GeoJSON), the grid shapefile, one model GeoTIFF per species, the species list "
        "(outputs/species.json: file key -> name), reports of the records kept and of the PAM, "
        "and report.html with its figures (outputs/figures/): a species-richness map and a "
        f"sheet of per-species presence maps (at most {SHEET_SPECIES} species: with more, those "
        "present at the most sites)."
    )
    params_schema = PARAMS_SCHEMA
    dataset_inputs = {
        "occurrences": InputSpec(
            formats=("csv",),
            many=True,
            description=(
                "Occurrence records: CSV files with a header row naming the species, x and y "
                "columns; one species may span several files and need not be in consecutive rows."
            ),
            content="occurrences",
        ),
        ECOREGIONS_INPUT: InputSpec(
            formats=("tif",),
            description=(
                "Ecoregions raster (GeoTIFF, one class value per region, with an EPSG code), "
                "covering the occurrences."
            ),
            content="raster",
        ),
    }
    example = {
        "workflow": "species-pam",
        # The 8 species with >= 300 distinct localities: about 30 s on 2 busy cores (min_points
        # 12 gives 59 species and takes about 2.5 minutes).
        "name": "Heuchera PAM, the 8 best-sampled species, 1-degree grid",
        "inputs": {
            "occurrences": ["00000000-0000-0000-0000-000000000001"],
            "ecoregions": "00000000-0000-0000-0000-000000000002",
        },
        "params": {
            "species_column": "species_name",
            "x_column": "x",
            "y_column": "y",
            "grid": {
                "min_x": -130,
                "min_y": 20,
                "max_x": -60,
                "max_y": 55,
                "cell_size": 1,
                "epsg": 4326,
            },
            "min_points": 300,
            "min_coverage": 25,
        },
        "tags": {"project": "heuchera"},
    }

    example_data = {
        "00000000-0000-0000-0000-000000000001": "heuchera/heuchera.csv",
        "00000000-0000-0000-0000-000000000002": "heuchera/ecoregions.tif",
    }

    def validate(self, request) -> None:
        super().validate(request)
        errors = grid_errors(request["params"]["grid"], MAX_CELLS)
        if errors:
            raise InvalidRequest(errors)

    def next_stage(self, params, inputs, done, produced):
        if SPLIT not in done:
            return self._split_stage(params, inputs)
        if PAM not in done:
            return self._pam_stage(params, inputs, species_files(produced.get(SPLIT, [])))
        return None

    def _split_stage(self, params: dict, inputs: dict) -> Stage:
        occurrences = list(inputs["occurrences"])
        ecoregions = inputs[ECOREGIONS_INPUT]
        files = {
            PREPARE_SCRIPT: PREPARE_OCCURRENCES,
            PREPARE_CONFIG: canonical_json(
                {
                    "inputs": occurrences,
                    "species_column": params["species_column"],
                    "x_column": params["x_column"],
                    "y_column": params["y_column"],
                    "ecoregions": ecoregions,
                    "epsg": params["grid"]["epsg"],
                    "min_points": params["min_points"],
                    "key_max": KEY_MAX,
                    "output": GATHERED,
                    "report": OCCURRENCE_REPORT,
                }
            ),
            SPLIT_WRANGLERS: canonical_json(
                [{"wrangler_type": "MinimumPointsWrangler", "minimum_count": params["min_points"]}]
            ),
        }
        split = Rule(
            "split",
            [PYTHON, PREPARE_SCRIPT, PREPARE_CONFIG],
            then=[
                [
                    *RAISE_OPEN_FILES,
                    "split_occurrence_data",
                    "--key_field",
                    "species_key",
                    "--csv",
                    GATHERED,
                    SPLIT_WRANGLERS,
                    "species_name",
                    "x",
                    "y",
                    SPLIT_DIR,
                ]
            ],
            inputs=[*occurrences, ecoregions, PREPARE_SCRIPT, PREPARE_CONFIG, SPLIT_WRANGLERS],
            outputs=[OCCURRENCE_REPORT, SPLIT_DIR],
            scratch=[GATHERED],
            category="split",
        )
        sources = [*occurrences, ecoregions, *files]
        return Stage(SPLIT, render_makeflow([split], CATEGORIES, "split", sources), files)

    def _pam_stage(self, params: dict, inputs: dict, species: dict[str, str]) -> Stage:
        if not species:
            raise ValueError(f"stage {SPLIT} made no species files under {SPLIT_DIR}/")
        ecoregions = inputs[ECOREGIONS_INPUT]
        grid = params["grid"]
        resolution = number_arg(grid["cell_size"])
        files = {
            MANIFEST: canonical_json(species),
            FINISH_SCRIPT: FINISH_MODEL,
            CHECK_SCRIPT: CHECK_PAM,
            CSV_SCRIPT: LMM_TO_CSV,
            PURGE_CONFIG: canonical_json(
                [{"wrangler_type": "PurgeEmptySlicesWrangler", "purge_axes": [0, 1]}]
            ),
            PAM_GEOJSON_CONFIG: canonical_json(
                {
                    "in_lmm_filename": PAM_FILE,
                    "out_geojson_filename": "outputs/pam.geojson",
                    "resolution": grid["cell_size"],
                    # A site lists only the species present in it.
                    "omit_value": [0],
                }
            ),
        }
        rules: list[Rule] = []
        models: list[tuple[str, str]] = []
        width = max(4, len(str(len(species))))
        for number, (key, name) in enumerate(species.items(), start=1):
            rule_id = f"model-{number:0{width}d}"
            folder = f"work/tmp/{rule_id}"
            raw = f"{folder}/model.tif"
            model = f"outputs/models/{key}.tif"
            rules.append(
                Rule(
                    rule_id,
                    [
                        "env",
                        f"TMPDIR={folder}",
                        "create_rare_species_model",
                        f"{SPLIT_DIR}/{key}.csv",
                        ecoregions,
                        raw,
                    ],
                    then=[
                        [PYTHON, FINISH_SCRIPT, raw, ecoregions, model],
                        ["rm", "-rf", "--", folder],
                    ],
                    inputs=[f"{SPLIT_DIR}/{key}.csv", ecoregions, FINISH_SCRIPT],
                    outputs=[model],
                    scratch=[raw],
                    category="model",
                )
            )
            models.append((model, name))

        rules.append(
            Rule(
                "grid",
                [
                    "build_grid",
                    GRID,
                    *grid_args(grid),
                ],
                inputs=[],
                outputs=list(GRID_FILES),
                category="grid",
            )
        )

        encoded = []
        start = 0
        for number, size in enumerate(near_equal_sizes(len(models), LAYERS_PER_ENCODE), start=1):
            chunk = models[start : start + size]
            start += size
            config = f"{CONFIG}/encode-{number:03d}.json"
            target = f"work/pam/encoded-{number:03d}.lmm"
            files[config] = canonical_json({"layer": [[path, name] for path, name in chunk]})
            rules.append(
                Rule(
                    f"encode-{number:03d}",
                    [
                        "encode_layers",
                        "--config_file",
                        config,
                        "-m",
                        "presence_absence",
                        "--min_coverage",
                        coverage_arg(params["min_coverage"]),
                        # Models are 50 inside and 0 outside: any non-zero byte is presence.
                        "--min_presence",
                        "1",
                        "--max_presence",
                        "255",
                        GRID,
                        target,
                    ],
                    inputs=[config, *GRID_FILES, *(path for path, _ in chunk)],
                    outputs=[target],
                    category="encode",
                )
            )
            encoded.append(target)

        # The PAM of every grid cell, then without empty sites and species, checked, as CSV and
        # GeoJSON.
        commands: list[list[str]] = []
        scratch: list[str] = []
        all_sites = encoded[0]
        if len(encoded) > 1:
            all_sites = ALL_SITES
            commands.append(["aggregate_matrices", "concatenate", "1", ALL_SITES, *encoded])
            scratch.append(ALL_SITES)
        commands += [
            ["wrangle_matrix", all_sites, PURGE_CONFIG, PAM_FILE],
            [PYTHON, CHECK_SCRIPT, MANIFEST, all_sites, PAM_FILE, PAM_SUMMARY],
            [PYTHON, CSV_SCRIPT, PAM_FILE, "outputs/pam.csv", "site_id", "x", "y"],
            ["convert_lmm_to_geojson", "--config_file", PAM_GEOJSON_CONFIG],
        ]
        rules.append(
            Rule(
                "pam",
                commands[0],
                then=commands[1:],
                inputs=[
                    *encoded,
                    PURGE_CONFIG,
                    MANIFEST,
                    CHECK_SCRIPT,
                    CSV_SCRIPT,
                    PAM_GEOJSON_CONFIG,
                ],
                outputs=[PAM_FILE, PAM_SUMMARY, "outputs/pam.csv", "outputs/pam.geojson"],
                scratch=scratch,
                category="pam",
            )
        )

        rules.append(
            Rule(
                "stats",
                [
                    "calculate_pam_stats",
                    "--diversity_matrix",
                    STATS["diversity"],
                    "--site_stats_matrix",
                    STATS["site_stats"],
                    "--species_stats_matrix",
                    STATS["species_stats"],
                    PAM_FILE,
                ],
                then=[
                    # The diversity matrix is one-dimensional: no CSV.
                    [
                        PYTHON,
                        CSV_SCRIPT,
                        STATS["site_stats"],
                        "outputs/site_stats.csv",
                        "site_id",
                        "x",
                        "y",
                    ],
                    [
                        PYTHON,
                        CSV_SCRIPT,
                        STATS["species_stats"],
                        "outputs/species_stats.csv",
                        "species",
                    ],
                    [
                        "convert_lmm_to_geojson",
                        "--resolution",
                        resolution,
                        STATS["site_stats"],
                        "outputs/site_stats.geojson",
                    ],
                ],
                inputs=[PAM_FILE, CSV_SCRIPT],
                outputs=[
                    *STATS.values(),
                    "outputs/site_stats.csv",
                    "outputs/species_stats.csv",
                    "outputs/site_stats.geojson",
                ],
                category="pam",
            )
        )
        # The report comes last: it waits for the statistics, whose rule follows every other
        # (models -> encoding -> PAM -> statistics), and reads only the PAM. Waiting on every
        # output instead would send each species' model to the report's worker.
        figures = _figures(grid)
        written = [o for rule in rules for o in rule.outputs if o.startswith("outputs/")]
        rules.append(report_rule(figures, list(STATS.values())))
        files.update(
            report_files(
                self.title, self.name, params, inputs, figures, [*written, OCCURRENCE_REPORT]
            )
        )
        split_files = [f"{SPLIT_DIR}/{key}.csv" for key in species]
        sources = [*_staged(inputs), *files, *split_files]
        return Stage(PAM, render_makeflow(rules, CATEGORIES, "model", sources), files)


def _figures(grid: dict) -> list[Figure]:
    """The report's figures, both drawn from the PAM on its grid's coordinate system."""
    common = {"pam": PAM_FILE, "epsg": grid["epsg"]}
    return [
        Figure(
            figure_path("richness"),
            "species.richness",
            "Species richness: the number of species present at each site of the PAM "
            "(outputs/pam.lmm, empty sites and species removed), mapped on its grid; white: no "
            "site.",
            [PAM_FILE],
            {**common, "label": "richness (species)", "title": "Species richness per site"},
        ),
        Figure(
            figure_path("species presence"),
            "species.presence_sheet",
            "Where each species of the PAM is present: one small map per species, its sites "
            "where present (blue) and the PAM's other sites (grey); white: no site. At most "
            f"{SHEET_SPECIES} species: with more, the {SHEET_SPECIES} present at the most sites, "
            "in name order.",
            [PAM_FILE],
            {**common, "title": "Where each species is present", "limit": SHEET_SPECIES},
        ),
    ]


def species_files(produced: list[str]) -> dict[str, str]:
    """Species key -> name for each file the split stage wrote, in key order."""
    species = {}
    prefix = SPLIT_DIR + "/"
    for path in sorted(produced):
        if not path.startswith(prefix):
            continue
        key = path[len(prefix) :]
        if not key.endswith(".csv"):
            raise ValueError(f"unexpected file from the split: {path!r}")
        species[key[: -len(".csv")]] = species_name(key[: -len(".csv")])
    return species


def _staged(inputs: dict) -> list[str]:
    paths = []
    for value in inputs.values():
        paths.extend(value if isinstance(value, list) else [value])
    return paths


# split_occurrence_data keeps one file open per species (module comment): raise the soft limit
# on open files to the hard one. Arguments reach the tool as "$@", never through the shell text.
RAISE_OPEN_FILES = ("sh", "-c", 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', "sh")

# The worker scripts' text (translators/species_pam/scripts/), written into the stages.
PREPARE_OCCURRENCES = script_text(__package__, "prepare_occurrences.py")
FINISH_MODEL = script_text(__package__, "finish_model.py")
CHECK_PAM = script_text(__package__, "check_pam.py")
LMM_TO_CSV = script_text(__package__, "lmm_to_csv.py")

WORKFLOW = SpeciesPam()
