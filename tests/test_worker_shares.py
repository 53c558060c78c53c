"""The pool learns whose each running job is, and the admin shows each running job's share of
the worker pools as the pools report it (through Redis, the real one), and nothing for a job no
pool serves."""

import secrets

import pytest
from django.utils import timezone

from jobs import ops
from jobs.management.commands.lmweb_workers import running_managers
from jobs.models import Job, State


def running_job(owner, project: str, port: int = 9300, state: str = State.RUNNING) -> Job:
    return Job.objects.create(
        owner=owner,
        workflow="selftest",
        request={"workflow": "selftest", "params": {"tasks": 3, "seconds": 0}},
        state=state,
        started_at=timezone.now(),
        manager_project=project,
        manager_port=port,
    )


@pytest.mark.django_db
def test_the_pool_is_told_the_owner_of_each_running_manager(make_user):
    ann, bob = make_user("ann"), make_user("bob")
    running_job(ann, "lmweb-t-a1-w9", 9301)
    running_job(ann, "lmweb-t-a2-w9", 9302)
    running_job(bob, "lmweb-t-b1-w2", 9303)
    running_job(bob, "lmweb-t-b2-w2", 9304, state=State.COMPLETE)

    owners = running_managers()

    assert set(owners) == {
        ("lmweb-t-a1-w9", 9301),
        ("lmweb-t-a2-w9", 9302),
        ("lmweb-t-b1-w2", 9303),
    }
    assert owners[("lmweb-t-a1-w9", 9301)] == owners[("lmweb-t-a2-w9", 9302)]
    assert owners[("lmweb-t-b1-w2", 9303)] != owners[("lmweb-t-a1-w9", 9301)]


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
