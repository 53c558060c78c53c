"""mcpa's report: the clade by predictor heatmap drawn from the matrices MCPA writes."""

import copy
import json

import numpy as np
import pytest
from PIL import Image
from support import write_lmm
from test_report import load, pixel_of
from test_translators_mcpa import STAGED, WORKFLOW, request

from tests import synthetic
from tests.support.stages import run_measured, run_stage
from translators.report import FIGURES, REPORT, figure_path

# The synthetic PAM's own 12 x 12 block of 1-degree cells (tests/synthetic.py, PAM_ORIGIN).
GRID = {"min_x": -120, "min_y": 30, "max_x": -108, "max_y": 42, "cell_size": 1, "epsg": 4326}
HEATMAP = figure_path("mcpa observed")
GREY = np.array([0xD9, 0xD9, 0xD9])
WHITE = np.array([255, 255, 255])


def plan(staged, grid, **params):
    asked = request(staged, **params)
    asked["params"]["grid"] = grid
    return WORKFLOW.plan(asked, copy.deepcopy(staged), [])


def run_without_report(stage, folder):
    """Every rule but the report's, in order; the report rule's makeflow entry."""
    (report,) = [r for r in stage.makeflow["rules"] if REPORT in r["outputs"]]
    others = {**stage.makeflow, "rules": [r for r in stage.makeflow["rules"] if r is not report]}
    run_stage(type(stage)(stage.name, others, stage.files), folder)
    return report


@pytest.fixture(scope="module")
def mcpa_job(tmp_path_factory):
    """The synthetic mcpa example (12 species, the ecoregions raster, three hypotheses) on the
    PAM's block, 20 permutations, raw p-values at 0.1 (some cells significant, some not), run
    rule by rule; the report rule timed alone."""
    pytest.importorskip("lmpy")
    pytest.importorskip("osgeo")
    folder = tmp_path_factory.mktemp("mcpa")
    files = synthetic.example_files("mcpa", folder / "made")
    (folder / "inputs").mkdir()
    for key, (_, content) in files.items():
        staged = STAGED[key]
        (folder / (staged[0] if isinstance(staged, list) else staged)).write_bytes(content)
    stage = plan(STAGED, GRID, permutations=20, p_value_method="raw", alpha=0.1)
    report = run_without_report(stage, folder)
    timing = run_measured(report, folder)
    print("synthetic mcpa report: {:.1f} s wall, {:.1f} s CPU, peak {:.0f} MB".format(*timing))
    return folder, stage, timing


def figure_args(folder):
    """The heatmap's args as the stage wrote them, with the job folder's paths made absolute."""
    config = json.loads((folder / "work/config/report/report.json").read_text())
    (figure,) = [f for f in config["figures"] if f["path"] == HEATMAP]
    args = dict(figure["args"])
    for key in ("matrix", "tree", "significance"):
        if key in args:
            args[key] = str(folder / args[key])
    return args


def drawn(args, png):
    """The heatmap's figure rebuilt from `args` (for its transforms), and the PNG's pixels."""
    draw = load("draw_mcpa")
    figure, axes, rows, note = draw.heatmap_figure(args)
    image = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    assert image.shape[:2] == (
        round(figure.get_size_inches()[1] * figure.dpi),
        round(figure.get_size_inches()[0] * figure.dpi),
    )
    return draw, figure, axes, rows, note, image


def test_the_report_holds_the_heatmap_inline_and_it_was_drawn(mcpa_job):
    folder, stage, _ = mcpa_job
    (report,) = [r for r in stage.makeflow["rules"] if REPORT in r["outputs"]]
    assert [p for p in report["outputs"] if p.startswith(FIGURES + "/")] == [HEATMAP]
    html = (folder / REPORT).read_text()
    assert html.count('<img src="data:image/png;base64,') == 1
    assert "Not drawn" not in html
    assert "Dots: cells whose pseudo-F is significantly higher than on 20 randomized" in html


def test_every_cell_has_the_colour_of_its_observed_value(mcpa_job):
    """Read beside each cell's centre (clear of its dot): cividis at the value's place on a
    scale from -m to m, m the largest absolute observed value; so the largest is an end."""
    folder, _, _ = mcpa_job
    args = figure_args(folder)
    draw, figure, axes, rows, _, image = drawn(args, folder / HEATMAP)
    values, headers = draw._drawing().read_lmm(folder / "outputs/mcpa_observed.lmm")
    assert list(rows) == list(range(len(values))), "a few nodes: every one is drawn"
    top = np.nanmax(np.abs(values))
    cividis = draw._drawing().plt.get_cmap("cividis")
    for row, column in np.ndindex(values.shape):
        y, x = pixel_of(figure, axes, column - 0.3, row - 0.3)
        value = values[row, column]
        expected = (
            GREY if np.isnan(value) else np.array(cividis((value + top) / (2 * top))[:3]) * 255
        )
        assert np.abs(image[y, x] - expected).max() <= 4, (headers["0"][row], column, value)
    row, column = np.unravel_index(np.nanargmax(np.abs(values)), values.shape)
    end = 1.0 if values[row, column] > 0 else 0.0
    y, x = pixel_of(figure, axes, column - 0.3, row - 0.3)
    assert np.abs(image[y, x] - np.array(cividis(end)[:3]) * 255).max() <= 2
    draw._drawing().plt.close(figure)


def test_significant_cells_are_dotted_where_the_significance_file_says(mcpa_job):
    folder, _, _ = mcpa_job
    args = figure_args(folder)
    assert args["significance"].endswith("outputs/significant.lmm")
    draw, figure, axes, _, _, image = drawn(args, folder / HEATMAP)
    marks, _ = draw._drawing().read_lmm(folder / "outputs/significant.lmm")
    significant = np.asarray(marks, dtype=float) > 0
    assert 0 < significant.sum() < significant.size, "the job has both kinds of cell"
    for row, column in np.ndindex(significant.shape):
        y, x = pixel_of(figure, axes, column, row)
        dotted = np.abs(image[y, x] - WHITE).max() <= 2
        assert dotted == significant[row, column], (row, column)
    draw._drawing().plt.close(figure)
    html = (folder / REPORT).read_text()
    assert f"{significant.sum()} of {significant.size} cells significant." in html


def test_the_note_names_the_highest_value_and_its_node(mcpa_job):
    folder, _, _ = mcpa_job
    draw = load("draw_mcpa")
    values, headers = draw._drawing().read_lmm(folder / "outputs/mcpa_observed.lmm")
    row, column = np.unravel_index(np.nanargmax(values), values.shape)
    html = (folder / REPORT).read_text()
    highest = draw._drawing().number(values[row, column])
    assert f"Highest: {highest} at node {headers['0'][row]}, {headers['1'][column]}." in html
    # Rows are labelled with their clade's species: the root's holds every matched species.
    tree, tree_headers = draw._drawing().read_lmm(folder / "outputs/tree_matrix.lmm")
    figure, axes, rows, _ = draw.heatmap_figure(figure_args(folder))
    labels = [t.get_text() for t in axes.get_yticklabels()]
    counts = (np.asarray(tree) != 0).sum(axis=0)
    assert labels == [f"{tree_headers['1'][i]} ({counts[i]} sp.)" for i in rows]
    assert any(label.endswith(f" ({len(tree)} sp.)") for label in labels)
    draw._drawing().plt.close(figure)


def test_the_report_rule_stays_within_its_declared_memory(mcpa_job):
    _, _, (_seconds, _cpu, peak) = mcpa_job
    assert peak < 1024, "within the report category's memory"


# Drawn from hand-made matrices: unfit nodes, adjusted p-values, more nodes than rows shown ------


def hand_made(folder, nodes, values, p_values, alpha=0.01):
    predictors = ["environment-0", "Env - Adjusted R-squared", "divide", "BG - Adjusted R-squared"]
    names = [f"n{i}" for i in range(nodes)]
    write_lmm(folder / "observed.lmm", values, names, predictors)
    write_lmm(folder / "p.lmm", p_values, names, predictors)
    return {
        "matrix": str(folder / "observed.lmm"),
        "label": "value (unitless)",
        "title": "t",
        "symmetric": True,
        "significance": str(folder / "p.lmm"),
        "adjusted": True,
        "alpha": alpha,
    }


def test_unfit_nodes_are_grey_and_adjusted_p_values_at_alpha_are_significant(tmp_path):
    values = np.array([[0.5, 0.2, -0.4, 0.3], [np.nan] * 4, [-0.9, 0.1, 0.2, 0.6]])
    # Bonferroni-adjusted p-values: significant where <= alpha, the next float above is not.
    p_values = np.array([[0.01, np.nextafter(0.01, 1), 1, 1], [1] * 4, [0, 1, 1, 0.5]])
    args = hand_made(tmp_path, 3, values, p_values)
    draw = load("draw_mcpa")
    png = tmp_path / "h.png"
    note = draw.heatmap(args, str(png))
    _, figure, axes, _, _, image = drawn(args, png)
    for column in range(4):
        y, x = pixel_of(figure, axes, column - 0.3, 1 - 0.3)
        assert np.abs(image[y, x] - GREY).max() <= 2, column
    dotted = {
        (row, column)
        for row, column in np.ndindex(values.shape)
        if np.abs(image[pixel_of(figure, axes, column, row)] - WHITE).max() <= 2
    }
    assert dotted == {(0, 0), (2, 0)}
    assert note.startswith("2 of 3 nodes fitted (4 columns). 2 of 12 cells significant.")
    assert "Highest: 0.6 at node n2, BG - Adjusted R-squared." in note
    draw._drawing().plt.close(figure)


def test_beyond_the_row_limit_the_significant_then_largest_nodes_are_shown(tmp_path):
    draw = load("draw_mcpa")
    nodes = draw.MAX_ROWS + 15
    rng = np.random.default_rng(4)
    values = rng.uniform(-0.1, 0.1, size=(nodes, 4))
    p_values = np.ones((nodes, 4))
    significant_rows = [3, 40, nodes - 1]
    p_values[significant_rows, 1] = 0.001
    others = [i for i in range(4, nodes) if i not in significant_rows]
    large_rows = others[: draw.MAX_ROWS - len(significant_rows)]
    values[large_rows, 2] = 0.5
    args = hand_made(tmp_path, nodes, values, p_values)
    figure, axes, rows, note = draw.heatmap_figure(args)
    assert list(rows) == sorted(set(significant_rows) | set(large_rows))
    assert [t.get_text() for t in axes.get_yticklabels()] == [f"n{i}" for i in rows]
    assert f"{draw.MAX_ROWS} of {nodes} nodes shown: those with the most significant cells" in note
    draw._drawing().plt.close(figure)
    # Its twin at the limit shows every node.
    args = hand_made(tmp_path, draw.MAX_ROWS, values[: draw.MAX_ROWS], p_values[: draw.MAX_ROWS])
    figure, _, rows, note = draw.heatmap_figure(args)
    assert list(rows) == list(range(draw.MAX_ROWS)) and "nodes shown" not in note
    draw._drawing().plt.close(figure)


def test_a_significance_matrix_of_other_nodes_is_refused(tmp_path):
    values = np.array([[0.5, 0.2, -0.4, 0.3], [0.1, 0.2, 0.3, 0.4]])
    args = hand_made(tmp_path, 2, values, np.ones((2, 4)))
    draw = load("draw_mcpa")
    figure, *_ = draw.heatmap_figure(args)
    draw._drawing().plt.close(figure)
    write_lmm(tmp_path / "p.lmm", np.ones((2, 4)), ["n0", "other"], ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="nodes or predictors differ"):
        draw.heatmap_figure(args)


def _example():
    inputs = WORKFLOW.example["inputs"]
    return {key: value[0] if isinstance(value, list) else value for key, value in inputs.items()}
