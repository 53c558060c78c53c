"""translators/common: what several workflows share, checked once here."""

import pytest

import translators
from translators.common.chunks import groups, near_equal_sizes, tapering_sizes
from translators.common.grid import grid_args, grid_errors, grid_schema
from translators.common.lmpy import csv_commands, csv_names
from translators.common.p_values import P_VALUE_PARAMS, p_values_command, significance_file
from translators.common.species_names import species_key, species_name

GRID = {"min_x": -10, "min_y": 0, "max_x": 10, "max_y": 5, "cell_size": 0.5, "epsg": 4326}


@pytest.mark.parametrize(
    ("count", "size", "sizes"), [(0, 3, []), (7, 3, [3, 3, 1]), (3, 3, [3]), (1, 100, [1])]
)
def test_groups_keep_the_order_and_fill_all_but_the_last(count, size, sizes):
    items = list(range(count))
    parts = groups(items, size)
    assert [len(part) for part in parts] == sizes
    assert [item for part in parts for item in part] == items


def test_near_equal_sizes_never_differ_by_more_than_one():
    for total in range(1, 300):
        sizes = near_equal_sizes(total, 50)
        assert sum(sizes) == total and max(sizes) <= 50
        assert max(sizes) - min(sizes) <= 1


def test_tapering_sizes_cover_the_total_largest_first_and_end_small():
    assert tapering_sizes(0, 100, 20, 4) == []
    for total in (*range(1, 300), 999, 10_000):
        sizes = tapering_sizes(total, 100, 20, 4)
        assert sum(sizes) == total and max(sizes) <= 100
        assert sizes == sorted(sizes, reverse=True)
        # Only the last part may be smaller than the smallest: the remainder.
        assert all(size >= 20 for size in sizes[:-1])
    assert tapering_sizes(10_000, 100, 20, 4)[-4:] == [20, 20, 20, 10]


def test_the_grid_schema_is_the_same_for_every_workflow_with_a_grid():
    grids = [
        translators.get(name).params_schema["properties"]["grid"]
        for name in ("species-pam", "mcpa")
    ]
    without_description = [{k: v for k, v in g.items() if k != "description"} for g in grids]
    assert without_description[0] == without_description[1]
    assert without_description[0] == {
        k: v for k, v in grid_schema("any").items() if k != "description"
    }


def test_the_grid_check_counts_cells_against_the_limit_it_is_given():
    assert grid_errors(GRID, max_cells=400) == []
    (error,) = grid_errors(GRID, max_cells=399)
    assert error.startswith("params/grid: 40 x 10 = 400 cells; at most 399")


def test_grid_arguments_are_plain_decimals_in_build_grid_order():
    assert grid_args({**GRID, "min_x": -1e-05, "cell_size": 0.25}) == [
        "-0.00001",
        "0",
        "10",
        "5",
        "0.25",
        "4326",
    ]


@pytest.mark.parametrize(
    ("method", "suffix", "path"),
    [
        ("fdr", "", "outputs/significant.lmm"),
        ("raw", "_site_stats", "outputs/significant_site_stats.lmm"),
        ("bonferroni", "", "outputs/p_values_bonferroni.lmm"),
        ("bonferroni", "_site_stats", "outputs/p_values_site_stats_bonferroni.lmm"),
    ],
)
def test_the_significance_file_says_what_it_holds(method, suffix, path):
    assert significance_file({"p_value_method": method, "alpha": 0.05}, suffix) == path


def test_p_values_are_called_with_the_method_alpha_and_stacks():
    params = {"p_value_method": "fdr", "alpha": 0.1}
    assert p_values_command(params, "sig.lmm", "p.lmm", "obs.lmm", ["a.lmm", "b.lmm"]) == [
        "calculate_p_values",
        "-m",
        "fdr",
        "--alpha",
        "0.1",
        "-s",
        "sig.lmm",
        "p.lmm",
        "obs.lmm",
        "a.lmm",
        "b.lmm",
    ]
    assert set(P_VALUE_PARAMS) == {"p_value_method", "alpha"}


def test_pam_stats_and_mcpa_share_the_p_value_parameters():
    for name in ("pam-stats", "mcpa"):
        properties = translators.get(name).params_schema["properties"]
        assert {key: properties[key] for key in P_VALUE_PARAMS} == P_VALUE_PARAMS


def test_a_matrix_csv_sits_beside_it():
    assert csv_names("outputs/a.lmm", "work/b.lmm") == ["outputs/a.csv", "work/b.csv"]
    assert csv_commands("outputs/a.lmm") == [
        ["convert_lmm_to_csv", "outputs/a.lmm", "outputs/a.csv"]
    ]


def test_a_species_key_round_trips():
    for name in ("Heuchera americana", "é/ü", "-m", "a_b"):
        assert species_name(species_key(name)) == name
