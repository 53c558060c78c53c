"""Datasets: upload, list, retrieve, delete; ownership; limits; nothing written on refusal."""

import hashlib

import pytest

from jobs.models import Dataset
from tests.support.factories import upload
from tests.support.payloads import lmm_bytes

from . import synthetic


def stored_files(data_dir):
    root = data_dir / "datasets"
    return sorted(p.relative_to(root) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.django_db
class TestUpload:
    def test_it_stores_a_file_with_size_checksum_and_format(self, api, data_dir):
        content = lmm_bytes()
        response = upload(api, "my pam.lmm", content, name="Heuchera PAM")
        assert response.status_code == 201
        body = response.json()
        assert response["Location"] == body["url"]
        assert body["name"] == "Heuchera PAM"
        assert body["original_name"] == "my pam.lmm"
        assert body["format"] == "lmm"
        assert body["size"] == len(content)
        assert body["sha256"] == hashlib.sha256(content).hexdigest()
        dataset = Dataset.objects.get(pk=body["id"])
        assert dataset.absolute_path.read_bytes() == content
        # The stored name is ours: the user's file name never becomes a path.
        assert dataset.absolute_path.name == "data.lmm"

    @pytest.mark.parametrize(
        ("name", "fmt"),
        [
            ("heuchera/heuchera.nex", "nexus"),
            ("heuchera/heuchera.tre", "newick"),
            ("heuchera/heuchera.csv", "csv"),
            ("heuchera/ecoregions.tif", "geotiff"),
            ("heuchera/heuchera_rfolk_1deg_global_noempties.lmm", "lmm"),
            ("dwca/idigbio_acer_rubrum.zip", "dwca"),
        ],
    )
    def test_it_detects_the_format_of_real_files(self, api, name, fmt):
        path = synthetic.sample_data() / name
        response = upload(api, path.name, path.read_bytes())
        assert response.status_code == 201, response.content
        assert response.json()["format"] == fmt

    @pytest.mark.parametrize(
        ("name", "fmt"),
        [
            ("tree.nex", "nexus"),
            ("tree.tre", "newick"),
            ("occurrences.csv", "csv"),
            ("ecoregions.tif", "geotiff"),
            ("pam.lmm", "lmm"),
            ("occurrences.zip", "dwca"),
            ("hypotheses.zip", "shapefile-zip"),
        ],
    )
    def test_it_detects_the_format_of_files_like_the_sample_data(self, api, tmp_path, name, fmt):
        names = synthetic.species_names(5)
        make = {
            "tree.nex": lambda: synthetic.nexus(names),
            "tree.tre": lambda: synthetic.newick(names),
            "occurrences.csv": lambda: synthetic.occurrences_csv(
                synthetic.occurrence_rows(dict.fromkeys(names, 4))
            ),
            "ecoregions.tif": lambda: synthetic.ecoregions(tmp_path / "eco.tif").read_bytes(),
            "pam.lmm": synthetic.pam_bytes,
            "occurrences.zip": lambda: synthetic.dwca(
                synthetic.occurrence_rows(dict.fromkeys(names, 4))
            ),
            "hypotheses.zip": lambda: synthetic.folder_zip(synthetic.hypotheses(tmp_path / "h")),
        }
        response = upload(api, name, make[name]())
        assert response.status_code == 201, response.content
        assert response.json()["format"] == fmt

    def test_it_detects_by_content_not_by_name(self, api):
        response = upload(api, "tree.csv", b"#NEXUS\nbegin trees;\nend;\n")
        assert response.json()["format"] == "nexus"

    def test_it_refuses_an_upload_over_the_limit_and_writes_nothing(self, api, settings, data_dir):
        settings.UPLOAD_MAX_BYTES = 1000
        response = upload(api, "big.csv", b"x," * 600)
        assert response.status_code == 413
        assert "1000" in response.json()["detail"]
        assert Dataset.objects.count() == 0
        assert stored_files(data_dir) == []

    def test_it_accepts_an_upload_at_the_limit(self, api, settings, data_dir):
        settings.UPLOAD_MAX_BYTES = 1200
        response = upload(api, "big.csv", b"x," * 600)
        assert response.status_code == 201

    def test_it_refuses_a_request_without_a_file_naming_the_field(self, api, data_dir):
        response = api.post("/api/v1/datasets/", {"name": "x"}, format="multipart")
        assert response.status_code == 400
        assert "file" in response.json()["errors"]
        assert Dataset.objects.count() == 0
        assert stored_files(data_dir) == []

    def test_it_refuses_json_bodies(self, api):
        response = api.post("/api/v1/datasets/", {"file": "abc"}, format="json")
        assert response.status_code == 415

    def test_it_refuses_an_empty_file(self, api, data_dir):
        response = upload(api, "empty.csv", b"")
        assert response.status_code == 400
        assert "file" in response.json()["errors"]
        assert stored_files(data_dir) == []

    def test_anonymous_uploads_get_401(self, anon_api, data_dir):
        response = upload(anon_api, "x.csv", b"a,b\n1,2\n")
        assert response.status_code == 401
        assert stored_files(data_dir) == []


@pytest.mark.django_db
class TestReadAndDelete:
    def test_it_lists_only_the_callers_datasets(self, api, other_api, staff_api):
        mine = upload(api, "a.csv", b"a,b\n1,2\n").json()
        theirs = upload(other_api, "b.csv", b"a,b\n1,2\n").json()
        listed = api.get("/api/v1/datasets/").json()
        assert [d["id"] for d in listed["results"]] == [mine["id"]]
        assert listed["count"] == 1
        assert {d["id"] for d in staff_api.get("/api/v1/datasets/").json()["results"]} == {
            mine["id"],
            theirs["id"],
        }

    def test_another_users_dataset_is_404(self, api, other_api):
        theirs = upload(other_api, "b.csv", b"a,b\n1,2\n").json()
        assert api.get(f"/api/v1/datasets/{theirs['id']}/").status_code == 404
        assert api.delete(f"/api/v1/datasets/{theirs['id']}/").status_code == 404
        assert other_api.get(f"/api/v1/datasets/{theirs['id']}/").status_code == 200

    def test_it_filters_by_format(self, api):
        upload(api, "a.csv", b"a,b\n1,2\n")
        upload(api, "t.tre", b"(a,b);\n")
        listed = api.get("/api/v1/datasets/?file_format=newick").json()
        assert [d["format"] for d in listed["results"]] == ["newick"]

    def test_delete_removes_the_row_and_the_file(self, api, data_dir):
        created = upload(api, "a.csv", b"a,b\n1,2\n").json()
        path = Dataset.objects.get(pk=created["id"]).absolute_path
        with_commit = api.delete(f"/api/v1/datasets/{created['id']}/")
        assert with_commit.status_code == 204
        assert not Dataset.objects.filter(pk=created["id"]).exists()
        assert api.get(f"/api/v1/datasets/{created['id']}/").status_code == 404
        # The folder goes after the commit; pytest-django's test transaction never commits,
        # so the file's removal is covered in the transactional test below.
        assert path.parent.parent == data_dir / "datasets"


@pytest.mark.django_db(transaction=True)
def test_deleting_a_dataset_removes_its_folder(api, data_dir):
    created = upload(api, "a.csv", b"a,b\n1,2\n").json()
    path = Dataset.objects.get(pk=created["id"]).absolute_path
    assert path.exists()
    assert api.delete(f"/api/v1/datasets/{created['id']}/").status_code == 204
    assert not path.parent.exists()
