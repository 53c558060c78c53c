"""Workflow catalog, service-info, the OpenAPI document and its offline viewer, the admin."""

import io

import jsonschema
import pytest

from jobs.execution.controller import write_stage
from jobs.execution.folder import JobFolder
from jobs.models import Job
from tests.support.ports import free_port


@pytest.mark.django_db
class TestWorkflows:
    def test_it_lists_the_catalog(self, api):
        body = api.get("/api/v1/workflows/").json()
        names = [w["name"] for w in body]
        assert "selftest" in names and "pam-stats" in names
        for workflow in body:
            assert workflow["description"]
            assert workflow["schema"]["type"] == "object"

    def test_each_example_is_valid_against_its_own_schema(self, api):
        for workflow in api.get("/api/v1/workflows/").json():
            jsonschema.validate(workflow["example"], workflow["schema"])
            assert workflow["example"]["workflow"] == workflow["name"]

    def test_the_selftest_example_is_accepted_as_given(self, api):
        example = api.get("/api/v1/workflows/selftest/").json()["example"]
        assert api.post("/api/v1/jobs/", example).status_code == 201

    def test_selftest_params_have_the_documented_bounds(self, api):
        params = api.get("/api/v1/workflows/selftest/").json()["schema"]["properties"]["params"]
        tasks, seconds = params["properties"]["tasks"], params["properties"]["seconds"]
        assert (tasks["minimum"], tasks["maximum"]) == (1, 10000)
        assert (seconds["minimum"], seconds["maximum"]) == (0, 600)

    def test_an_unknown_workflow_is_404(self, api):
        assert api.get("/api/v1/workflows/nope/").status_code == 404


@pytest.mark.django_db
def test_service_info_reports_versions_workflows_and_counts(api):
    Job.objects.create(owner=api.user, workflow="selftest", request={})
    body = api.get("/api/v1/service-info/").json()
    assert body["versions"]["lmweb"]
    assert "selftest" in body["workflows"]
    assert body["job_states"]["QUEUED"] == 1
    assert set(body["job_states"]) >= {"QUEUED", "RUNNING", "COMPLETE", "CANCELED"}


@pytest.mark.django_db
class TestOpenApi:
    def test_the_schema_describes_the_api(self, api):
        response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
        assert response.status_code == 200
        schema = response.json()
        assert schema["openapi"].startswith("3.")
        for path in ["/api/v1/jobs/", "/api/v1/jobs/{id}/cancel/", "/api/v1/datasets/"]:
            assert path in schema["paths"], sorted(schema["paths"])

    def test_the_viewer_loads_no_asset_from_the_internet(self, api, client):
        html = api.get("/api/docs/").content.decode()
        assert "swagger-ui" in html
        assert "https://" not in html and "http://cdn" not in html
        # Its assets are served by this service.
        assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html


@pytest.mark.django_db
class TestAdmin:
    def test_staff_see_the_job_list_with_progress_and_actions(self, make_user, client):
        staff = make_user("op", staff=True)
        staff.is_superuser = True
        staff.save()
        job = Job.objects.create(
            owner=staff, workflow="selftest", request={}, rules_total=4, rules_done=1
        )
        client.force_login(staff)
        page = client.get("/admin/jobs/job/").content.decode()
        assert str(job.id) in page
        assert "<progress" in page
        assert "requeue_jobs" in page and "cancel_jobs" in page
        assert client.get(f"/admin/jobs/job/{job.id}/change/").status_code == 200
        for path in ["/admin/jobs/dataset/", "/admin/jobs/output/", "/admin/authtoken/tokenproxy/"]:
            assert client.get(path).status_code == 200, path

    def test_the_cancel_action_cancels_queued_jobs(self, make_user, client):
        staff = make_user("op", staff=True)
        staff.is_superuser = True
        staff.save()
        job = Job.objects.create(owner=staff, workflow="selftest", request={})
        client.force_login(staff)
        client.post(
            "/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [str(job.id)]}
        )
        job.refresh_from_db()
        assert job.state == "CANCELED"

    def test_non_staff_cannot_enter(self, make_user, client):
        client.force_login(make_user("alice"))
        assert client.get("/admin/jobs/job/").status_code == 302


@pytest.mark.django_db
def test_drf_create_token_gives_a_working_token(make_user, data_dir):
    from django.core.management import call_command
    from rest_framework.test import APIClient

    make_user("carol")
    out = io.StringIO()
    call_command("drf_create_token", "carol", stdout=out)
    key = out.getvalue().split()[2]
    client = APIClient()
    assert client.get("/api/v1/jobs/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/jobs/").status_code == 200


@pytest.mark.django_db
def test_healthz_answers_without_credentials(client, catalog, settings, data_dir):
    settings.LMWEB_CATALOG = catalog
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "failed": []}


@pytest.mark.django_db
def test_healthz_names_a_catalog_that_does_not_answer(client, settings, data_dir):
    settings.LMWEB_CATALOG = f"127.0.0.1:{free_port()}"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["catalog"]


@pytest.mark.django_db
def test_service_info_reports_workers_seen_through_the_catalog(api, catalog, settings):
    settings.LMWEB_CATALOG = catalog
    body = api.get("/api/v1/service-info/").json()
    assert body["workers"]["reachable"] is True
    assert {"managers", "workers", "cores", "tasks_waiting"} <= set(body["workers"])
    assert isinstance(body["queue_depth"], int)
    assert body["versions"]["lmpy"] == "3.1.21"
    assert body["versions"]["cctools"] != "unknown"


@pytest.mark.django_db
def test_the_requeue_action_requeues_failed_jobs_only(make_user, client):
    staff = make_user("op", staff=True)
    staff.is_superuser = True
    staff.save()
    failed = Job.objects.create(owner=staff, workflow="selftest", request={}, state="SYSTEM_ERROR")
    running = Job.objects.create(owner=staff, workflow="selftest", request={}, state="RUNNING")
    client.force_login(staff)
    client.post(
        "/admin/jobs/job/",
        {"action": "requeue_jobs", "_selected_action": [str(failed.id), str(running.id)]},
    )
    failed.refresh_from_db()
    running.refresh_from_db()
    assert (failed.state, running.state) == ("QUEUED", "RUNNING")


@pytest.mark.django_db
def test_the_admin_job_page_shows_pictures_and_the_package(make_user, client, data_dir):
    from jobs.models import Output

    staff = make_user("op", staff=True)
    staff.is_superuser = True
    staff.save()
    job = Job.objects.create(owner=staff, workflow="selftest", request={}, state="COMPLETE")
    Output.objects.create(
        job=job, path="heatmap.png", role="result", media_type="image/png", size=1, sha256="x"
    )
    client.force_login(staff)
    page = client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert f'src="/api/v1/jobs/{job.id}/outputs/heatmap.png"' in page
    assert f'href="/api/v1/jobs/{job.id}/package/"' in page


@pytest.mark.django_db
def test_metrics_count_jobs_by_state_and_workflow_for_staff(staff_api, api, catalog, settings):
    import datetime as dt

    from django.utils import timezone

    settings.LMWEB_CATALOG = catalog
    now = timezone.now()
    Job.objects.create(owner=api.user, workflow="selftest", request={})
    Job.objects.create(
        owner=api.user,
        workflow="pam-stats",
        request={},
        state="COMPLETE",
        started_at=now - dt.timedelta(seconds=30),
        finished_at=now,
        rules_done=7,
    )
    assert api.get("/metrics").status_code == 403
    response = staff_api.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'lmweb_jobs{state="QUEUED",workflow="selftest"} 1.0' in text
    assert 'lmweb_job_duration_seconds_sum{workflow="pam-stats"} 30.0' in text
    assert 'lmweb_rules_done_total{workflow="pam-stats"} 7.0' in text
    assert "lmweb_catalog_up 1.0" in text
    assert "lmweb_queue_depth" in text


@pytest.mark.django_db
def test_metrics_need_credentials(anon_api):
    assert anon_api.get("/metrics").status_code == 401


@pytest.mark.django_db
def test_the_admin_job_page_draws_the_workflow_graph(make_user, client, data_dir):
    import translators

    staff = make_user("op", staff=True)
    staff.is_superuser = True
    staff.save()
    job = Job.objects.create(owner=staff, workflow="selftest", request={}, rules_total=4)
    stage = translators.get("selftest").plan(
        {"workflow": "selftest", "params": {"tasks": 3}}, {}, []
    )
    job.directory.mkdir(parents=True)
    write_stage(JobFolder.of(job), stage)  # as the controller writes it: the graph is drawn
    client.force_login(staff)
    page = client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    url = f"/admin/jobs/job/{job.id}/graph/main.svg"
    assert f'src="{url}"' in page
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert b"<svg" in response.content and b"gather" in response.content
    assert client.get(f"/admin/jobs/job/{job.id}/graph/other.svg").status_code == 404


@pytest.mark.django_db
def test_the_admin_job_page_lists_every_rule(make_user, client, data_dir):
    import json
    import shutil
    from pathlib import Path

    staff = make_user("op", staff=True)
    staff.is_superuser = True
    staff.save()
    job = Job.objects.create(owner=staff, workflow="selftest", request={}, state="COMPLETE")
    job.directory.mkdir(parents=True)
    recorded = Path(__file__).parent / "runner" / "data" / "R1"  # a real makeflow run's logs
    for suffix in ("", ".makeflowlog", ".wqlog.tr", ".stdout"):
        shutil.copy(recorded / f"dag.json{suffix}", job.directory / f"main.mf.json{suffix}")
    (job.directory / "stages.json").write_text(json.dumps({"done": ["main"], "started": ["main"]}))
    client.force_login(staff)
    page = client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert '<table class="lmweb-rules">' in page
    rules = Job.objects.get(pk=job.pk)
    from jobs.rules import read_tasks

    tasks = read_tasks(rules)
    assert tasks
    for task in tasks:
        assert f"<td>{task['rule']}</td>" in page
