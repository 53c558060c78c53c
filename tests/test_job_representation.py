"""The job document is built by hand for speed; it must stay what DRF's generic path makes."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from jobs.api.serializers import JobSerializer
from jobs.models import Job, State

pytestmark = pytest.mark.django_db


def generic(serializer: JobSerializer, job: Job) -> dict:
    return serializers.ModelSerializer.to_representation(serializer, job)


@pytest.fixture
def jobs(make_user):
    owner = make_user("representation")
    start = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    return [
        Job.objects.create(owner=owner, workflow="selftest", request={"params": {"tasks": 1}}),
        Job.objects.create(
            owner=owner,
            workflow="pam-stats",
            name='ñame "quoted" <b>',
            tags={"project": "heuchera"},
            request={"workflow": "pam-stats", "params": {"randomizations": 20}},
            state=State.EXECUTOR_ERROR,
            stage="main",
            rules_total=7,
            rules_done=3,
            rules_failed=1,
            rules_waiting=2,
            rules_running=1,
            error_code="RULE_FAILED",
            error_message="exit code 3",
            submitted_at=start,
            started_at=start + timedelta(seconds=1),
            finished_at=start + timedelta(seconds=9),
            heartbeat_at=start + timedelta(seconds=8),
            attempts=2,
        ),
        Job.objects.create(
            owner=owner, workflow="selftest", request={}, state=State.COMPLETE, rules_total=0
        ),
    ]


@pytest.mark.parametrize("host", ["testserver", "lmweb.example.org:8443"])
@pytest.mark.parametrize("detail", [False, True])
def test_hand_built_document_equals_generic_one(jobs, host, detail, settings):
    settings.ALLOWED_HOSTS = ["testserver", "lmweb.example.org"]
    request = APIRequestFactory().get("/api/v1/jobs/", HTTP_HOST=host)
    for job in jobs:
        job.refresh_from_db()
        serializer = JobSerializer(context={"request": request, "detail": detail})
        if detail:
            # The waiting reason asks the broker and catalog; compare the rest of the document.
            serializer.get_waiting = lambda job: None
        assert serializer.to_representation(job) == generic(serializer, job)
        assert list(serializer.to_representation(job)) == list(generic(serializer, job))


def test_a_list_reverses_urls_once(jobs):
    request = APIRequestFactory().get("/api/v1/jobs/")
    many = JobSerializer(jobs, many=True, context={"request": request, "detail": False})
    documents = many.data
    assert [doc["id"] for doc in documents] == [str(job.id) for job in jobs]
    assert all(doc["url"].endswith(f"/api/v1/jobs/{doc['id']}/") for doc in documents)
    assert documents[1]["links"]["package"].endswith(f"/api/v1/jobs/{documents[1]['id']}/package/")


def test_times_follow_the_active_time_zone_as_drfs_do(jobs):
    request = APIRequestFactory().get("/api/v1/jobs/")
    with timezone.override("America/Chicago"):
        serializer = JobSerializer(context={"request": request, "detail": False})
        job = jobs[1]
        job.refresh_from_db()
        assert serializer.to_representation(job) == generic(serializer, job)
        assert serializer.to_representation(job)["finished_at"].endswith("-06:00")
