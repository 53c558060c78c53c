"""occurrence-cleaning's report: counts per step and per species, and the map of kept and
dropped records, checked against the records the stages kept and dropped."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report import load, pixel_of

from tests import synthetic
from tests.support.stages import produced, run_stage
from translators.occurrence_cleaning.workflow import REPORT_POINTS, WORKFLOW
from translators.report import REPORT, figure_path

pytest.importorskip("lmpy")

CSV = "inputs/occurrences-0.csv"
PARAMS = {
    "wranglers": [
        {"type": "bounding_box", "min_x": -130, "min_y": 20, "max_x": -60, "max_y": 55},
        {"type": "unique_localities"},
        {"type": "minimum_points", "minimum_count": 4},
    ]
}


def run_job(folder: Path, staged: dict, params: dict):
    """Both stages, rule by rule, in `folder`; the clean stage."""
    split = WORKFLOW.next_stage(WORKFLOW.with_defaults(params), staged, [], {})
    run_stage(split, folder)
    made = {"split": produced(split, folder)}
    clean = WORKFLOW.next_stage(WORKFLOW.with_defaults(params), staged, ["split"], made)
    run_stage(clean, folder)
    return clean


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A: 30 localities, 5 records south of the box, 6 repeated localities; B: 10 and 2
    repeated; C: 3 localities (below the minimum of 4); one record without a name."""
    folder = tmp_path_factory.mktemp("occurrence-report")
    rows = synthetic.occurrence_rows({"Synthia a": 30, "Synthia b": 10, "Synthia c": 3}, seed=4)
    a = [r for r in rows if r[0] == "Synthia a"]
    b = [r for r in rows if r[0] == "Synthia b"]
    rows += [("Synthia a", -100.0, -10.0 - i) for i in range(5)]
    rows += a[:6] + b[:2]
    rows += [("", -90.0, 40.0)]
    (folder / "inputs").mkdir()
    (folder / CSV).write_bytes(synthetic.occurrences_csv(rows))
    stage = run_job(folder, {"occurrences": [CSV]}, PARAMS)
    return folder, stage


def points(folder):
    return json.loads((folder / REPORT_POINTS).read_text())


def test_each_step_drops_what_it_should_and_the_counts_add_up(job):
    folder, _ = job
    data = points(folder)
    assert data["steps"] == {"name": 1, "record-0": 5, "species-0": 8, "species-1": 3}
    report = json.loads((folder / "outputs/cleaning_report.json").read_text())
    assert data["records_read"] == 57 == report["sources"][0]["records_read"]
    assert data["records_read"] - 1 - 5 == report["records_after_split"]
    assert report["records_after_split"] - 8 - 3 == report["records_after_cleaning"] == 40
    assert data["species"] == {
        "Synthia a": [30, 11],
        "Synthia b": [10, 2],
        "Synthia c": [0, 3],
        "": [0, 1],
    }


def test_the_dropped_points_are_the_records_dropped_where_they_were(job):
    folder, _ = job
    data = points(folder)
    dropped = {(step, x, y) for step, _, x, y in data["dropped"]["sample"]}
    assert {(x, y) for step, x, y in dropped if step == "record-0"} == {
        (-100.0, -10.0 - i) for i in range(5)
    }
    assert {(x, y) for step, x, y in dropped if step == "name"} == {(-90.0, 40.0)}
    with open(folder / "work/split/Synthia_c.csv", newline="") as handle:
        c = {(float(r["x"]), float(r["y"])) for r in csv.DictReader(handle)}
    assert {(x, y) for step, x, y in dropped if step == "species-1"} == c
    kept = set()
    for path in (folder / "outputs/species").glob("*.csv"):
        with open(path, newline="") as handle:
            kept |= {(float(r["x"]), float(r["y"])) for r in csv.DictReader(handle)}
    assert {tuple(p) for p in data["kept"]["sample"]} == kept and len(kept) == 40
    # A repeated locality dropped lies on its kept twin.
    assert {(x, y) for step, x, y in dropped if step == "species-0"} <= kept


def test_the_report_draws_every_figure_and_says_what_it_found(job):
    folder, stage = job
    (rule,) = [r for r in stage.makeflow["rules"] if REPORT in r["outputs"]]
    assert rule["category"] == "report"
    assert not any("outputs/species/" in str(i) for i in rule["inputs"]), "no species CSVs"
    html = (folder / REPORT).read_text()
    assert html.count('<img src="data:image/png;base64,') == 3
    assert "Not drawn" not in html
    assert "57 records read, 17 dropped. Most dropped by unique_localities (wranglers[1]): 8." in (
        html
    )
    assert "4 species." in html
    assert "40 of 40 kept and 17 of 17 dropped records drawn" in html
    assert "WGS 84, EPSG:4326" in html


def redraw(draw, function, args, folder, monkeypatch):
    """The figure `function` draws in `folder`, kept open (its saving skipped) so that its
    bars and transforms can be read; the worker's PNG was drawn the same way."""
    drawn = {}
    monkeypatch.chdir(folder)
    monkeypatch.setattr(draw._drawing(), "save", lambda figure, path: drawn.update(f=figure))
    getattr(draw, function)(args, "unused.png")
    return drawn["f"]


def figure_args(folder, kind):
    config = json.loads((folder / "work/config/report/report.json").read_text())
    (args,) = [f["args"] for f in config["figures"] if f["kind"] == kind]
    return args


def test_the_bars_lengths_are_the_counts(job, monkeypatch):
    """The step chart, drawn again from the same file, has bars of the counts; the PNG holds
    the dropped colour on the minimum_points bar's dropped part, the kept colour on its kept."""
    folder, _ = job
    draw = load("draw_occurrences")
    args = figure_args(folder, "occurrences.steps")
    table = draw.step_table(points(folder), args["steps"])
    assert [(label, received, count) for label, received, count in table] == [
        ("no species name", 57, 1),
        ("bounding_box (wranglers[0])", 56, 5),
        ("no finite coordinates", 51, 0),
        ("unique_localities (wranglers[1])", 51, 8),
        ("minimum_points (wranglers[2])", 43, 3),
    ]
    figure = redraw(draw, "steps", args, folder, monkeypatch)
    axes = figure.axes[0]
    bars = axes.patches
    kept, dropped = bars[:5], bars[5:10]
    assert [b.get_width() for b in kept] == [56, 51, 51, 43, 40]
    assert [b.get_width() for b in dropped] == [1, 5, 0, 8, 3]
    labels = [t.get_text() for t in axes.texts]
    assert labels == ["1 dropped", "5 dropped", "", "8 dropped", "3 dropped"]
    image = np.asarray(Image.open(folder / figure_path("records per step")).convert("RGB"), int)
    kept_colour, dropped_colour = (np.array(c[:3]) * 255 for c in draw.colours())
    # Off the hatch lines: a row of the bar between them.
    dropped_pixels = [image[pixel_of(figure, axes, 40 + 1.5, 4 + dy)] for dy in (-0.2, 0, 0.2)]
    assert min(np.abs(p - dropped_colour).max() for p in dropped_pixels) <= 3
    assert np.abs(image[pixel_of(figure, axes, 20, 4)] - kept_colour).max() <= 3
    draw._drawing().plt.close(figure)


def test_the_map_draws_a_cross_where_each_dropped_record_is(job, monkeypatch):
    folder, _ = job
    draw = load("draw_occurrences")
    figure = redraw(
        draw, "points_map", figure_args(folder, "occurrences.points_map"), folder, monkeypatch
    )
    axes = figure.axes[0]
    assert axes.get_xlabel() == "longitude (degrees east)"
    image = np.asarray(Image.open(folder / figure_path("kept and dropped records")).convert("RGB"))
    image = image.astype(int)
    dropped_colour = np.array(draw.colours()[1][:3]) * 255
    kept_colour = np.array(draw.colours()[0][:3]) * 255
    kept = {tuple(p) for p in points(folder)["kept"]["sample"]}

    def nearest(x, y, colour):
        """How far the 3 x 3 pixels around (x, y) come to `colour` (markers are anti-aliased)."""
        row, column = pixel_of(figure, axes, x, y)
        around = image[row - 1 : row + 2, column - 1 : column + 2].reshape(-1, 3)
        return np.abs(around - colour).max(axis=1).min()

    dropped = points(folder)["dropped"]["sample"]
    alone = [(x, y) for _, _, x, y in dropped if (x, y) not in kept]
    assert len(alone) == 9 and len(dropped) == 17
    for x, y in alone:
        assert nearest(x, y, dropped_colour) <= 12, (x, y)
        assert nearest(x, y, kept_colour) > 60, (x, y)
    for x, y in kept:  # drawn over the crosses of its dropped repeats
        assert nearest(x, y, kept_colour) <= 12, (x, y)
    draw._drawing().plt.close(figure)


def test_a_species_whose_replay_disagrees_with_lmpy_is_counted_but_not_placed(
    tmp_path, monkeypatch
):
    """The replay of minimum_points keeps A's 3 records; lmpy (say a later version) kept 2:
    A's drop is counted under the species wranglers together, and A's kept records are the
    ones lmpy wrote. B agrees: its drop is placed."""
    from translators.occurrence_cleaning.scripts import occurrences

    monkeypatch.chdir(tmp_path)
    files = {
        "split/A.csv": "species_name,x,y\nA a,1.0,2.0\nA a,3.0,4.0\nA a,5.0,6.0\n",
        "clean/A.csv": "species_name,x,y\nA a,1.0,2.0\nA a,5.0,6.0\n",
        "split/B.csv": "species_name,x,y\nB b,7.0,8.0\n",
        "clean/B.csv": "species_name,x,y\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    config = {
        "species": [{"slug": s, "csv": f"clean/{s}.csv", "split": f"split/{s}.csv"} for s in "AB"],
        "species_wranglers": [{"type": "minimum_points", "minimum_count": 2}],
        "report_points": {"path": "points.json", "split_dropped": None, "limit": 10, "seed": 1},
    }
    split_manifest = {
        "species": [
            {"slug": "A", "name": "A a", "records": 3},
            {"slug": "B", "name": "B b", "records": 1},
        ],
        "sources": [{"records_read": 4}],
    }
    manifest = {
        "A": {"name": "A a", "records_after_cleaning": 2},
        "B": {"name": "B b", "records_after_cleaning": 0},
    }
    occurrences.report_points(config, split_manifest, manifest)
    data = json.loads((tmp_path / "points.json").read_text())
    assert data["steps"] == {"species-wranglers": 1, "species-0": 1}
    assert data["species"] == {"A a": [2, 1], "B b": [0, 1]}
    assert data["dropped"]["sample"] == [["species-0", "B b", 7.0, 8.0]]
    assert sorted(data["kept"]["sample"]) == [[1.0, 2.0], [5.0, 6.0]]
    assert data["split_dropped_known"] is False


def test_a_sample_is_bounded_seeded_and_carried_on_uniformly():
    """100 items in a sample of 10, then carried on over 100 more from its saved state: the
    same seed gives the same sample, and over many seeds each item is about as likely."""
    from translators.occurrence_cleaning.scripts.occurrences import Reservoir

    def sample(seed):
        first = Reservoir(10, seed)
        for item in range(100):
            first.add(item)
        second = Reservoir(10, seed + 1, first.items, first.seen)
        for item in range(100, 200):
            second.add(item)
        return second.items

    assert len(sample(1)) == 10 and sample(1) == sample(1) != sample(2)
    counts = np.bincount(np.ravel([sample(seed) for seed in range(2000)]), minlength=200)
    # Each item is drawn 2000 * 10 / 200 = 100 times on average.
    assert counts[:100].sum() == pytest.approx(counts[100:].sum(), rel=0.1)
    assert counts.min() > 55 and counts.max() < 150


def test_the_split_records_each_drop_under_its_step_and_the_name_it_had(tmp_path):
    """The odd-names DwCA through a name map that drops the unmapped: what the split drops,
    and where, is what the accepted names wrangler and the missing name and longitude cost."""
    from translators.occurrence_cleaning.workflow import HELPER_SCRIPT

    (tmp_path / "occ.zip").write_bytes(synthetic.odd_names_dwca())
    (tmp_path / "map.json").write_bytes(synthetic.lmpy_name_map(synthetic.ODD_NAMES_MAP, "json"))
    (tmp_path / "helper.py").write_text(HELPER_SCRIPT)
    config = {
        "sources": [{"path": "occ.zip", "format": "dwca"}],
        "wranglers": [
            {
                "wrangler_type": "AcceptedNameOccurrenceWrangler",
                "name_map": "map.json",
                "keep_unmapped": False,
            }
        ],
        "out_dir": "split",
        "manifest": "split.json",
        "max_species": 100,
        "dropped": {"path": "dropped.json", "limit": 100, "seed": 1},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "helper.py", "split", "config.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    dropped = json.loads((tmp_path / "dropped.json").read_text())
    assert dropped["steps"] == {"name": 1, "record-0": 4, "coordinates": 1}
    assert dropped["species"] == {
        "": 1,
        "Acer rubrum": 2,  # "ACER RUBRUM" unmapped, and a mapped record without a longitude
        "Acer \u00d7freemanii": 1,
        "Acer platanoides": 2,
    }
    assert dropped["mappable"] == 5  # the record without a longitude cannot be placed
    assert sorted((s, x, y) for s, _, x, y in dropped["sample"]) == [
        ("name", -90.5, 45.25),
        ("record-0", -88.5, 43.25),
        ("record-0", -87.5, 42.25),
        ("record-0", -85.5, 40.25),
        ("record-0", -82.5, 37.25),
    ]
