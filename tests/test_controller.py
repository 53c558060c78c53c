"""The controller's run loop against recorded makeflow logs, replayed line by line: it stores
progress, hands a job back on shutdown, stops for a cancel or a lost job, and ends a stuck run.
The same cases run end to end, with real processes, in tests/integration/test_faults.py."""

import datetime as dt
import importlib
import os
import subprocess
from pathlib import Path

import pytest
from django.utils import timezone

from jobs import dispatch, services, versions
from jobs.cctools import log as makeflowlog
from jobs.execution import controller, handback
from jobs.execution.controller import write_stage
from jobs.execution.folder import JobFolder
from jobs.models import Dataset, IllegalTransition, Job, Output, State
from jobs.services import Canceled, LostJob
from jobs.validation import validate_request

RECORDED = Path(__file__).parent / "runner" / "data"
ME = "host:1"


class ReplayedRun:
    """Stands in for a makeflow run: each poll or wait appends the next lines of a recorded
    log; `at` maps a line number to something that happens meanwhile (a cancel...)."""

    def __init__(
        self, recorded: Path, log_file: Path, *, exits: bool = True, at=None, upto=None
    ) -> None:
        self.lines = recorded.read_text().splitlines(keepends=True)
        if upto is not None:  # replay only the lines before the first one starting so
            self.lines = self.lines[
                : next(i for i, x in enumerate(self.lines) if x.startswith(upto))
            ]
        self.log_file = log_file
        self.written = 0
        self.exits = exits
        self.at = dict(at or {})
        self.stopped = False

    def _advance(self) -> None:
        if self.written < len(self.lines):
            with self.log_file.open("a") as handle:
                handle.write(self.lines[self.written])
            self.written += 1
            if self.written in self.at:
                self.at.pop(self.written)()

    def poll(self) -> int | None:
        if self.stopped:
            return -15
        if self.exits and self.written >= len(self.lines):
            return 0
        return None

    def wait(self, timeout: float) -> int:
        self._advance()
        if self.poll() is None:
            raise subprocess.TimeoutExpired("makeflow", timeout)
        return self.poll()

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def running_job(make_user, data_dir, settings):
    settings.LMWEB_POLL_SECONDS = 0
    job = Job.objects.create(
        owner=make_user("dora"),
        workflow="selftest",
        # As stored at submission: checked, defaults filled.
        request=validate_request(
            {"workflow": "selftest", "params": {"tasks": 3}}, datasets=Dataset.objects.none()
        ).request,
        state=State.RUNNING,
        claimed_by=ME,
        attempts=1,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    job.directory.mkdir(parents=True)
    return job


def replay(job: Job, recording: str, **options) -> tuple[ReplayedRun, Path]:
    log_file = job.directory / "main.mf.json.makeflowlog"
    recorded = RECORDED / recording / "dag.json.makeflowlog"
    return ReplayedRun(recorded, log_file, **options), log_file


def follow(job: Job, run: ReplayedRun, log_file: Path):
    return controller.follow(job, ME, run, log_file, stage="main", rules_before=0)


class TestFollowingALog:
    def test_it_stores_the_progress_of_a_finished_run(self, running_job):
        run, log_file = replay(running_job, "R1")
        progress = follow(running_job, run, log_file)
        assert makeflowlog.outcome(progress) == "success"
        job = Job.objects.get(pk=running_job.pk)
        assert (job.rules_total, job.rules_done, job.rules_running) == (5, 5, 0)
        assert job.state == State.RUNNING and job.stage == "main"

    def test_it_hands_the_job_back_when_its_worker_shuts_down(
        self, running_job, django_capture_on_commit_callbacks
    ):
        run, log_file = replay(
            running_job, "R1", at={45: lambda: handback.request_handback(os.getppid())}
        )
        try:
            with pytest.raises(handback.HandBack):
                follow(running_job, run, log_file)
        finally:
            handback.clear_handback(os.getppid())
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            services.job_hand_back(job=running_job, controller=ME)
        job = Job.objects.get(pk=running_job.pk)
        assert (job.state, job.claimed_by, job.attempts) == (State.QUEUED, "", 0)
        assert len(callbacks) == 1  # sent to the queue again once committed

    def test_it_stops_for_a_cancel_and_the_job_ends_canceled(self, running_job):
        canceled = lambda: services.job_cancel(job=Job.objects.get(pk=running_job.pk))  # noqa: E731
        run, log_file = replay(running_job, "R1", at={45: canceled})
        with pytest.raises(Canceled):
            follow(running_job, run, log_file)
        assert Job.objects.get(pk=running_job.pk).state == State.CANCELING
        services.job_finish_cancel(job=running_job, controller=ME)
        job = Job.objects.get(pk=running_job.pk)
        assert (job.state, job.claimed_by) == (State.CANCELED, "")
        assert job.finished_at is not None

    def test_it_stops_without_a_write_once_recovery_took_the_job(self, running_job, settings):
        def lost() -> None:
            stale = timezone.now() - dt.timedelta(seconds=settings.LMWEB_STALE_SECONDS + 1)
            Job.objects.filter(pk=running_job.pk).update(heartbeat_at=stale)
            assert services.jobs_recover()["requeued"] == 1

        run, log_file = replay(running_job, "R1", at={45: lost})
        with pytest.raises(LostJob):
            follow(running_job, run, log_file)
        services.job_fail(
            job=running_job, controller=ME, state=State.SYSTEM_ERROR, code="x", message="x"
        )
        job = Job.objects.get(pk=running_job.pk)
        assert (job.state, job.claimed_by, job.error_code) == (State.QUEUED, "", "")

    def test_it_stops_a_run_stuck_behind_a_failed_rule(self, running_job, settings):
        # The recording up to its stop: c.txt made, a.txt failed, b.txt waits on a.txt for good.
        settings.LMWEB_STUCK_SECONDS = 0.05
        run, log_file = replay(running_job, "j3", exits=False, upto="# ABORTED")
        progress = follow(running_job, run, log_file)
        assert run.stopped
        assert (progress.failed, progress.waiting, progress.complete) == (1, 1, 1)
        assert makeflowlog.outcome(progress) == "failed"

    def test_a_run_that_is_not_stuck_is_followed_to_its_end(self, running_job, settings):
        settings.LMWEB_STUCK_SECONDS = 3600
        run, log_file = replay(running_job, "j3")
        progress = follow(running_job, run, log_file)
        assert not run.stopped
        assert makeflowlog.outcome(progress) == "failed"

    def test_it_stops_a_job_over_its_time_limit(self, running_job, settings):
        running_job.started_at = timezone.now() - dt.timedelta(seconds=settings.JOB_MAX_SECONDS + 1)
        run, log_file = replay(running_job, "R1")
        with pytest.raises(controller.TimeLimit):
            follow(running_job, run, log_file)


@pytest.mark.django_db
class TestGuardedTransitions:
    def test_the_table_refuses_a_move_it_does_not_list(self, running_job):
        with pytest.raises(IllegalTransition):
            Job.move(running_job.pk, State.COMPLETE, sources=[State.QUEUED])

    def test_a_move_from_a_state_the_job_left_changes_nothing(self, running_job):
        assert not Job.move(running_job.pk, State.RUNNING, sources=[State.INITIALIZING])
        assert Job.objects.get(pk=running_job.pk).state == State.RUNNING

    def test_a_controller_cannot_fail_a_job_it_does_not_hold(self, running_job):
        services.job_fail(
            job=running_job, controller="other:2", state=State.SYSTEM_ERROR, code="x", message="x"
        )
        assert Job.objects.get(pk=running_job.pk).state == State.RUNNING

    def test_the_holder_fails_its_job(self, running_job):
        services.job_fail(
            job=running_job, controller=ME, state=State.SYSTEM_ERROR, code="x", message="boom"
        )
        job = Job.objects.get(pk=running_job.pk)
        assert (job.state, job.error_message, job.claimed_by) == (State.SYSTEM_ERROR, "boom", "")

    def test_a_cancel_that_comes_as_the_work_finishes_keeps_the_results(self, running_job):
        services.job_cancel(job=running_job)
        outputs = [dict(path="a.txt", role="result", media_type="text/plain", size=1, sha256="0")]
        with pytest.raises(Canceled):
            services.job_complete(job=running_job, controller=ME, outputs=outputs)
        assert Output.objects.filter(job=running_job).count() == 1

    def test_the_holder_completes_its_job(self, running_job):
        services.job_complete(job=running_job, controller=ME, outputs=[])
        job = Job.objects.get(pk=running_job.pk)
        assert (job.state, job.claimed_by) == (State.COMPLETE, "")
        assert job.finished_at is not None


@pytest.mark.django_db
class TestWrittenStage:
    def plan(self):
        import translators

        return translators.get("selftest").plan(
            {"workflow": "selftest", "params": {"tasks": 3}}, {}, []
        )

    def test_a_written_stage_carries_its_width_and_outputs(self, running_job):
        folder = JobFolder.of(running_job)
        stage = write_stage(folder, self.plan())
        assert stage.width == 3
        assert stage.outputs
        recorded = folder.read_stages()["stages"]["main"]
        assert recorded == {"width": stage.width, "outputs": list(stage.outputs)}

    def test_a_finished_stage_products_come_from_its_record_not_its_file(self, running_job):
        folder = JobFolder.of(running_job)
        stage = write_stage(folder, self.plan())
        for name in stage.outputs:
            (folder.root / name).parent.mkdir(parents=True, exist_ok=True)
            (folder.root / name).write_text("made")
        (folder.root / stage.dag).unlink()
        assert folder.products("main") == sorted(stage.outputs)

    def test_a_record_from_before_stages_carried_outputs_reads_them_from_the_stage_file(
        self, running_job
    ):
        folder = JobFolder.of(running_job)
        stage = write_stage(folder, self.plan())
        for name in stage.outputs:
            (folder.root / name).parent.mkdir(parents=True, exist_ok=True)
            (folder.root / name).write_text("made")
        folder.stages_file.write_text('{"done": ["main"], "started": ["main"]}')
        assert folder.products("main") == sorted(stage.outputs)
        (folder.root / stage.dag).unlink()
        assert folder.products("main") == []


def test_the_controller_plans_from_the_request_checked_at_submission(running_job, monkeypatch):
    import translators
    from translators.base import Workflow

    def refuse(*args, **kwargs):
        raise AssertionError("the request was checked or filled again")

    monkeypatch.setattr(Workflow, "validate", refuse)
    monkeypatch.setattr(Workflow, "with_defaults", refuse)
    workflow = translators.get("selftest")
    stage = controller.plan_next(running_job, workflow, {}, [], {})
    assert stage.name == "main"
    assert controller.plan_next(running_job, workflow, {}, ["main"], {"main": []}) is None


@pytest.fixture
def no_process(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a request started a process: {args[1] if len(args) > 1 else ''}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture
def web_process_started():
    """What a web process does as it starts: load lmweb/wsgi.py (which reads the versions)."""
    import lmweb.wsgi

    versions._versions.clear()
    importlib.reload(lmweb.wsgi)


def test_the_web_process_reads_the_versions_as_it_starts(web_process_started):
    assert "makeflow version" in versions._versions["cctools"]


@pytest.mark.django_db
def test_service_info_starts_no_process(web_process_started, api, no_process):
    body = api.get("/api/v1/service-info/").json()
    assert "makeflow version" in body["versions"]["cctools"]


@pytest.mark.django_db
def test_the_admin_graph_page_starts_no_process(make_user, client, running_job):
    staff = make_user("op", staff=True)
    staff.is_superuser = True
    staff.save()
    write_stage(JobFolder.of(running_job), TestWrittenStage().plan())
    client.force_login(staff)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", lambda *a, **k: pytest.fail("a process"))
        response = client.get(f"/admin/jobs/job/{running_job.id}/graph/main.svg")
    assert response.status_code == 200
    assert b"<svg" in response.content


def test_celery_sends_a_job_again_to_the_queue_that_dispatch_names(settings):
    # Retries are published by Celery itself, through its routes: they must agree with dispatch.
    assert settings.CELERY_TASK_ROUTES[dispatch.RUN_JOB]["queue"] == dispatch.JOB_QUEUE


def test_a_rule_is_sized_from_a_zipped_matrix_unpacked(tmp_path):
    """A 320 MB array zips to a few MB: rules that load it are sized from what they will hold."""
    import io
    import zipfile

    folder = JobFolder(tmp_path)
    (tmp_path / "inputs").mkdir()
    arrays = io.BytesIO()
    with zipfile.ZipFile(arrays, "w", zipfile.ZIP_DEFLATED) as npz:
        npz.writestr("arr_0.npy", bytes(8 * 1024 * 1024))
    with zipfile.ZipFile(tmp_path / "inputs" / "pam.lmm", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.npz", arrays.getvalue())
        archive.writestr("headers.json", "{}")
    with zipfile.ZipFile(tmp_path / "inputs" / "odd.lmm", "w") as archive:
        archive.writestr("data.npz", b"not a zip at all")
    (tmp_path / "inputs" / "tree.nex").write_text("#NEXUS\n")
    (tmp_path / "inputs" / "fake.lmm").write_bytes(b"PK\x03\x04 not a zip")
    names = ["pam.lmm", "tree.nex", "fake.lmm", "odd.lmm", "none"]
    sizes = folder.sizes([f"inputs/{name}" for name in names])
    assert (tmp_path / "inputs" / "pam.lmm").stat().st_size < 100_000
    assert sizes["inputs/pam.lmm"] == 8 * 1024 * 1024 + 2
    assert sizes["inputs/tree.nex"] == 7
    assert sizes["inputs/fake.lmm"] == 14
    assert sizes["inputs/odd.lmm"] == (tmp_path / "inputs" / "odd.lmm").stat().st_size
    assert "inputs/none" not in sizes
