"""Workers supplied through Slurm: `work_queue_factory -T slurm` submits them with sbatch to a
single-node cluster that the test starts (tests/support/slurm.py) and tears down."""

import secrets

import pytest

from jobs.cctools import log as makeflowlog
from jobs.cctools.catalog import managers
from jobs.cctools.processes import stop_process
from jobs.cctools.projects import project_name
from tests.support.slurm import SingleNodeSlurm

from .conftest import logged_rule, wait_until, write_dag
from .test_runner import follow_to_end

pytestmark = pytest.mark.integration


@pytest.fixture
def slurm(tmp_path_factory):
    # A short path: the munge socket's must fit in 108 bytes.
    with SingleNodeSlurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def test_the_factory_runs_a_makeflows_rules_on_workers_that_slurm_started(
    slurm, procs, workdir, tmp_path
):
    # `slurm` first: set up first, torn down last, after `procs` has stopped the factory.
    deployment = f"slurm{secrets.token_hex(3)}"
    rules = [
        logged_rule(f"r{i}", f'echo "$SLURM_JOB_ID $LMWEB_PROBE" > r{i}.job', [f"r{i}.job"])
        for i in range(3)
    ]
    dag = write_dag(workdir, rules)
    run = procs.start(workdir, dag, project=project_name(deployment, "job"))
    wait_until(lambda: managers(procs.catalog, run.project), timeout=5)
    factory = procs.factory(
        deployment,
        tmp_path,
        batch_type="slurm",
        batch_options=f"--partition={slurm.partition}",
        idle_timeout=60,
        # SLURM_CONF: how sbatch finds this cluster. The rest of the factory's environment
        # (the rule guard's settings in production) reaches the workers' tasks through sbatch.
        env={**slurm.env, "LMWEB_PROBE": "handed-down"},
    )
    scratch = tmp_path / "factory"
    assert makeflowlog.outcome(follow_to_end(run, timeout=90)) == "success"

    # Every rule ran inside a Slurm job: the job that the factory submitted from its scratch
    # folder, still running (its worker waits for more work until its idle timeout).
    records = [(workdir / f"r{i}.job").read_text().split() for i in range(3)]
    assert all(len(words) == 2 and words[1] == "handed-down" for words in records), records
    job_ids = {job_id for job_id, _ in records}
    assert all(job_id.isdigit() for job_id in job_ids), job_ids
    for job_id in job_ids:
        job = slurm.job(job_id)
        assert job["JobState"] == "RUNNING"
        assert job["Command"] == "./slurm.wrapper"
        assert job["WorkDir"].rstrip("/.") == str(scratch.resolve())
        assert job["NodeList"] == slurm.node
    assert set(slurm.queue()) >= job_ids

    # On SIGTERM the factory cancels its jobs, and their workers with them.
    stop_process(factory, grace=10)
    wait_until(lambda: not slurm.queue(), timeout=30, interval=0.2)
    assert {slurm.job(job_id)["JobState"] for job_id in job_ids} == {"CANCELLED"}
