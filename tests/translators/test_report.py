"""The report: figures drawn from the data they claim to show, one self-contained HTML page."""

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_translators_pam_stats import plan

import translators
from tests.support.stages import demo_inputs, run_stage
from translators.report import FIGURES, REPORT, Figure, figure_path, report_files, report_rule

SCRIPTS = Path(translators.__file__).parent / "report" / "scripts"


def load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pam_stats_job(tmp_path_factory):
    """A pam-stats stage with a tree and 30 seeded randomizations, run rule by rule."""
    folder = tmp_path_factory.mktemp("pam-stats")
    demo_inputs(folder, species=20, side=14)
    stage = plan({"pam": "inputs/pam.lmm", "tree": "inputs/tree.tre"}, randomizations=30, seed=2)
    run_stage(stage, folder)
    return folder, stage


def site_table(path):
    """observed_site_stats.csv as written by convert_lmm_to_csv: {statistic: [(x, y, v)]}."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    names = rows[0][3:]
    table = {name: [] for name in names}
    for row in rows[1:]:
        x, y = float(row[1]), float(row[2])
        for name, value in zip(names, row[3:], strict=True):
            value = {"True": 1.0, "False": 0.0}.get(value, value)  # a significance mask
            table[name].append((x, y, float(value)))
    return table


def test_every_declared_figure_is_drawn_and_inline_in_the_report(pam_stats_job):
    folder, stage = pam_stats_job
    (report,) = [r for r in stage.makeflow["rules"] if REPORT in r["outputs"]]
    declared = [p for p in report["outputs"] if p.startswith(FIGURES + "/")]
    assert len(declared) == 9 + 6 + 4 + 6  # site maps, significant maps, histograms, nulls
    html = (folder / REPORT).read_text()
    for path in declared:
        png = (folder / path).read_bytes()
        assert png.startswith(b"\x89PNG"), path
        assert Image.open(folder / path).size[0] > 300
    assert html.count('<img src="data:image/png;base64,') == len(declared)
    assert not re.search(r"(src|href)=\"(?!data:)", html), "nothing but inline images"
    assert "<script" not in html.lower()
    assert "Not drawn" not in html
    assert "<!-- lmweb:job -->" in html, "the controller's place is left for it"


def pixel_of(figure, axes, x, y):
    """Where the point (x, y) of the axes lands in the saved PNG (row, column)."""
    figure.canvas.draw()
    px, py = axes.transData.transform((x, y))
    height = figure.get_size_inches()[1] * figure.dpi
    return int(np.floor(height - py)), int(np.floor(px))


def test_the_richness_maps_brightest_cell_is_the_richest_site(pam_stats_job):
    """The worker's PNG, read at the pixels where the richest and the poorest site of
    observed_site_stats.csv are drawn, holds the colour scale's top and bottom colours."""
    folder, _ = pam_stats_job
    richness = site_table(folder / "outputs/observed_site_stats.csv")["alpha"]
    xs = np.array([x for x, _, _ in richness])
    ys = np.array([y for _, y, _ in richness])
    values = np.array([v for _, _, v in richness])
    assert len(set(values)) > 2
    drawing = load("drawing")
    figure, raster, _ = drawing.map_figure(
        xs, ys, values, label="richness (species)", title="alpha per site"
    )
    axes = figure.axes[0]
    image = np.asarray(Image.open(folder / figure_path("site alpha")).convert("RGB"), dtype=int)
    assert image.shape[:2] == (
        round(figure.get_size_inches()[1] * figure.dpi),
        round(figure.get_size_inches()[0] * figure.dpi),
    )
    viridis = drawing.plt.get_cmap("viridis")
    for site, end in ((int(np.argmax(values)), 1.0), (int(np.argmin(values)), 0.0)):
        row, column = pixel_of(figure, axes, xs[site], ys[site])
        expected = np.array(viridis(end)[:3]) * 255
        assert np.abs(image[row, column] - expected).max() <= 3, (site, image[row, column])
    assert np.nanmax(raster) == values.max()
    drawing.plt.close(figure)


def test_significant_maps_grey_out_the_sites_that_are_not(pam_stats_job):
    folder, _ = pam_stats_job
    phi = site_table(folder / "outputs/observed_site_stats.csv")["phi"]
    marks = site_table(folder / "outputs/significant_site_stats.csv")["phi"]
    xs = np.array([x for x, _, _ in phi])
    ys = np.array([y for _, y, _ in phi])
    values = np.array([v for _, _, v in phi])
    mask = np.array([v > 0 for _, _, v in marks])
    assert 0 < mask.sum() < len(mask), "the demo has both kinds of site"
    drawing = load("drawing")
    figure, _, _ = drawing.map_figure(xs, ys, values, label="l", title="t", mask=mask)
    image = np.asarray(Image.open(folder / figure_path("significant phi")).convert("RGB"), int)
    grey = np.array([0xD9, 0xD9, 0xD9])
    for site in range(len(xs)):
        row, column = pixel_of(figure, figure.axes[0], xs[site], ys[site])
        assert (np.abs(image[row, column] - grey).max() <= 2) == (not mask[site]), site
    drawing.plt.close(figure)


def test_the_null_distribution_holds_every_randomization(pam_stats_job):
    folder, _ = pam_stats_job
    with open(folder / "outputs/random_diversity_stats.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [
        "randomization",
        "c-score",
        "lande",
        "legendre",
        "num sites",
        "num species",
        "whittaker",
    ]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 31))
    html = (folder / REPORT).read_text()
    above = sum(float(r[1]) > observed_c_score(folder) for r in rows[1:])
    assert f"{above:,} of 30 randomized PAMs above it" in html


def observed_c_score(folder):
    drawing = load("drawing")
    values, headers = drawing.read_lmm(folder / "outputs/observed_diversity.lmm")
    return float(np.ravel(values)[headers["1"].index("c-score")])


def test_user_text_is_escaped_in_the_report(tmp_path):
    figures = [
        Figure(
            figure_path("h"),
            "pam.species_histogram",
            "<b>caption</b>",
            ["m.lmm"],
            {"matrix": "m.lmm", "statistic": "omega", "label": "l", "title": "t"},
        )
    ]
    files = report_files(
        "T", "pam-stats", {"x": "<script>alert(1)</script>"}, {"pam": "inputs/<i>.lmm"}, figures, []
    )
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    from support import write_lmm

    write_lmm(tmp_path / "m.lmm", [[1.0], [2.0], [5.0]], ["a", "b", "c"], ["omega"])
    rule = report_rule(figures, [])
    subprocess.run([sys.executable, *rule.args[1:]], cwd=tmp_path, check=True)
    html = (tmp_path / REPORT).read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;caption&lt;/b&gt;" in html and "inputs/&lt;i&gt;.lmm" in html


def test_a_figure_that_cannot_be_drawn_says_so_and_the_report_is_still_written(tmp_path):
    figures = [
        Figure(
            figure_path("h"),
            "pam.species_histogram",
            "c",
            ["missing.lmm"],
            {"matrix": "missing.lmm", "statistic": "omega", "label": "l", "title": "t"},
        )
    ]
    for name, text in report_files("T", "pam-stats", {}, {}, figures, []).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    rule = report_rule(figures, [])
    done = subprocess.run([sys.executable, *rule.args[1:]], cwd=tmp_path, capture_output=True)
    assert done.returncode == 0
    html = (tmp_path / REPORT).read_text()
    assert "Not drawn: FileNotFoundError" in html
    assert (tmp_path / figures[0].path).read_bytes().startswith(b"\x89PNG")
