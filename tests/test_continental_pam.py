"""The continental PAM of bench B10 (tests/synthetic.py): seeded, full, about as dense as asked,
and a file the PAM inspection and lmpy both read."""

import numpy as np
from django.conf import settings
from lmpy import Matrix

from jobs import inspection
from tests import synthetic


def test_it_is_the_same_file_for_the_same_seed(tmp_path):
    first = synthetic.continental_pam(tmp_path / "a.lmm", species=40, columns=12, rows=10, seed=3)
    again = synthetic.continental_pam(tmp_path / "b.lmm", species=40, columns=12, rows=10, seed=3)
    other = synthetic.continental_pam(tmp_path / "c.lmm", species=40, columns=12, rows=10, seed=4)
    assert first == again == other == synthetic.species_names(40)
    a, b, c = (Matrix.load(str(tmp_path / f"{n}.lmm")) for n in "abc")
    assert np.array_equal(a, b) and a.get_headers() == b.get_headers()
    assert not np.array_equal(a, c)


def test_every_site_and_species_is_present_at_about_the_density_asked(tmp_path):
    synthetic.continental_pam(
        tmp_path / "pam.lmm", species=300, columns=30, rows=20, density=0.05, seed=1
    )
    pam = Matrix.load(str(tmp_path / "pam.lmm"))
    assert pam.shape == (600, 300)
    assert set(np.unique(pam)) == {0.0, 1.0}
    assert pam.sum(axis=0).min() >= 1 and pam.sum(axis=1).min() >= 1
    assert 0.03 < pam.mean() < 0.07


def test_its_sites_are_cell_centres_of_the_global_half_degree_grid(tmp_path):
    synthetic.continental_pam(tmp_path / "pam.lmm", species=5, columns=84, rows=68)
    sites = Matrix.load(str(tmp_path / "pam.lmm")).get_row_headers()
    assert len(sites) == 5712
    ids = [site[0] for site in sites]
    assert len(set(ids)) == len(ids)
    first = sites[0]  # the south-west cell of Australia's box
    assert first[1:] == [112.25, -43.75]
    # Row 267 from the north (-43.5 to -44), column 584 from -180 (112 to 112.5).
    assert first[0] == 267 * 720 + 584


def test_the_pam_inspection_reads_its_shape_from_headers_alone(tmp_path):
    synthetic.continental_pam(tmp_path / "pam.lmm", species=70, columns=10, rows=6)
    facts = inspection.check_pam(
        tmp_path / "pam.lmm", limits=inspection.Limits.from_settings(settings)
    )
    assert facts == {"cells": 4200, "shape": [60, 70]}
