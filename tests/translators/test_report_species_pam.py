"""species-pam's report: the richness map and the presence sheet, drawn from the PAM they show.

The PAM stage's other rules need lmpy's tools and GDAL rasters: these tests write the PAM
(outputs/pam.lmm) themselves and run only the report rule's command, as a worker would."""

import re
import subprocess

import numpy as np
from PIL import Image
from support import write_lmm
from test_report import load
from test_translators_species_pam import plan_pam

from tests.support.stages import run_measured, tool_path_env
from translators.report import FIGURES, REPORT
from translators.species_pam import workflow as species_pam

RICHNESS = "outputs/figures/richness.png"
SHEET = "outputs/figures/species-presence.png"


def grid_pam(present, columns, *, origin=(-120.0, 20.0), size=1.0):
    """(rows, x, y) of a PAM whose sites fill `columns` cells a row from the north-west corner
    of a grid of `size` cells (site i in row i // columns), one row of headers per site."""
    xs = origin[0] + size * (np.arange(len(present)) % columns + 0.5)
    ys = origin[1] - size * (np.arange(len(present)) // columns + 0.5)
    rows = [[i, float(x), float(y)] for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    return rows, xs, ys


def run_report(folder, names, present, rows, **params):
    """The PAM stage planned for `names`, its files written, outputs/pam.lmm from `present`
    (sites x species) and `rows`, then the report rule alone. Returns the report rule."""
    stage = plan_pam(names, **params)
    for name, text in stage.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    write_lmm(folder / species_pam.PAM_FILE, np.asarray(present, dtype=float), rows, names)
    (rule,) = [r for r in stage.makeflow["rules"] if REPORT in r["outputs"]]
    done = subprocess.run(
        ["/bin/sh", "-c", rule["command"]], cwd=folder, env=tool_path_env(), check=False
    )
    assert done.returncode == 0, (folder / "logs/report.stderr").read_text()[-2000:]
    assert "Not drawn" not in (folder / REPORT).read_text()
    return rule


def png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=int)


def pixels(figure, axes, xs, ys):
    """Where the points (xs, ys) of the axes land in the saved PNG: (rows, columns). The figure
    is drawn first (its layout places the axes)."""
    px, py = axes.transData.transform(np.column_stack([xs, ys])).T
    height = figure.get_size_inches()[1] * figure.dpi
    return np.floor(height - py).astype(int), np.floor(px).astype(int)


def test_the_report_is_the_last_rule_and_draws_both_figures_from_the_pam():
    stage = plan_pam(["Heuchera americana", "Mitella nuda"])
    rules = stage.makeflow["rules"]
    report = rules[-1]
    assert report["category"] == "report"
    assert [p for p in report["outputs"] if p.startswith(FIGURES)] == [RICHNESS, SHEET]
    # Every other rule comes before it: its inputs are made by the statistics rule, which
    # follows every other rule.
    made_by = {o: i for i, rule in enumerate(rules) for o in rule["outputs"]}
    before = {made_by[p] for p in report["inputs"] if p in made_by}
    while True:
        more = {made_by[p] for i in before for p in rules[i]["inputs"] if p in made_by} - before
        if not more:
            break
        before |= more
    assert before == set(range(len(rules) - 1))
    assert not [p for p in report["inputs"] if p.startswith("outputs/models/")]
    config = stage.files["work/config/report/report.json"]
    assert '"epsg": 4326' in config
    assert "outputs/occurrence_report.json" in config, "the split's report is listed too"


def test_the_richness_maps_top_colour_is_at_the_richest_site(tmp_path):
    """Counted from the PAM: the richest site's pixel holds viridis' top colour, the poorest
    site's its bottom colour, and the note names the richest site."""
    rng = np.random.default_rng(4)
    present = rng.random((14 * 10, 9)) < 0.4
    present[:, 0] = False
    present[:, 7:] = True  # two or more species a site (species-pam purges empty sites)
    present[37] = True  # one site holds every species
    present[80] = False
    present[80, 0] = True  # and one only the first
    rows, xs, ys = grid_pam(present, 14)
    names = [f"Species {i}" for i in range(9)]
    run_report(tmp_path, names, present, rows)
    counts = present.sum(axis=1).astype(float)
    assert (np.argmax(counts), counts.max(), np.argmin(counts), counts.min()) == (37, 9, 80, 1)
    drawing = load("drawing")
    figure, raster, _ = drawing.map_figure(
        xs, ys, counts, label="richness (species)", title="t", epsg=4326
    )
    image = png(tmp_path / RICHNESS)
    assert image.shape[:2] == (
        round(figure.get_size_inches()[1] * figure.dpi),
        round(figure.get_size_inches()[0] * figure.dpi),
    )
    figure.canvas.draw()
    row, column = pixels(figure, figure.axes[0], xs, ys)
    viridis = drawing.plt.get_cmap("viridis")
    top, bottom = (np.array(viridis(end)[:3]) * 255 for end in (1.0, 0.0))
    distance = np.abs(image[row, column] - top).max(axis=1)
    assert distance[37] <= 3 and (distance[np.arange(len(counts)) != 37] > 3).all()
    assert np.abs(image[row[80], column[80]] - bottom).max() <= 3
    assert np.nanmax(raster) == 9
    drawing.plt.close(figure)
    html = (tmp_path / REPORT).read_text()
    assert "140 sites, 9 species. Highest: 9 species at site 37 (-110.5, 17.5)." in html
    assert "Coordinate system: WGS 84, EPSG:4326." in html


def ranges(sites, species, seed):
    """sites x species presences: species i at a random set of sites, range sizes all different
    and not in name order (so a sheet that picks by name shows other species)."""
    rng = np.random.default_rng(seed)
    sizes = rng.permutation(np.arange(1, species + 1)) * (sites - 2) // species + 1
    present = np.zeros((sites, species), dtype=bool)
    for column, size in enumerate(sizes):
        present[rng.choice(sites, size, replace=False), column] = True
    return present


def sheet_colours(tmp_path, present, xs, ys, shown):
    """Each panel's colour at every site, as the worker's PNG holds it: (panels, sites, RGB)."""
    species = load("draw_species")
    figure, panels, _ = species.sheet_layout(xs, ys, len(shown))
    image = png(tmp_path / SHEET)
    assert image.shape[:2] == (
        round(figure.get_size_inches()[1] * figure.dpi),
        round(figure.get_size_inches()[0] * figure.dpi),
    )
    figure.canvas.draw()
    colours = []
    for panel in panels[: len(shown)]:
        row, column = pixels(figure, panel, xs, ys)
        colours.append(image[row, column])
    species._drawing().plt.close(figure)
    return np.array(colours)


def expected_colours(present, shown):
    drawing = load("drawing")
    blue = np.array(drawing.plt.get_cmap("viridis")(0.25)[:3]) * 255
    grey = np.array([0xD9, 0xD9, 0xD9])
    return np.where(present[:, shown].T[..., None], blue, grey)


def test_the_sheet_shows_the_100_widest_ranges_in_name_order_and_says_so(tmp_path):
    present = ranges(15 * 12, 130, seed=5)
    rows, xs, ys = grid_pam(present, 15)
    names = [f"Sp {i:03d}" for i in range(130)]
    run_report(tmp_path, names, present, rows)
    sizes = present.sum(axis=0)
    widest = sorted(np.argsort(-sizes, kind="stable")[:100])
    assert widest != list(range(100)), "the widest ranges are not the first names"
    colours = sheet_colours(tmp_path, present, xs, ys, widest)
    assert colours.shape == (100, len(xs), 3)
    assert np.abs(colours - expected_colours(present, widest)).max() <= 3
    html = (tmp_path / REPORT).read_text()
    smallest = int(sizes[widest].min())
    assert (
        f"100 of 130 species shown (the sheet is capped at 100): the 100 present at the most "
        f"sites (each at {smallest} or more; ties by name), in name order."
    ) in html
    assert "At most 100 species" in html, "the caption says so before anything is drawn"


def test_a_sheet_under_the_cap_shows_every_species_with_its_name_as_it_is(tmp_path):
    """The capped sheet's twin: 7 species, all shown. Names that matplotlib would read as
    mathematics or split over lines are titles as they are."""
    names = ["Heuchera americana", "$\\frac{1$ x", "line\nbreak", "a_b^c", "Z", "-m", "日本"]
    present = ranges(9 * 6, len(names), seed=6)
    rows, xs, ys = grid_pam(present, 9)
    run_report(tmp_path, names, present, rows)
    shown = sorted(range(len(names)), key=lambda i: names[i])
    colours = sheet_colours(tmp_path, present, xs, ys, shown)
    assert np.abs(colours - expected_colours(present, shown)).max() <= 3
    html = (tmp_path / REPORT).read_text()
    assert "7 of 7 species shown, in name order." in html
    assert "capped" not in html


def test_a_grid_wider_than_a_panel_is_drawn_in_blocks_and_the_note_says_so(tmp_path):
    """Sites 600 cells apart on a 0.1-degree grid: panels of 200 blocks of 3 x 3 cells."""
    xs = np.array([-120.05, -119.95, -60.15, -120.05, -120.05])
    ys = np.array([40.05, 40.05, 40.05, 39.95, 30.05])
    rows = [[i, float(x), float(y)] for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    present = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0]])
    run_report(tmp_path, ["A a", "B b"], present, rows)
    species = load("draw_species")
    blocks = species.Blocks(species._drawing().Grid(xs, ys))
    assert (blocks.size, blocks.columns, blocks.rows) == (3, 200, 34)
    assert blocks.cells(np.array([1, 1, 0, 1, 0], dtype=bool)).sum() == 1, "one block, 3 sites"
    html = (tmp_path / REPORT).read_text()
    assert "Each panel cell is a block of 3 x 3 grid cells" in html


def test_150_species_on_2000_sites_draw_the_sheet_of_the_100_widest(tmp_path):
    present = ranges(50 * 40, 150, seed=7)
    rows, _, _ = grid_pam(present, 50)
    names = [f"Species {i:03d}" for i in range(150)]
    stage = plan_pam(names)
    for name, text in stage.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    write_lmm(tmp_path / species_pam.PAM_FILE, present.astype(float), rows, names)
    (rule,) = [r for r in stage.makeflow["rules"] if REPORT in r["outputs"]]
    seconds, cpu, peak = run_measured(rule, tmp_path)
    print(f"species-pam report: {seconds:.1f} s wall, {cpu:.1f} s CPU, peak {peak:.0f} MB")
    html = (tmp_path / REPORT).read_text()
    assert "Not drawn" not in html and "100 of 150 species shown" in html
    assert re.search(r"Highest: \d+ species at site", html)
