"""Job state transitions: only legal moves, and only by the writer that saw the current state."""

import pytest

from jobs.models import FINISHED_STATES, TRANSITIONS, IllegalTransition, Job, State


@pytest.fixture
def job(make_user):
    return Job.objects.create(owner=make_user("alice"), workflow="selftest", request={})


@pytest.mark.django_db
class TestTransitions:
    def test_a_job_starts_queued(self, job):
        assert job.state == State.QUEUED

    def test_the_normal_life_stamps_times(self, job):
        job.transition(State.INITIALIZING)
        assert job.started_at is not None
        job.transition(State.RUNNING)
        job.transition(State.COMPLETE)
        job.refresh_from_db()
        assert job.state == State.COMPLETE
        assert job.finished_at >= job.started_at

    @pytest.mark.parametrize(
        ("source", "target"),
        [
            (State.QUEUED, State.COMPLETE),
            (State.QUEUED, State.RUNNING),
            (State.COMPLETE, State.RUNNING),
            (State.COMPLETE, State.QUEUED),
            (State.CANCELED, State.RUNNING),
            (State.CANCELING, State.COMPLETE),
        ],
    )
    def test_it_refuses_illegal_moves(self, job, source, target):
        Job.objects.filter(pk=job.pk).update(state=source)
        job.refresh_from_db()
        with pytest.raises(IllegalTransition):
            job.transition(target)
        job.refresh_from_db()
        assert job.state == source

    def test_only_one_of_two_racing_writers_wins(self, job):
        first, second = Job.objects.get(pk=job.pk), Job.objects.get(pk=job.pk)
        first.transition(State.INITIALIZING, claimed_by="controller-1")
        with pytest.raises(IllegalTransition):
            second.transition(State.INITIALIZING, claimed_by="controller-2")
        job.refresh_from_db()
        assert job.claimed_by == "controller-1"

    def test_requeue_clears_the_claim_and_the_finish_time(self, job):
        job.transition(State.INITIALIZING, claimed_by="c1")
        job.transition(State.SYSTEM_ERROR, error_message="boom")
        job.transition(State.QUEUED)
        job.refresh_from_db()
        assert (job.claimed_by, job.finished_at) == ("", None)

    def test_finished_states_only_leave_by_requeue(self):
        for state in FINISHED_STATES:
            assert TRANSITIONS[state] <= {State.QUEUED}
