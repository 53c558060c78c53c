"""OGC API - Processes - Part 1 at /ogcapi/, in process: the catalog as processes described from
each JSON Schema, execution as lmweb's own jobs (same owners, checks, 404s), OGC job statuses,
results and dismissal, and `echo`. tests/integration/test_ogc.py drives the running stack with
OWSLib."""

import pytest

import translators
from jobs.models import Job, Output, State
from tests.support.factories import make_job

OGC = "/ogcapi"


def problem(response, status: int, kind: str = "") -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"], body
    if kind:
        assert body["type"].endswith(f"/{kind}"), body
    return body.get("detail", "")


@pytest.mark.django_db
class TestDiscovery:
    def test_the_landing_page_links_conformance_processes_and_jobs(self, anon_api):
        body = anon_api.get(f"{OGC}/").json()
        rels = {link["rel"]: link["href"] for link in body["links"]}
        ogc = "http://www.opengis.net/def/rel/ogc/1.0"
        assert rels[f"{ogc}/processes"].endswith("/ogcapi/processes")
        assert rels[f"{ogc}/job-list"].endswith("/ogcapi/jobs")
        assert rels[f"{ogc}/conformance"].endswith("/ogcapi/conformance")
        assert rels["service-doc"].endswith("/readme")
        conformance = anon_api.get(f"{OGC}/conformance").json()["conformsTo"]
        spec = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf"
        assert {f"{spec}/core", f"{spec}/ogc-process-description", f"{spec}/json",
                f"{spec}/job-list", f"{spec}/dismiss"} <= set(conformance)  # fmt: skip

    def test_the_processes_are_the_catalog_and_echo(self, anon_api):
        processes = {p["id"]: p for p in anon_api.get(f"{OGC}/processes").json()["processes"]}
        assert set(processes) == {"echo", *translators.names()}
        assert processes["echo"]["jobControlOptions"] == ["sync-execute"]
        assert processes["pam-stats"]["jobControlOptions"] == ["async-execute"]
        assert processes["pam-stats"]["title"] == translators.get("pam-stats").title

    def test_a_process_describes_its_inputs_from_its_json_schema(self, anon_api):
        body = anon_api.get(f"{OGC}/processes/pam-stats").json()
        inputs, schema = body["inputs"], translators.get("pam-stats").params_schema
        assert inputs["pam"]["minOccurs"] == 1 and inputs["pam"]["maxOccurs"] == 1
        assert inputs["tree"]["minOccurs"] == 0
        assert inputs["randomizations"]["schema"] == schema["properties"]["randomizations"]
        assert set(schema["properties"]) < set(inputs)
        assert body["outputs"]["package"]["schema"]["contentMediaType"] == "application/zip"
        echo = anon_api.get(f"{OGC}/processes/echo").json()
        assert "message" in echo["inputs"] and "message" in echo["outputs"]

    def test_an_unknown_process_is_an_ogc_404(self, anon_api, api):
        problem(anon_api.get(f"{OGC}/processes/nope"), 404, "no-such-process")
        response = api.post(f"{OGC}/processes/nope/execution", {"inputs": {}}, format="json")
        problem(response, 404, "no-such-process")


@pytest.mark.django_db
class TestExecution:
    def test_echo_answers_at_once_to_anyone(self, anon_api):
        body = {"inputs": {"message": "hello", "n": {"value": 3}, "list": [1, {"a": 2}]}}
        response = anon_api.post(f"{OGC}/processes/echo/execution", body, format="json")
        assert response.status_code == 200, response.content
        assert response.json() == {"message": "hello", "n": 3, "list": [1, {"a": 2}]}
        response = anon_api.post(f"{OGC}/processes/echo/execution", {"inputs": 3}, format="json")
        assert "inputs" in problem(response, 400)
        assert Job.objects.count() == 0

    def test_a_catalog_process_runs_as_a_job_of_the_caller(self, api):
        response = api.post(
            f"{OGC}/processes/selftest/execution",
            {"inputs": {"tasks": 2, "seconds": {"value": 0}}},
            format="json",
            HTTP_PREFER="respond-async",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        job = Job.objects.get(pk=body["jobID"])
        assert response["Location"].endswith(f"/ogcapi/jobs/{job.id}")
        assert response["Preference-Applied"] == "respond-async"
        assert body["status"] == "accepted" and body["processID"] == "selftest"
        assert job.owner == api.user and job.request["params"]["tasks"] == 2

    def test_dataset_inputs_are_ids_or_links_to_the_callers_datasets(self, api, pam_dataset):
        link = {"href": pam_dataset["url"]}
        for value in (pam_dataset["id"], link):
            response = api.post(
                f"{OGC}/processes/pam-stats/execution",
                {"inputs": {"pam": value, "randomizations": 5}},
                format="json",
            )
            assert response.status_code == 201, response.content
            job = Job.objects.get(pk=response.json()["jobID"])
            assert job.request["inputs"] == {"pam": pam_dataset["id"]}

    @pytest.mark.parametrize(
        ("inputs", "named"),
        [
            ({"randomizations": -1}, "inputs.randomizations"),
            ({"nonsense": 1}, "inputs"),
            ({"pam": 7}, "inputs.pam"),
            ({"pam": {"href": "https://example.org/x.lmm"}}, "inputs.pam"),
        ],
    )
    def test_a_bad_input_is_a_400_naming_it_and_writes_nothing(self, api, inputs, named):
        response = api.post(
            f"{OGC}/processes/pam-stats/execution", {"inputs": inputs}, format="json"
        )
        assert named in problem(response, 400)
        assert Job.objects.count() == 0

    def test_anonymous_callers_cannot_run_a_catalog_process(self, anon_api):
        response = anon_api.post(f"{OGC}/processes/selftest/execution", {}, format="json")
        problem(response, 401)
        assert Job.objects.count() == 0


@pytest.mark.django_db
class TestJobs:
    def test_the_job_list_holds_the_callers_jobs_with_a_next_link(self, api, other_api):
        mine = [make_job(api.user) for _ in range(3)]
        make_job(other_api.user)
        body = api.get(f"{OGC}/jobs", {"limit": 2}).json()
        assert len(body["jobs"]) == 2
        following = next(link["href"] for link in body["links"] if link["rel"] == "next")
        rest = api.get(following).json()
        ids = {job["jobID"] for job in body["jobs"] + rest["jobs"]}
        assert ids == {str(job.id) for job in mine}
        assert not any(link["rel"] == "next" for link in rest["links"])
        assert "limit" in problem(api.get(f"{OGC}/jobs", {"limit": "x"}), 400)

    def test_status_results_and_404s(self, api, other_api):
        running = make_job(api.user, state=State.RUNNING, rules_total=4, rules_done=1)
        status = api.get(f"{OGC}/jobs/{running.id}").json()
        assert status["status"] == "running" and status["progress"] == 25
        problem(api.get(f"{OGC}/jobs/{running.id}/results"), 404, "result-not-ready")
        done = make_job(api.user, state=State.COMPLETE)
        Output.objects.create(
            job=done, path="report.html", role="report", media_type="text/html", size=1,
            sha256="0" * 64,
        )  # fmt: skip
        status = api.get(f"{OGC}/jobs/{done.id}").json()
        assert status["status"] == "successful"
        results_link = next(link for link in status["links"] if link["rel"].endswith("/results"))
        results = api.get(results_link["href"]).json()
        assert results["package"]["href"].endswith(f"/api/v1/jobs/{done.id}/package/")
        assert results["report"]["href"].endswith(f"/api/v1/jobs/{done.id}/outputs/report.html")
        failed = make_job(api.user, state=State.EXECUTOR_ERROR, error_code="rule_failed")
        assert api.get(f"{OGC}/jobs/{failed.id}").json()["status"] == "failed"
        theirs = make_job(other_api.user)
        for path in (f"jobs/{theirs.id}", f"jobs/{theirs.id}/results", "jobs/not-a-uuid"):
            problem(api.get(f"{OGC}/{path}"), 404, "no-such-job")
        problem(api.delete(f"{OGC}/jobs/{theirs.id}"), 404, "no-such-job")
        assert Job.objects.filter(pk=theirs.id, state=State.QUEUED).exists()

    def test_dismiss_cancels_a_queued_job_and_removes_a_finished_one(self, api):
        queued = make_job(api.user)
        response = api.delete(f"{OGC}/jobs/{queued.id}")
        assert response.status_code == 200 and response.json()["status"] == "dismissed"
        queued.refresh_from_db()
        assert queued.state == State.CANCELED
        done = make_job(api.user, state=State.COMPLETE)
        assert api.delete(f"{OGC}/jobs/{done.id}").json()["status"] == "dismissed"
        assert not Job.objects.filter(pk=done.id).exists()
        problem(api.get(f"{OGC}/jobs/{done.id}"), 404, "no-such-job")
