"""lmweb_workers serves the managers of running jobs, not whatever the catalog was told."""

import time

import pytest

from jobs.cctools.catalog import query_catalog
from jobs.models import Job
from tests.runner.test_catalog_trust import Listener, advertise, forged_records
from tests.support.payloads import selftest

from .conftest import wait_for, wait_until_finished
from .test_execution import submit

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_forged_catalog_records_get_no_worker_while_the_job_gets_its_own(live, report):
    stack = live.stack
    job = submit(live, selftest(3, 2))
    running = Job.objects.filter(pk=job["id"], state="RUNNING", manager_port__isnull=False)
    row = wait_for(running.first, timeout=60)
    # The controller recorded the manager the catalog lists (its project has the width hint).
    assert row.manager_project.startswith(f"lmweb-{stack.deployment}-{job['id']}-w")

    def real_record():
        return [
            record
            for record in query_catalog(stack.catalog)
            if (record.get("project"), record.get("port"))
            == (row.manager_project, row.manager_port)
        ]

    (real,) = wait_for(real_record, timeout=10)
    listeners = [Listener(), Listener()]
    try:
        forgeries = forged_records(real, stack.deployment, [item.port for item in listeners])
        for record in forgeries:
            advertise(stack.catalog, record)
        time.sleep(3)  # the pool reads the catalog four times a second
        connections = [item.connections for item in listeners]
    finally:
        for item in listeners:
            item.close()
    done = wait_until_finished(live, job["id"], timeout=120)
    report(f"forged records: {connections} connections; the job {done['state']}")

    assert connections == [0, 0]
    assert done["state"] == "COMPLETE"
    finished = Job.objects.get(pk=job["id"])
    assert (finished.manager_project, finished.manager_port) == ("", None)
