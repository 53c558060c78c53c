"""Jobs: submission, validation with nothing written, listing, filters, ownership, cancel."""

import datetime as dt
import uuid

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from jobs.models import Job, JobInput, State
from tests.support.factories import upload
from tests.support.payloads import lmm_bytes

SELFTEST = {"workflow": "selftest", "name": "smoke", "params": {"tasks": 3, "seconds": 0}}


def pam_request(pam_id, **params):
    return {
        "workflow": "pam-stats",
        "name": "Heuchera",
        "inputs": {"pam": pam_id},
        "params": {"randomizations": 10, "p_value_method": "fdr", "alpha": 0.05, **params},
        "tags": {"project": "heuchera"},
    }


def nothing_written(data_dir):
    return Job.objects.count() == 0 and not (data_dir / "jobs").exists()


@pytest.mark.django_db
class TestSubmit:
    def test_it_answers_201_with_location_and_stores_a_queued_job(self, api):
        response = api.post("/api/v1/jobs/", SELFTEST)
        assert response.status_code == 201, response.content
        body = response.json()
        assert response["Location"] == body["url"]
        assert body["url"].endswith(f"/api/v1/jobs/{body['id']}/")
        assert body["state"] == "QUEUED"
        assert body["workflow"] == "selftest"
        assert body["progress"] == {
            "total": 0,
            "waiting": 0,
            "running": 0,
            "done": 0,
            "failed": 0,
            "percent": 0.0,
        }
        job = Job.objects.get(pk=body["id"])
        assert job.owner == api.user
        assert job.request["params"] == {
            "tasks": 3,
            "seconds": 0,
            "fail": 0,
            "memory_mb": 0,
            "progress": False,
        }

    def test_it_fills_in_defaults(self, api):
        response = api.post("/api/v1/jobs/", {"workflow": "selftest"})
        assert response.status_code == 201, response.content
        params = response.json()["request"]["params"]
        assert set(params) == {"tasks", "seconds", "fail", "memory_mb", "progress"}

    def test_it_records_the_input_datasets(self, api, pam_dataset, tree_dataset):
        request = pam_request(pam_dataset["id"])
        request["inputs"]["tree"] = tree_dataset["id"]
        response = api.post("/api/v1/jobs/", request)
        assert response.status_code == 201, response.content
        inputs = JobInput.objects.filter(job_id=response.json()["id"])
        assert {(i.name, str(i.dataset_id)) for i in inputs} == {
            ("pam", pam_dataset["id"]),
            ("tree", tree_dataset["id"]),
        }

    def test_it_sends_the_job_to_the_controller_queue_after_commit(
        self, api, django_capture_on_commit_callbacks
    ):
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        broker.delete("lmweb-jobs")
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            response = api.post("/api/v1/jobs/", SELFTEST)
        assert broker.llen("lmweb-jobs") == 0  # nothing is sent before the commit
        for callback in callbacks:
            callback()
        messages = broker.lrange("lmweb-jobs", 0, -1)
        broker.delete("lmweb-jobs")
        assert len(messages) == 1
        assert response.json()["id"].encode() in messages[0]


@pytest.mark.django_db
class TestValidation:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"workflow": "no-such-flow"}, "workflow"),
            ({}, "workflow"),
            ({"workflow": 7}, "workflow"),
            ({"workflow": "selftest", "params": {"tasks": 0}}, "params.tasks"),
            ({"workflow": "selftest", "params": {"tasks": 10001}}, "params.tasks"),
            ({"workflow": "selftest", "params": {"tasks": "3"}}, "params.tasks"),
            ({"workflow": "selftest", "params": {"seconds": 601}}, "params.seconds"),
            ({"workflow": "selftest", "params": {"seconds": -1}}, "params.seconds"),
            ({"workflow": "selftest", "params": {"bogus": 1}}, "params.bogus"),
            ({"workflow": "selftest", "params": []}, "params"),
            ({"workflow": "selftest", "colour": "red"}, "colour"),
            ({"workflow": "selftest", "name": 5}, "name"),
            ({"workflow": "selftest", "name": "x" * 201}, "name"),
            ({"workflow": "selftest", "tags": {"a": 1}}, "tags.a"),
            ({"workflow": "selftest", "tags": ["a"]}, "tags"),
            ({"workflow": "pam-stats", "params": {}}, "inputs.pam"),
            ({"workflow": "pam-stats", "inputs": {"pam": "not-a-uuid"}}, "inputs.pam"),
            ({"workflow": "pam-stats", "inputs": {"pam": str(uuid.uuid4())}}, "inputs.pam"),
        ],
    )
    def test_it_names_the_bad_field_and_writes_nothing(self, api, data_dir, body, field):
        response = api.post("/api/v1/jobs/", body)
        assert response.status_code == 400, response.content
        errors = response.json()["errors"]
        assert field in errors, errors
        assert field in response.json()["detail"]
        assert nothing_written(data_dir)

    def test_it_names_every_bad_field_at_once(self, api, data_dir):
        body = {"workflow": "selftest", "params": {"tasks": 0, "seconds": 9999, "x": 1}}
        errors = api.post("/api/v1/jobs/", body).json()["errors"]
        assert {"params.tasks", "params.seconds", "params.x"} <= set(errors)
        assert nothing_written(data_dir)

    def test_it_rejects_a_foreign_dataset(self, api, other_api, data_dir):
        theirs = upload(other_api, "pam.lmm", lmm_bytes()).json()
        response = api.post("/api/v1/jobs/", pam_request(theirs["id"]))
        assert response.status_code == 400
        assert "inputs.pam" in response.json()["errors"]
        assert nothing_written(data_dir)

    def test_it_accepts_its_own_dataset(self, api, data_dir):
        mine = upload(api, "pam.lmm", lmm_bytes()).json()
        response = api.post("/api/v1/jobs/", pam_request(mine["id"]))
        assert response.status_code == 201

    def test_it_rejects_a_dataset_of_the_wrong_format(self, api, data_dir):
        tree = upload(api, "pam.tre", b"(a,b);\n").json()
        response = api.post("/api/v1/jobs/", pam_request(tree["id"]))
        assert response.status_code == 400
        assert "newick" in response.json()["errors"]["inputs.pam"][0]
        assert nothing_written(data_dir)

    def test_it_rejects_a_csv_pam_that_is_not_a_matrix(self, api, data_dir):
        csv = upload(api, "pam.csv", b"a,b\n1,2\n").json()
        response = api.post("/api/v1/jobs/", pam_request(csv["id"]))
        assert response.status_code == 400
        assert "CSV PAM" in response.json()["errors"]["inputs.pam"][0]
        assert nothing_written(data_dir)

    @pytest.mark.parametrize("params", [{"p_value_method": "magic"}, {"alpha": 1.5}])
    def test_it_checks_pam_stats_params(self, api, data_dir, pam_dataset, params):
        response = api.post("/api/v1/jobs/", pam_request(pam_dataset["id"], **params))
        assert response.status_code == 400
        assert f"params.{next(iter(params))}" in response.json()["errors"]

    @pytest.mark.parametrize(
        ("content", "content_type"),
        [
            (b"[1, 2]", "application/json"),
            (b'"selftest"', "application/json"),
            (b"{not json", "application/json"),
            (b"workflow=selftest", "text/plain"),
        ],
    )
    def test_it_refuses_bodies_that_are_not_a_json_object(
        self, api, data_dir, content, content_type
    ):
        response = api.generic("POST", "/api/v1/jobs/", content, content_type=content_type)
        assert response.status_code in (400, 415)
        assert "detail" in response.json()
        assert nothing_written(data_dir)

    def test_it_refuses_deep_nesting(self, api, data_dir):
        deep = {"a": 1}
        for _ in range(50):
            deep = {"a": deep}
        response = api.post("/api/v1/jobs/", {"workflow": "selftest", "tags": deep})
        assert response.status_code == 400
        assert nothing_written(data_dir)

    def test_it_refuses_an_oversized_body(self, api, data_dir, settings):
        body = {"workflow": "selftest", "name": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)}
        response = api.post("/api/v1/jobs/", body)
        assert response.status_code in (400, 413)
        assert nothing_written(data_dir)


@pytest.mark.django_db
class TestRead:
    def make_jobs(self, user, count, **fields):
        return [
            Job.objects.create(owner=user, workflow="selftest", request=SELFTEST, **fields)
            for _ in range(count)
        ]

    def test_it_lists_only_the_callers_jobs(self, api, other_api, staff_api):
        mine = self.make_jobs(api.user, 2)
        theirs = self.make_jobs(other_api.user, 1)
        listed = api.get("/api/v1/jobs/").json()
        assert {j["id"] for j in listed["results"]} == {str(j.id) for j in mine}
        everything = staff_api.get("/api/v1/jobs/").json()
        assert everything["count"] == len(mine) + len(theirs)

    def test_another_users_job_is_404_everywhere(self, api, other_api):
        (theirs,) = self.make_jobs(other_api.user, 1, state=State.COMPLETE)
        base = f"/api/v1/jobs/{theirs.id}/"
        assert api.get(base).status_code == 404
        assert api.post(base + "cancel/").status_code == 404
        assert api.delete(base).status_code == 404
        assert api.get(base + "outputs/").status_code == 404
        assert api.get(base + "package/").status_code == 404
        assert Job.objects.filter(pk=theirs.pk).exists()

    def test_it_paginates(self, api):
        self.make_jobs(api.user, 7)
        first = api.get("/api/v1/jobs/?page_size=3").json()
        assert first["count"] == 7
        assert len(first["results"]) == 3
        assert first["next"] is not None and first["previous"] is None
        last = api.get("/api/v1/jobs/?page_size=3&page=3").json()
        assert len(last["results"]) == 1
        assert last["next"] is None
        assert api.get("/api/v1/jobs/?page_size=3&page=9").status_code == 404

    def test_it_filters_by_state_workflow_and_date(self, api):
        now = timezone.now()
        old = self.make_jobs(api.user, 1, submitted_at=now - dt.timedelta(days=3))[0]
        done = self.make_jobs(api.user, 1, state=State.COMPLETE)[0]
        other = Job.objects.create(owner=api.user, workflow="pam-stats", request={})

        def ids(query):
            return {j["id"] for j in api.get("/api/v1/jobs/?" + query).json()["results"]}

        assert ids("state=COMPLETE") == {str(done.id)}
        assert ids("state=COMPLETE&state=QUEUED") == {str(done.id), str(old.id), str(other.id)}
        assert ids("workflow=pam-stats") == {str(other.id)}
        since = (now - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
        assert ids(f"submitted_after={since}") == {str(done.id), str(other.id)}
        assert ids(f"submitted_before={since}") == {str(old.id)}
        assert api.get("/api/v1/jobs/?state=SLEEPING").status_code == 400

    def test_the_detail_links_to_the_rest(self, api):
        (job,) = self.make_jobs(api.user, 1)
        body = api.get(f"/api/v1/jobs/{job.id}/").json()
        assert set(body["links"]) == {"cancel", "tasks", "outputs", "package"}
        assert body["error"] is None

    def test_a_malformed_id_is_404(self, api):
        assert api.get("/api/v1/jobs/not-a-uuid/").status_code == 404

    def test_anonymous_requests_get_401(self, anon_api):
        for path in [
            "/api/v1/jobs/",
            "/api/v1/datasets/",
            "/api/v1/workflows/",
            "/api/v1/service-info/",
        ]:
            assert anon_api.get(path).status_code == 401, path
        assert anon_api.post("/api/v1/jobs/", SELFTEST).status_code == 401
        assert Job.objects.count() == 0


@pytest.mark.django_db
class TestCancelAndDelete:
    def job(self, user, state):
        return Job.objects.create(owner=user, workflow="selftest", request=SELFTEST, state=state)

    def test_a_queued_job_is_canceled_at_once(self, api):
        job = self.job(api.user, State.QUEUED)
        response = api.post(f"/api/v1/jobs/{job.id}/cancel/")
        assert response.status_code == 202
        assert response.json()["state"] == "CANCELED"
        job.refresh_from_db()
        assert job.finished_at is not None

    def test_a_running_job_goes_to_canceling(self, api):
        job = self.job(api.user, State.RUNNING)
        assert api.post(f"/api/v1/jobs/{job.id}/cancel/").json()["state"] == "CANCELING"

    def test_canceling_twice_is_harmless(self, api):
        job = self.job(api.user, State.CANCELED)
        assert api.post(f"/api/v1/jobs/{job.id}/cancel/").status_code == 202

    def test_a_finished_job_cannot_be_canceled(self, api):
        job = self.job(api.user, State.COMPLETE)
        response = api.post(f"/api/v1/jobs/{job.id}/cancel/")
        assert response.status_code == 409
        job.refresh_from_db()
        assert job.state == State.COMPLETE

    def test_an_unfinished_job_cannot_be_deleted(self, api):
        job = self.job(api.user, State.RUNNING)
        assert api.delete(f"/api/v1/jobs/{job.id}/").status_code == 409
        assert Job.objects.filter(pk=job.pk).exists()

    def test_a_finished_job_is_deleted(self, api):
        job = self.job(api.user, State.COMPLETE)
        assert api.delete(f"/api/v1/jobs/{job.id}/").status_code == 204
        assert not Job.objects.filter(pk=job.pk).exists()

    def test_a_dataset_used_by_an_unfinished_job_cannot_be_deleted(self, api, pam_dataset):
        job_id = api.post("/api/v1/jobs/", pam_request(pam_dataset["id"])).json()["id"]
        assert api.delete(f"/api/v1/datasets/{pam_dataset['id']}/").status_code == 409
        Job.objects.filter(pk=job_id).update(state=State.COMPLETE)
        assert api.delete(f"/api/v1/datasets/{pam_dataset['id']}/").status_code == 204


@pytest.mark.django_db(transaction=True)
def test_deleting_a_job_removes_its_folder(api, data_dir):
    job = Job.objects.create(
        owner=api.user, workflow="selftest", request=SELFTEST, state="COMPLETE"
    )
    job.directory.mkdir(parents=True)
    (job.directory / "manifest.json").write_text("{}")
    assert api.delete(f"/api/v1/jobs/{job.id}/").status_code == 204
    assert not job.directory.exists()


@pytest.mark.django_db
class TestIdempotency:
    def test_the_same_key_and_body_return_the_same_job(self, api):
        first = api.post("/api/v1/jobs/", SELFTEST, HTTP_IDEMPOTENCY_KEY="abc-1")
        again = api.post("/api/v1/jobs/", SELFTEST, HTTP_IDEMPOTENCY_KEY="abc-1")
        assert first.status_code == 201
        assert again.status_code == 200
        assert again["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert Job.objects.count() == 1

    def test_the_same_key_with_another_body_is_409(self, api):
        api.post("/api/v1/jobs/", SELFTEST, HTTP_IDEMPOTENCY_KEY="abc-2")
        other = {**SELFTEST, "name": "another"}
        response = api.post("/api/v1/jobs/", other, HTTP_IDEMPOTENCY_KEY="abc-2")
        assert response.status_code == 409
        assert "Idempotency-Key" in response.json()["detail"]
        assert Job.objects.count() == 1

    def test_keys_belong_to_their_user(self, api, other_api):
        mine = api.post("/api/v1/jobs/", SELFTEST, HTTP_IDEMPOTENCY_KEY="shared")
        theirs = other_api.post("/api/v1/jobs/", SELFTEST, HTTP_IDEMPOTENCY_KEY="shared")
        assert theirs.status_code == 201
        assert theirs.json()["id"] != mine.json()["id"]

    def test_without_a_key_each_post_is_a_new_job(self, api):
        api.post("/api/v1/jobs/", SELFTEST)
        api.post("/api/v1/jobs/", SELFTEST)
        assert Job.objects.count() == 2

    def test_a_bad_key_is_400_naming_the_header(self, api, data_dir):
        response = api.post("/api/v1/jobs/", SELFTEST, HTTP_IDEMPOTENCY_KEY="x" * 201)
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()["errors"]
        assert nothing_written(data_dir)


@pytest.mark.django_db
class TestDownloads:
    @pytest.fixture
    def finished_job(self, api, data_dir):
        from jobs.models import Output

        job = Job.objects.create(owner=api.user, workflow="selftest", request={}, state="COMPLETE")
        (job.directory / "outputs").mkdir(parents=True)
        (job.directory / "outputs" / "result.csv").write_text("a,b\n")
        (job.directory / "package.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
        (data_dir / "secret.txt").write_text("not yours")
        Output.objects.create(
            job=job, path="result.csv", role="result", media_type="text/csv", size=4, sha256="x"
        )
        return job

    def test_a_cataloged_output_downloads(self, api, finished_job):
        response = api.get(f"/api/v1/jobs/{finished_job.id}/outputs/result.csv")
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == b"a,b\n"

    @pytest.mark.parametrize(
        "path",
        [
            "../../secret.txt",
            "..%2F..%2Fsecret.txt",
            "%2e%2e/%2e%2e/secret.txt",
            "/etc/passwd",
            "result.csv/../../../secret.txt",
            "RESULT.CSV",
        ],
    )
    def test_path_traversal_is_404(self, api, finished_job, path):
        response = api.get(f"/api/v1/jobs/{finished_job.id}/outputs/{path}")
        assert response.status_code == 404

    def test_another_users_output_tasks_and_package_are_404(self, other_api, finished_job):
        base = f"/api/v1/jobs/{finished_job.id}"
        for path in ["/outputs/result.csv", "/outputs/", "/tasks/", "/package/", "/"]:
            assert other_api.get(base + path).status_code == 404, path

    def test_behind_nginx_downloads_are_x_accel_redirects_after_the_check(
        self, api, other_api, finished_job, data_dir, settings
    ):
        settings.LMWEB_X_ACCEL_REDIRECT = "/protected/"
        base = f"/api/v1/jobs/{finished_job.id}"
        response = api.get(base + "/outputs/result.csv")
        assert response.status_code == 200 and response.content == b""
        folder = finished_job.directory.resolve().relative_to(data_dir.resolve())
        assert response["X-Accel-Redirect"] == f"/protected/{folder}/outputs/result.csv"
        assert response["Content-Disposition"] == 'attachment; filename="result.csv"'
        assert response["Content-Type"] == "text/csv"
        package = api.get(base + "/package/")
        assert package["X-Accel-Redirect"] == f"/protected/{folder}/package.zip"
        assert package["Content-Type"] == "application/zip"
        for path in ["/outputs/result.csv", "/package/"]:
            refused = other_api.get(base + path)
            assert refused.status_code == 404 and "X-Accel-Redirect" not in refused, path

    def test_the_package_of_an_unfinished_job_is_404(self, api, finished_job):
        Job.objects.filter(pk=finished_job.pk).update(state="RUNNING")
        assert api.get(f"/api/v1/jobs/{finished_job.id}/package/").status_code == 404


@pytest.mark.django_db
def test_cross_field_checks_name_the_field(api, data_dir):
    csv = upload(api, "occ.csv", b"species_name,x,y\nA b,1,2\n").json()
    body = {
        "workflow": "occurrence-cleaning",
        "inputs": {"occurrences": [csv["id"]]},
        "params": {
            "wranglers": [{"type": "bounding_box", "min_x": 10, "max_x": 0, "min_y": 0, "max_y": 5}]
        },
    }
    response = api.post("/api/v1/jobs/", body)
    assert response.status_code == 400, response.content
    assert "min_x must be below max_x" in response.json()["errors"]["params.wranglers[0]"][0]
    assert nothing_written(data_dir)
    body["params"]["wranglers"][0].update(min_x=-10)
    assert api.post("/api/v1/jobs/", body).status_code == 201


@pytest.mark.django_db
def test_a_queued_job_tells_its_place_in_the_queue(api):
    first = api.post("/api/v1/jobs/", SELFTEST).json()
    second = api.post("/api/v1/jobs/", SELFTEST).json()
    assert api.get(f"/api/v1/jobs/{first['id']}/").json()["waiting"]["position"] == 1
    waiting = api.get(f"/api/v1/jobs/{second['id']}/").json()["waiting"]
    assert waiting == {"position": 2, "reason": "1 job(s) ahead of it in the queue"}
    Job.objects.filter(pk=first["id"]).update(state="COMPLETE")
    assert api.get(f"/api/v1/jobs/{first['id']}/").json()["waiting"] is None
