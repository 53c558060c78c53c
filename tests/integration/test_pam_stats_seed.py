"""pam-stats with a seed: two jobs on the same inputs give the same p-values, another seed not."""

import numpy as np
import pytest

from tests import synthetic
from tests.conftest import upload

from .conftest import wait_until_finished
from .test_execution import submit

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
MATRICES = ["p_values_diversity", "p_values_site_stats", "p_values_species_stats"]


def test_two_jobs_with_the_same_seed_give_identical_p_values(live, tmp_path):
    from lmpy import Matrix

    files = synthetic.example_files("pam-stats", tmp_path / "in")
    inputs = {}
    for key, (name, content) in files.items():
        response = upload(live, name, content)
        assert response.status_code == 201, response.content
        inputs[key] = response.json()["id"]

    def run(seed):
        params = {"randomizations": 45, "seed": seed}
        job = submit(live, {"workflow": "pam-stats", "inputs": inputs, "params": params})
        return job["id"]

    jobs = {name: run(seed) for name, seed in (("first", 7), ("second", 7), ("other", 8))}
    values = {}
    for name, job_id in jobs.items():
        job = wait_until_finished(live, job_id, timeout=600)
        assert job["state"] == "COMPLETE", job["error"]
        folder = live.stack.data_dir / "jobs" / job_id / "outputs"
        values[name] = [np.asarray(Matrix.load(str(folder / f"{m}.lmm"))) for m in MATRICES]
    assert job["progress"]["total"] > 6, "the randomizations ran in several chunks"
    for first, second in zip(values["first"], values["second"], strict=True):
        assert np.array_equal(first, second, equal_nan=True)
    assert not all(
        np.array_equal(a, b, equal_nan=True)
        for a, b in zip(values["first"], values["other"], strict=True)
    )
