"""The admin shows each running job's share of the worker pools, as the pools report it
(through Redis, the real one), and nothing for a job no pool serves."""

import secrets

import pytest
from django.utils import timezone

from jobs import ops
from jobs.models import Job, State


def running_job(owner, project: str) -> Job:
    return Job.objects.create(
        owner=owner,
        workflow="selftest",
        request={"workflow": "selftest", "params": {"tasks": 3, "seconds": 0}},
        state=State.RUNNING,
        started_at=timezone.now(),
        manager_project=project,
        manager_port=9300,
    )


@pytest.fixture
def reported(settings):
    """Two pool hosts report; their figures add up per project."""
    settings.LMWEB_DEPLOYMENT = f"share{secrets.token_hex(3)}"
    served = f"lmweb-{settings.LMWEB_DEPLOYMENT}-served-w8"
    ops.worker_shares_record({served: (2, 3)}, host="one:1")
    ops.worker_shares_record({served: (1, 2)}, host="two:2")
    ops._shares_cache["at"] = 0.0
    yield served
    ops.worker_shares_record({}, host="one:1")
    ops.worker_shares_record({}, host="two:2")
    ops._shares_cache["at"] = 0.0


@pytest.mark.django_db
def test_the_job_list_and_page_show_a_served_jobs_share_and_nothing_for_others(
    make_user, client, reported
):
    owner = make_user("dora")
    served = running_job(owner, reported)
    unserved = running_job(owner, reported.replace("served", "alone"))
    staff = make_user("op", staff=True)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)

    listing = client.get("/admin/jobs/job/").content.decode()
    assert "workers held / fair share" in listing
    assert listing.count(">3 / 5</span>") == 1
    page = client.get(f"/admin/jobs/job/{served.id}/change/").content.decode()
    assert ">3 / 5</span>" in page
    other = client.get(f"/admin/jobs/job/{unserved.id}/change/").content.decode()
    assert "/ 5</span>" not in other and "workers held / fair share" not in other


@pytest.mark.django_db
def test_a_finished_job_shows_no_share_even_if_a_pool_still_lists_it(make_user, reported):
    job = running_job(make_user("dora"), reported)
    assert ops.job_share(job) == (3, 5)
    job.state = State.COMPLETE
    assert ops.job_share(job) is None
