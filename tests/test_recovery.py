"""The recovery sweep: stale controllers lose their jobs to the queue, within bounded attempts."""

import datetime as dt

import pytest
from django.utils import timezone

from jobs.models import Job, State
from jobs.services import jobs_recover


@pytest.fixture
def make_job(make_user):
    owner = make_user("alice")

    def make(state, *, age_seconds, attempts=1):
        beat = timezone.now() - dt.timedelta(seconds=age_seconds)
        return Job.objects.create(
            owner=owner,
            workflow="selftest",
            request={},
            state=state,
            heartbeat_at=beat,
            attempts=attempts,
            claimed_by="host:1",
        )

    return make


@pytest.mark.django_db
class TestRecover:
    def test_a_running_job_without_heartbeat_is_requeued(self, make_job, settings):
        job = make_job(State.RUNNING, age_seconds=settings.LMWEB_STALE_SECONDS + 5)
        assert jobs_recover()["requeued"] == 1
        job.refresh_from_db()
        assert (job.state, job.claimed_by) == (State.QUEUED, "")

    def test_a_running_job_with_a_fresh_heartbeat_is_left_alone(self, make_job, settings):
        job = make_job(State.RUNNING, age_seconds=settings.LMWEB_STALE_SECONDS - 5)
        assert jobs_recover()["requeued"] == 0
        job.refresh_from_db()
        assert job.state == State.RUNNING

    def test_it_gives_up_after_the_allowed_attempts(self, make_job, settings):
        job = make_job(
            State.RUNNING,
            age_seconds=settings.LMWEB_STALE_SECONDS + 5,
            attempts=settings.LMWEB_MAX_ATTEMPTS,
        )
        assert jobs_recover()["failed"] == 1
        job.refresh_from_db()
        assert job.state == State.SYSTEM_ERROR
        assert "lost" in job.error_message

    def test_a_canceling_job_whose_controller_died_ends_canceled(self, make_job, settings):
        job = make_job(State.CANCELING, age_seconds=settings.LMWEB_STALE_SECONDS + 5)
        assert jobs_recover()["canceled"] == 1
        job.refresh_from_db()
        assert job.state == State.CANCELED


@pytest.mark.django_db
class TestLostMessages:
    @pytest.fixture
    def broker(self, settings):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        client.delete("lmweb-jobs")
        yield client
        client.delete("lmweb-jobs")

    def queued(self, make_user, age_seconds):
        submitted = timezone.now() - dt.timedelta(seconds=age_seconds)
        return Job.objects.create(
            owner=make_user("carol"), workflow="selftest", request={}, submitted_at=submitted
        )

    def test_a_queued_job_without_a_message_is_sent_again(self, make_user, broker, settings):
        job = self.queued(make_user, settings.LMWEB_STALE_SECONDS + 5)
        assert jobs_recover()["resent"] == 1
        messages = broker.lrange("lmweb-jobs", 0, -1)
        assert len(messages) == 1 and str(job.id).encode() in messages[0]

    def test_a_queued_job_whose_message_waits_is_not_sent_twice(self, make_user, broker, settings):
        from jobs.services import job_enqueue

        job = self.queued(make_user, settings.LMWEB_STALE_SECONDS + 5)
        job_enqueue(job_id=job.id)
        assert jobs_recover()["resent"] == 0
        assert broker.llen("lmweb-jobs") == 1

    def test_a_fresh_queued_job_is_left_to_its_first_message(self, make_user, broker):
        self.queued(make_user, 1)
        assert jobs_recover()["resent"] == 0
        assert broker.llen("lmweb-jobs") == 0
