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
#   legend. A small matplotlib script draws the richness map instead.
# - Timings (2 cores): ~0.6-1.5 s start-up per tool; a model ~1.2-1.9 s; encoding ~0.07 s per
#   layer on a 2,450-cell grid.

from __future__ import annotations

import math
import re
from decimal import Decimal

from translators.base import (
    SCHEMA_DIALECT,
    InputSpec,
    InvalidRequest,
    Stage,
    Workflow,
    canonical_json,
)
from translators.makeflow import Category, Rule, render_makeflow

SPLIT, PAM = "split", "pam"
PYTHON = "python3"
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
MAP_SCRIPT = f"{CONFIG}/map_statistic.py"
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
# Sites of the grid; the global 0.5-degree grid (259,200) fits.
MAX_CELLS = 300_000
COORDINATE_LIMIT = 100_000_000
# split files are named <key>.csv: keep the name well under 255 bytes (the script drops longer).
KEY_MAX = 200
KEY = re.compile(r"^(?:[A-Za-z0-9_]|-[0-9a-f]{2})+$")

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
}

GRID_FIELDS = {
    "min_x": "Western edge (smallest x), in the units of `epsg`.",
    "min_y": "Southern edge (smallest y), in the units of `epsg`.",
    "max_x": "Eastern edge (largest x); must be greater than min_x.",
    "max_y": "Northern edge (largest y); must be greater than min_y.",
}


def species_key(name: str) -> str:
    """The file key of a species name: ASCII letters and digits stay, a space becomes `_`, any
    other character becomes `-` and two hex digits per UTF-8 byte. Reversible (see species_name).
    """
    parts = []
    for char in name:
        if char.isascii() and char.isalnum():
            parts.append(char)
        elif char == " ":
            parts.append("_")
        else:
            parts.extend(f"-{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(parts)


def species_name(key: str) -> str:
    """The species name a key stands for; ValueError if `key` is not a key species_key makes."""
    if not KEY.match(key):
        raise ValueError(f"not a species key: {key!r}")
    data = bytearray()
    position = 0
    while position < len(key):
        char = key[position]
        if char == "-":
            data.append(int(key[position + 1 : position + 3], 16))
            position += 3
        else:
            data.extend(b" " if char == "_" else char.encode("ascii"))
            position += 1
    try:
        name = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"not a species key: {key!r}") from None
    if species_key(name) != key:
        # Only the one spelling species_key writes: two files can never stand for one name.
        raise ValueError(f"not a species key: {key!r}")
    return name


def number_arg(value: float) -> str:
    """Positional decimal text: argparse takes `-1e-05` for an option, `-0.00001` for a number."""
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def coverage_arg(percent: float) -> str:
    """lmpy divides --min_coverage by 100 only when it is >= 1: pass whichever form means it."""
    if percent >= 1:
        return number_arg(percent)
    return number_arg(float(Decimal(repr(float(percent))) / 100))


def grid_cells(grid: dict) -> tuple[int, int]:
    """Columns and rows build_grid makes (np.arange: a last partial cell is kept)."""
    size = grid["cell_size"]
    columns = math.ceil((grid["max_x"] - grid["min_x"]) / size - 1e-9)
    rows = math.ceil((grid["max_y"] - grid["min_y"]) / size - 1e-9)
    return max(columns, 1), max(rows, 1)


def grid_errors(grid: dict) -> list[str]:
    """What the JSON Schema cannot say: edges in order, a bounded cell count, degrees in range."""
    errors = []
    for low, high in (("min_x", "max_x"), ("min_y", "max_y")):
        if grid[low] >= grid[high]:
            errors.append(
                f"params/grid: {low} ({grid[low]}) must be less than {high} ({grid[high]})"
            )
    if grid["epsg"] == 4326:
        for field, limit in (("min_x", 180), ("max_x", 180), ("min_y", 90), ("max_y", 90)):
            if abs(grid[field]) > limit:
                errors.append(
                    f"params/grid: {field} ({grid[field]}) is outside -{limit}..{limit} degrees"
                    " (EPSG:4326)"
                )
    spans = [(grid["max_x"] - grid["min_x"]), (grid["max_y"] - grid["min_y"])]
    spans = [span / grid["cell_size"] for span in spans]
    if not errors and not all(math.isfinite(span) and span <= MAX_CELLS for span in spans):
        # A tiny cell_size (1e-300) makes the cell count infinite: no integer can hold it.
        errors.append(
            f"params/grid/cell_size: {grid['cell_size']} makes more than {MAX_CELLS} cells"
            " (use a larger cell_size or a smaller extent)"
        )
    if not errors:
        columns, rows = grid_cells(grid)
        if columns * rows > MAX_CELLS:
            errors.append(
                f"params/grid: {columns} x {rows} = {columns * rows} cells; at most {MAX_CELLS}"
                " (use a larger cell_size or a smaller extent)"
            )
    return errors


def _sizes(total: int, size: int) -> list[int]:
    """Split `total` into the fewest near-equal parts of at most `size`."""
    if total <= 0:
        return []
    count = math.ceil(total / size)
    base, extra = divmod(total, count)
    return [base + 1 if i < extra else base for i in range(count)]


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
        "also as GeoJSON), a species-richness map (PNG), the grid shapefile, one model GeoTIFF "
        "per species, the species list (outputs/species.json: file key -> name) and reports of "
        "the records kept and of the PAM."
    )
    params_schema = {
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "properties": {
            "species_column": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "default": "species_name",
                "description": "CSV column holding the species name of each record.",
            },
            "x_column": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "default": "x",
                "description": "CSV column holding the x coordinate (longitude in EPSG:4326).",
            },
            "y_column": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "default": "y",
                "description": "CSV column holding the y coordinate (latitude in EPSG:4326).",
            },
            "grid": {
                "type": "object",
                "description": (
                    "The PAM's sites: square cells of `cell_size` from (min_x, min_y) to "
                    "(max_x, max_y), in the projection `epsg` of the occurrences and the "
                    "ecoregions raster. min_x < max_x and min_y < max_y (checked with the "
                    f"request), at most {MAX_CELLS:,} cells; in EPSG:4326, x within -180..180 "
                    "and y within -90..90. A last partial row or column is kept whole."
                ),
                "properties": {
                    **{
                        field: {
                            "type": "number",
                            "minimum": -COORDINATE_LIMIT,
                            "maximum": COORDINATE_LIMIT,
                            "description": text,
                        }
                        for field, text in GRID_FIELDS.items()
                    },
                    "cell_size": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": COORDINATE_LIMIT,
                        "description": "Side of a cell, in the units of `epsg` (degrees for 4326).",
                    },
                    "epsg": {
                        "type": "integer",
                        "minimum": 1024,
                        "maximum": 999999,
                        "description": (
                            "EPSG code of the grid; the ecoregions raster must use the same."
                        ),
                    },
                },
                "required": ["min_x", "min_y", "max_x", "max_y", "cell_size", "epsg"],
                "additionalProperties": False,
            },
            "min_points": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "default": 3,
                "description": (
                    "Species with fewer distinct localities (inside the ecoregions raster) "
                    "are left out; one or two points still make a model (a buffered point or "
                    "line)."
                ),
            },
            "min_coverage": {
                "type": "number",
                "minimum": 0,
                "maximum": 100,
                "default": 25,
                "description": (
                    "Percentage of a grid cell's model pixels that must be present for the "
                    "species to count as present in the cell; 0 means any one pixel."
                ),
            },
        },
        "required": ["grid"],
        "additionalProperties": False,
    }
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
        errors = grid_errors(request["params"]["grid"])
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
            MAP_SCRIPT: MAP_STATISTIC,
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
                    *(number_arg(grid[f]) for f in ("min_x", "min_y", "max_x", "max_y")),
                    resolution,
                    str(grid["epsg"]),
                ],
                inputs=[],
                outputs=list(GRID_FILES),
                category="grid",
            )
        )

        encoded = []
        start = 0
        for number, size in enumerate(_sizes(len(models), LAYERS_PER_ENCODE), start=1):
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
                        PYTHON,
                        MAP_SCRIPT,
                        "outputs/richness.png",
                        STATS["site_stats"],
                        "alpha",
                        "Species richness (alpha)",
                        *(number_arg(grid[f]) for f in ("min_x", "min_y", "max_x", "max_y")),
                        resolution,
                    ],
                    [
                        "convert_lmm_to_geojson",
                        "--resolution",
                        resolution,
                        STATS["site_stats"],
                        "outputs/site_stats.geojson",
                    ],
                ],
                inputs=[PAM_FILE, CSV_SCRIPT, MAP_SCRIPT],
                outputs=[
                    *STATS.values(),
                    "outputs/site_stats.csv",
                    "outputs/species_stats.csv",
                    "outputs/richness.png",
                    "outputs/site_stats.geojson",
                ],
                category="pam",
            )
        )
        split_files = [f"{SPLIT_DIR}/{key}.csv" for key in species]
        sources = [*_staged(inputs), *files, *split_files]
        return Stage(PAM, render_makeflow(rules, CATEGORIES, "model", sources), files)


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

PREPARE_OCCURRENCES = '''\
"""Gather occurrence CSVs into one file for split_occurrence_data, one block per species.

Names are kept exactly (surrounding spaces removed). Each species gets a key that is also its
file name (see species_key); rows carry a plain ordinal as species_name, because lmpy
capitalizes that column. Points outside the ecoregions raster and repeated localities of a
species are dropped; a JSON report says how many and why.
"""

import csv
import json
import math
import resource
import sys

from osgeo import gdal, osr

# Besides one file per species, split_occurrence_data needs a few of its own.
OPEN_FILE_MARGIN = 64


def species_key(name):
    parts = []
    for char in name:
        if char.isascii() and char.isalnum():
            parts.append(char)
        elif char == " ":
            parts.append("_")
        else:
            parts.extend(f"-{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(parts)


def fail(message):
    print(f"prepare_occurrences: {message}", file=sys.stderr)
    sys.exit(2)


def raster_test(path, epsg):
    """A function telling whether create_rare_species_model can index a point (its arithmetic)."""
    gdal.UseExceptions()
    dataset = gdal.Open(path)
    code = osr.SpatialReference(wkt=dataset.GetProjection()).GetAttrValue("AUTHORITY", 1)
    if code is None or not code.isdigit():
        fail(f"the ecoregions raster has no EPSG code ({path}); lmpy needs one")
    if int(code) != epsg:
        fail(f"the ecoregions raster is in EPSG:{code} but grid.epsg is {epsg}: use one projection")
    min_x, cell_size, _, max_y, _, _ = dataset.GetGeoTransform()
    columns, rows = dataset.RasterXSize, dataset.RasterYSize

    def inside(x, y):
        column = int((x - min_x) / cell_size)
        row = int((max_y - y) / cell_size)
        return 0 <= column < columns and 0 <= row < rows

    return inside


def main(config_path):
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    inside = raster_test(config["ecoregions"], config["epsg"])
    wanted = [config[k] for k in ("species_column", "x_column", "y_column")]
    localities = {}
    dropped = dict.fromkeys(
        [
            "row too short",
            "no species name",
            "coordinates not numbers",
            "outside the ecoregions raster",
            "repeated locality",
        ],
        0,
    )
    files = []
    for path in config["inputs"]:
        records = 0
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in wanted if name not in header]
            if missing:
                fail(f"{path} has no column {missing[0]!r} (it has: {', '.join(header[:20])})")
            positions = [header.index(name) for name in wanted]
            for row in reader:
                records += 1
                if len(row) <= max(positions):
                    dropped["row too short"] += 1
                    continue
                name, x, y = (row[p] for p in positions)
                name = name.strip()
                if not name:
                    dropped["no species name"] += 1
                    continue
                try:
                    x, y = float(x), float(y)
                except ValueError:
                    dropped["coordinates not numbers"] += 1
                    continue
                if not (math.isfinite(x) and math.isfinite(y)):
                    dropped["coordinates not numbers"] += 1
                    continue
                if not inside(x, y):
                    dropped["outside the ecoregions raster"] += 1
                    continue
                points = localities.setdefault(name, {})
                if (x, y) in points:
                    dropped["repeated locality"] += 1
                else:
                    points[(x, y)] = None
        files.append({"file": path, "records": records})

    minimum = config["min_points"]
    keys, too_long = {}, []
    for name in localities:
        key = species_key(name)
        if len(key) > config["key_max"]:
            too_long.append(name)
        else:
            keys[name] = key
    kept = sorted((n for n in keys if len(localities[n]) >= minimum), key=keys.get)
    report = {
        "files": files,
        "records": sum(f["records"] for f in files),
        "dropped": dropped,
        "min_points": minimum,
        "species": {n: len(localities[n]) for n in sorted(localities)},
        "species_modelled": len(kept),
        "species_below_min_points": sorted(n for n in keys if len(localities[n]) < minimum),
        "species_names_too_long": sorted(too_long),
    }
    with open(config["report"], "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
        handle.write("\\n")
    print(
        f"{report['records']} records, {len(localities)} species, {len(kept)} with at least "
        f"{minimum} distinct localities; dropped: {dropped}"
    )
    if not kept:
        fail(
            f"no species has at least {minimum} distinct localities inside the ecoregions "
            f"raster (see {config['report']})"
        )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and len(kept) + OPEN_FILE_MARGIN > hard:
        fail(f"{len(kept)} species need more open files than this worker allows ({hard})")

    with open(config["output"], "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["species_name", "x", "y", "species_key"])
        for number, name in enumerate(sorted(keys, key=keys.get), start=1):
            for x, y in localities[name]:
                writer.writerow([f"S{number:07d}", repr(x), repr(y), keys[name]])


if __name__ == "__main__":
    main(sys.argv[1])
'''

FINISH_MODEL = '''\
"""Finish a rare-species model: clear pixels where the ecoregions raster has no data, compress.

create_rare_species_model takes the ecoregions' nodata value for one more ecoregion, so a point on
a nodata pixel (a coastal record falling on the sea) makes all the sea inside its hull present.
It also writes the model uncompressed. Arguments: raw model, ecoregions raster, model to write.
"""

import sys

from osgeo import gdal

gdal.UseExceptions()
raw_path, ecoregions_path, model_path = sys.argv[1:4]
# Keep each dataset in a name: a band whose dataset is collected crashes GDAL's bindings.
raw = gdal.Open(raw_path)
model = gdal.GetDriverByName("MEM").CreateCopy("", raw)
band = model.GetRasterBand(1)
data = band.ReadAsArray()
regions = gdal.Open(ecoregions_path)
nodata = regions.GetRasterBand(1).GetNoDataValue()
if nodata is not None:
    data[regions.GetRasterBand(1).ReadAsArray() == nodata] = 0
    band.WriteArray(data)
gdal.GetDriverByName("GTiff").CreateCopy(
    model_path, model, options=["COMPRESS=DEFLATE", "PREDICTOR=2", "TILED=YES"]
)
'''

CHECK_PAM = '''\
"""Summarize the PAM, and stop with a readable message when no species is present anywhere.

Arguments: species manifest (key -> name), PAM of every grid cell, purged PAM, summary to write.
species_not_in_pam lists modelled species present in no cell: outside the grid, or below
min_coverage in every cell.
"""

import json
import sys
import zipfile


def headers(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("headers.json"))["headers"]


manifest_path, all_sites_path, pam_path, summary_path = sys.argv[1:5]
with open(manifest_path, encoding="utf-8") as handle:
    modelled = sorted(json.load(handle).values())
all_sites, pam = headers(all_sites_path), headers(pam_path)
present = set(pam.get("1") or [])
summary = {
    "grid_cells": len(all_sites.get("0") or []),
    "species_modelled": len(modelled),
    "sites": len(pam.get("0") or []),
    "species": len(present),
    "species_not_in_pam": [name for name in modelled if name not in present],
}
with open(summary_path, "w", encoding="utf-8") as handle:
    json.dump(summary, handle, indent=2, ensure_ascii=False)
    handle.write("\\n")
print(json.dumps({k: v for k, v in summary.items() if k != "species_not_in_pam"}))
if not present or not summary["sites"]:
    print(
        "check_pam: no species is present in any grid cell. Check that the grid covers the "
        "occurrences in the ecoregions raster's projection, or lower min_coverage.",
        file=sys.stderr,
    )
    sys.exit(3)
'''

LMM_TO_CSV = '''\
"""Write a 2-D lmpy matrix as CSV with proper quoting (lmpy leaves header cells unquoted).

Arguments: matrix, CSV to write, then names for the row-header columns (e.g. site_id x y).
"""

import csv
import io
import json
import sys
import zipfile

import numpy as np


def text(value):
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


matrix_path, csv_path, *labels = sys.argv[1:]
with zipfile.ZipFile(matrix_path) as archive:
    headers = json.loads(archive.read("headers.json"))["headers"]
    arrays = np.load(io.BytesIO(archive.read("data.npz")), allow_pickle=False)
    data = arrays[arrays.files[0]]
rows = headers.get("0") or [[] for _ in range(data.shape[0])]
with open(csv_path, "w", encoding="utf-8", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow([*labels, *headers.get("1", [])])
    for header, values in zip(rows, data, strict=True):
        cells = header if isinstance(header, list) else [header]
        writer.writerow([*cells, *(text(v) for v in values)])
'''

MAP_STATISTIC = '''\
"""Map one site statistic as a PNG with a colour scale: the mean over the sites in each cell.

Stands in for lmpy's create_stat_heatmap, which divides with `where=` but no `out=`: cells
holding no site (all of them once empty sites are purged) get whatever memory held, which also
wrecks the colour scale. Arguments: PNG, matrix, statistic, title, min_x min_y max_x max_y size.
"""

import io
import json
import math
import sys
import zipfile

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plot_path, matrix_path, statistic, title = sys.argv[1:5]
min_x, min_y, max_x, max_y, size = (float(v) for v in sys.argv[5:10])
with zipfile.ZipFile(matrix_path) as archive:
    headers = json.loads(archive.read("headers.json"))["headers"]
    arrays = np.load(io.BytesIO(archive.read("data.npz")), allow_pickle=False)
    data = arrays[arrays.files[0]]
values = data[:, headers["1"].index(statistic)]
# Cells as build_grid makes them: a last partial row or column is a whole cell.
rows = max(1, math.ceil((max_y - min_y) / size - 1e-9))
columns = max(1, math.ceil((max_x - min_x) / size - 1e-9))
total, hits = np.zeros((rows, columns)), np.zeros((rows, columns))
for (_, x, y), value in zip(headers["0"], values, strict=True):
    row = min(rows - 1, max(0, int((max_y - y) // size)))
    column = min(columns - 1, max(0, int((x - min_x) // size)))
    total[row, column] += value
    hits[row, column] += 1
mean = np.divide(total, hits, out=np.full_like(total, np.nan), where=hits > 0)
figure, axes = plt.subplots(figsize=(8, 8 * max(0.3, min(2.0, rows / columns))))
extent = (min_x, min_x + columns * size, max_y - rows * size, max_y)
image = axes.imshow(np.ma.masked_invalid(mean), extent=extent, cmap="Reds", interpolation="nearest")
figure.colorbar(image, ax=axes, label=statistic, shrink=0.8)
axes.set_title(title)
axes.set_xlabel("x")
axes.set_ylabel("y")
figure.savefig(plot_path, dpi=100, bbox_inches="tight")
'''

WORKFLOW = SpeciesPam()
