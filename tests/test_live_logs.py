"""Live logs, the service's side: what a running rule's guard sends is kept only with the job's
token, only while the job runs, appended at the right offset (from 0 it starts over: a new
attempt), within a size. The guard's side is tests/runner/test_guard.py; a running rule's log
read as it grows, through the API and `lmweb logs -f`, is tests/integration/test_live_logs.py."""

import pytest

from jobs import rules
from jobs.execution.folder import JobFolder
from jobs.models import State
from tests.support.factories import make_job


def send(client, job, data: bytes, *, offset=0, token=None, stream="stderr", rule="task-00001"):
    token = rules.live_log_token(job.id) if token is None else token
    return client.post(
        f"/api/v1/live-logs/{job.id}/main/{rule}?stream={stream}&offset={offset}",
        data=data,
        content_type="application/octet-stream",
        HTTP_AUTHORIZATION=f"LiveLog {token}",
    )


@pytest.mark.django_db
class TestLiveLogs:
    def test_a_running_jobs_rule_output_is_appended_at_its_offset(self, anon_api, make_user):
        job = make_job(make_user("ana"), state=State.RUNNING)
        path = JobFolder.of(job).live_log("main", "task-00001", "stderr")
        first = send(anon_api, job, b"line 0\n")
        assert first.status_code == 204 and first["X-Log-Size"] == "7"
        assert send(anon_api, job, b"line 1\n", offset=7)["X-Log-Size"] == "14"
        assert path.read_bytes() == b"line 0\nline 1\n"
        behind = send(anon_api, job, b"again\n", offset=3)
        assert behind.status_code == 409 and behind["X-Log-Size"] == "14"
        assert path.read_bytes() == b"line 0\nline 1\n"
        # A new attempt of the rule starts from 0: the log starts over.
        assert send(anon_api, job, b"retry\n")["X-Log-Size"] == "6"
        assert path.read_bytes() == b"retry\n"

    def test_only_the_jobs_token_only_while_it_runs(self, anon_api, make_user):
        owner = make_user("ana")
        job, other = make_job(owner, state=State.RUNNING), make_job(owner, state=State.RUNNING)
        assert send(anon_api, job, b"x", token=rules.live_log_token(other.id)).status_code == 403
        assert send(anon_api, job, b"x", token="forged").status_code == 403
        assert send(anon_api, job, b"x", stream="stdin").status_code == 400
        assert send(anon_api, job, b"x", rule="../../etc").status_code in {400, 404}
        done = make_job(owner, state=State.COMPLETE)
        assert send(anon_api, done, b"x").status_code == 410
        assert not JobFolder.of(done).live_log("main", "task-00001", "stderr").exists()

    def test_a_live_log_stops_at_its_size(self, anon_api, make_user, settings):
        settings.LIVE_LOG_MAX_BYTES = 10
        job = make_job(make_user("ana"), state=State.RUNNING)
        assert send(anon_api, job, b"12345678").status_code == 204
        full = send(anon_api, job, b"9ab", offset=8)
        assert full.status_code == 413 and full["X-Log-Size"] == "8"

    def test_the_token_is_the_same_for_every_stage_written(self):
        assert rules.live_log_token("j") == rules.live_log_token("j")
        assert rules.live_log_token_valid("j", rules.live_log_token("j"))
        assert not rules.live_log_token_valid("k", rules.live_log_token("j"))
