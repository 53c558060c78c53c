"""GA4GH WES 1.1.0 at /ga4gh/wes/v1/, in process: the same jobs, owners, checks and 404s as
/api/v1/, WES's documents and ErrorResponse bodies. The running stack, the reference client and
schemathesis drive it in tests/integration/test_wes.py."""

import datetime as dt
import io
import json
import uuid

import pytest
from django.utils import timezone

import translators
from jobs.models import Dataset, Job, Output, State
from tests.support.factories import make_job
from tests.support.payloads import TREE, lmm_bytes

WES = "/ga4gh/wes/v1"


def attachment(name: str, content: bytes):
    handle = io.BytesIO(content)
    handle.name = name
    return handle


def submit(client, *, files=(), **fields):
    """POST /runs as WES clients send it: multipart, every field a string."""
    data = {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in fields.items()
    }
    if files:
        data["workflow_attachment"] = list(files)
    return client.post(f"{WES}/runs", data, format="multipart")


def pam_run(**params):
    return {
        "inputs": {"pam": "pam.lmm", "tree": "tree.tre"},
        "params": {"randomizations": 10, **params},
    }


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"msg", "status_code"} and body["status_code"] == status, body
    return body["msg"]


def nothing_written(data_dir) -> bool:
    stored = list((data_dir / "datasets").glob("*")) if (data_dir / "datasets").exists() else []
    return Job.objects.count() == 0 and Dataset.objects.count() == 0 and stored == []


@pytest.mark.django_db
class TestServiceInfo:
    def test_it_describes_the_catalog_engine_and_states_to_anyone(self, anon_api, make_user):
        owner = make_user("someone")
        make_job(owner)
        make_job(owner, state=State.COMPLETE)
        response = anon_api.get(f"{WES}/service-info")
        assert response.status_code == 200, response.content
        info = response.json()
        assert info["type"] == {"group": "org.ga4gh", "artifact": "wes", "version": "1.1.0"}
        assert info["supported_wes_versions"] == ["1.1.0"]
        lmweb_type = info["workflow_type_versions"]["LMWEB"]
        assert lmweb_type["workflow_type_version"] == ["1"]
        assert set(lmweb_type["workflows"]) == set(translators.names())
        assert lmweb_type["workflows"]["pam-stats"]["url"].endswith("/api/v1/workflows/pam-stats/")
        assert list(info["workflow_engine_versions"]) == ["makeflow"]
        assert info["default_workflow_engine_parameters"] == [
            {"name": "name", "type": "string", "default_value": ""}
        ]
        counts = info["system_state_counts"]
        assert counts["QUEUED"] == 1 and counts["COMPLETE"] == 1 and counts["RUNNING"] == 0
        assert info["supported_filesystem_protocols"] == ["http"]
        for field in ("id", "name", "organization", "version", "tags"):
            assert info[field]

    def test_its_auth_instructions_url_serves_the_readme(self, anon_api):
        url = anon_api.get(f"{WES}/service-info").json()["auth_instructions_url"]
        assert url.endswith("/readme")
        response = anon_api.get("/readme")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/markdown")
        text = b"".join(response.streaming_content).decode()
        assert "## Using the API" in text and "Token" in text


@pytest.mark.django_db
class TestRunWorkflow:
    def test_a_catalog_workflow_runs_as_a_job_of_the_caller(self, api):
        response = submit(
            api,
            workflow_url="selftest",
            workflow_type="LMWEB",
            workflow_type_version="1",
            workflow_params={"params": {"tasks": 2, "seconds": 0}},
            tags={"project": "wes"},
            workflow_engine_parameters={"name": "from wes"},
        )
        assert response.status_code == 200, response.content
        run_id = response.json()["run_id"]
        assert set(response.json()) == {"run_id"}
        job = Job.objects.get(pk=run_id)
        assert job.owner == api.user and job.state == State.QUEUED
        assert job.workflow == "selftest" and job.name == "from wes"
        assert job.tags == {"project": "wes"}
        assert job.request["params"]["tasks"] == 2

    def test_the_catalog_url_of_a_workflow_names_it_too(self, api):
        url = api.get("/api/v1/workflows/selftest/").json()["url"]
        response = submit(api, workflow_url=url, workflow_params={})
        assert response.status_code == 200, response.content
        assert Job.objects.get(pk=response.json()["run_id"]).workflow == "selftest"

    def test_each_attachment_becomes_the_callers_dataset_named_in_the_inputs(self, api):
        files = [attachment("pam.lmm", lmm_bytes()), attachment("tree.tre", TREE)]
        response = submit(api, workflow_url="pam-stats", workflow_params=pam_run(), files=files)
        assert response.status_code == 200, response.content
        job = Job.objects.get(pk=response.json()["run_id"])
        datasets = {d.name: d for d in Dataset.objects.filter(owner=api.user)}
        assert set(datasets) == {"pam.lmm", "tree.tre"}
        assert datasets["pam.lmm"].format == "lmm" and datasets["tree.tre"].format == "newick"
        assert job.request["inputs"] == {
            "pam": str(datasets["pam.lmm"].id),
            "tree": str(datasets["tree.tre"].id),
        }
        assert {i.dataset_id for i in job.inputs.all()} == {d.id for d in datasets.values()}

    def test_inputs_may_name_datasets_uploaded_before(self, api, pam_dataset):
        run = {"inputs": {"pam": pam_dataset["id"]}, "params": {"randomizations": 10}}
        response = submit(api, workflow_url="pam-stats", workflow_params=run)
        assert response.status_code == 200, response.content

    @pytest.mark.parametrize(
        ("fields", "named"),
        [
            ({"workflow_url": "no-such-flow"}, "workflow_url"),
            ({"workflow_url": "https://example.org/flow.cwl"}, "workflow_url"),
            ({}, "workflow_url"),
            ({"workflow_url": "selftest", "workflow_type": "CWL"}, "workflow_type"),
            ({"workflow_url": "selftest", "workflow_type_version": "v1.2"},
             "workflow_type_version"),
            ({"workflow_url": "selftest", "workflow_engine": "cromwell"}, "workflow_engine"),
            ({"workflow_url": "selftest", "workflow_engine_version": "0.1"},
             "workflow_engine_version"),
            ({"workflow_url": "selftest", "workflow_params": "{not json"}, "workflow_params"),
            ({"workflow_url": "selftest", "workflow_params": "[1]"}, "workflow_params"),
            ({"workflow_url": "selftest", "workflow_params": {"seed": 1}}, "workflow_params.seed"),
            ({"workflow_url": "selftest", "tags": {"a": 1}}, "tags"),
            ({"workflow_url": "selftest", "workflow_engine_parameters": {"cores": "8"}},
             "workflow_engine_parameters.cores"),
            ({"workflow_url": "selftest", "workflow_params": {"params": {"tasks": -1}}},
             "workflow_params.params.tasks"),
        ],
    )  # fmt: skip
    def test_a_bad_request_is_a_400_naming_the_field_and_writes_nothing(
        self, api, data_dir, fields, named
    ):
        files = [attachment("pam.lmm", lmm_bytes())]
        msg = error_of(submit(api, files=files, **fields), 400)
        assert named in msg, msg
        assert nothing_written(data_dir)

    def test_a_refused_request_keeps_none_of_its_attachments(self, api, data_dir):
        files = [attachment("pam.lmm", lmm_bytes()), attachment("tree.tre", TREE)]
        run = pam_run(randomizations=0, alpha=7)
        msg = error_of(submit(api, workflow_url="pam-stats", workflow_params=run, files=files), 400)
        assert "workflow_params.params.alpha" in msg, msg
        assert nothing_written(data_dir)

    def test_an_attachment_of_the_wrong_format_is_named_and_nothing_stays(self, api, data_dir):
        files = [attachment("pam.lmm", TREE), attachment("tree.tre", TREE)]
        msg = error_of(
            submit(api, workflow_url="pam-stats", workflow_params=pam_run(), files=files), 400
        )
        assert "workflow_params.inputs.pam" in msg, msg
        assert nothing_written(data_dir)

    def test_two_attachments_of_one_name_are_refused(self, api, data_dir):
        files = [attachment("pam.lmm", lmm_bytes()), attachment("pam.lmm", lmm_bytes())]
        response = submit(api, workflow_url="pam-stats", workflow_params=pam_run(), files=files)
        assert "workflow_attachment" in error_of(response, 400)
        assert nothing_written(data_dir)

    def test_a_file_outside_workflow_attachment_is_refused(self, api, data_dir):
        data = {"workflow_url": "selftest", "extra": attachment("a.txt", b"x")}
        response = api.post(f"{WES}/runs", data, format="multipart")
        assert "extra" in error_of(response, 400)
        assert nothing_written(data_dir)

    def test_anonymous_callers_get_a_401_error_response(self, anon_api, data_dir):
        error_of(submit(anon_api, workflow_url="selftest"), 401)
        error_of(anon_api.get(f"{WES}/runs"), 401)
        assert nothing_written(data_dir)


def _jobs(owner, count: int, start: dt.datetime) -> list[Job]:
    return [
        make_job(owner, submitted_at=start + dt.timedelta(seconds=i), tags={"n": str(i)})
        for i in range(count)
    ]


@pytest.mark.django_db
class TestListRuns:
    def test_pages_hold_the_callers_runs_newest_first_as_they_were_at_the_first_page(
        self, api, other_api
    ):
        start = timezone.now() - dt.timedelta(hours=1)
        mine = _jobs(api.user, 5, start)
        _jobs(other_api.user, 2, start)
        # Two runs at one instant: the order still holds, by id.
        mine.append(make_job(api.user, submitted_at=mine[2].submitted_at))
        seen, token, pages = [], None, 0
        while True:
            query = {"page_size": 2, **({"page_token": token} if token else {})}
            body = api.get(f"{WES}/runs", query).json()
            assert len(body["runs"]) <= 2
            seen += body["runs"]
            pages += 1
            if pages == 1:
                make_job(api.user)  # submitted after the first page: not in this listing
            token = body["next_page_token"]
            if not token:
                break
        ids = [run["run_id"] for run in seen]
        expected = sorted(mine, key=lambda j: (j.submitted_at, str(j.id)), reverse=True)
        assert ids == [str(job.id) for job in expected]
        assert seen[0] == {
            "run_id": str(expected[0].id),
            "state": "QUEUED",
            "tags": {"n": "4"},
        }

    def test_a_forged_or_foreign_token_is_a_400(self, api):
        msg = error_of(api.get(f"{WES}/runs", {"page_token": "eyJ0IjoxfQ:forged"}), 400)
        assert "page_token" in msg
        assert "page_size" in error_of(api.get(f"{WES}/runs", {"page_size": "x"}), 400)
        assert "page_size" in error_of(api.get(f"{WES}/runs", {"page_size": 0}), 400)


@pytest.mark.django_db
class TestRun:
    def test_a_complete_run_has_its_request_outputs_and_task_logs_url(self, api):
        finished = timezone.now()
        job = make_job(
            api.user,
            workflow="selftest",
            name="done",
            request={"workflow": "selftest", "inputs": {}, "params": {"tasks": 1}},
            tags={"k": "v"},
            state=State.COMPLETE,
            started_at=finished - dt.timedelta(seconds=5),
            finished_at=finished,
        )
        Output.objects.create(
            job=job, path="report.html", role="report", media_type="text/html", size=3,
            sha256="a" * 64,
        )  # fmt: skip
        body = api.get(f"{WES}/runs/{job.id}").json()
        assert body["run_id"] == str(job.id) and body["state"] == "COMPLETE"
        request = body["request"]
        assert request["workflow_url"].endswith("/api/v1/workflows/selftest/")
        assert request["workflow_type"] == "LMWEB" and request["workflow_type_version"] == "1"
        assert request["workflow_params"] == {"inputs": {}, "params": {"tasks": 1}}
        assert request["tags"] == {"k": "v"}
        assert request["workflow_engine_parameters"] == {"name": "done"}
        assert body["run_log"]["exit_code"] == 0
        assert body["run_log"]["end_time"] == finished.astimezone(dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        assert body["task_logs_url"].endswith(f"/ga4gh/wes/v1/runs/{job.id}/tasks")
        report = body["outputs"]["files"]["report.html"]
        assert report["url"].endswith(f"/api/v1/jobs/{job.id}/outputs/report.html")
        assert report["sha256"] == "a" * 64
        assert body["outputs"]["package"].endswith(f"/api/v1/jobs/{job.id}/package/")
        assert api.get(f"{WES}/runs/{job.id}/status").json() == {
            "run_id": str(job.id),
            "state": "COMPLETE",
        }
        assert api.get(f"{WES}/runs/{job.id}/tasks").json() == {
            "task_logs": [],
            "next_page_token": "",
        }

    def test_a_failed_run_says_why_in_its_system_logs(self, api):
        job = make_job(
            api.user, state=State.EXECUTOR_ERROR, error_code="rule_failed", error_message="x"
        )
        run_log = api.get(f"{WES}/runs/{job.id}").json()["run_log"]
        assert run_log["exit_code"] == 1 and run_log["system_logs"] == ["rule_failed: x"]

    def test_cancel_stops_a_queued_run_and_a_finished_one_is_a_409(self, api):
        job = make_job(api.user)
        response = api.post(f"{WES}/runs/{job.id}/cancel")
        assert response.status_code == 200 and response.json() == {"run_id": str(job.id)}
        job.refresh_from_db()
        assert job.state == State.CANCELED
        assert api.post(f"{WES}/runs/{job.id}/cancel").status_code == 200  # already: the same
        done = make_job(api.user, state=State.COMPLETE)
        assert "finished" in error_of(api.post(f"{WES}/runs/{done.id}/cancel"), 409)

    @pytest.mark.parametrize(
        "path",
        ["", "/status", "/tasks", "/tasks/main:report"],
        ids=["log", "status", "tasks", "task"],
    )
    def test_another_users_run_and_a_malformed_id_are_404(self, api, other_api, path):
        job = make_job(other_api.user)
        for run_id in (job.id, uuid.uuid4(), "not-a-uuid"):
            error_of(api.get(f"{WES}/runs/{run_id}{path}"), 404)
        error_of(api.post(f"{WES}/runs/{job.id}/cancel"), 404)
        job.refresh_from_db()
        assert job.state == State.QUEUED

    def test_staff_see_every_run(self, staff_api, api):
        job = make_job(api.user)
        assert staff_api.get(f"{WES}/runs/{job.id}/status").status_code == 200


@pytest.mark.django_db
class TestTaskLogEndpoint:
    def test_an_unknown_rule_is_a_404_and_a_bad_stream_or_offset_a_400(self, api):
        job = make_job(api.user)
        url = f"/api/v1/jobs/{job.id}/tasks/main:report/log"
        assert api.get(url).status_code == 404
        response = api.get(url, {"stream": "stdin"})
        assert response.status_code == 400 and "stream" in response.json()["errors"]
        response = api.get(url, {"offset": "-1"})
        assert response.status_code == 400 and "offset" in response.json()["errors"]
