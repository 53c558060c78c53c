"""Inputs are looked at before anything runs: a bad file is a 400 naming the input and why."""

import io
import zipfile

import pytest
from django.conf import settings

from jobs import inspection
from jobs.models import Dataset, Job
from tests.support.factories import upload
from tests.support.payloads import lmm_bytes

from . import synthetic

LIMITS = inspection.Limits.from_settings(settings)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def pam_request(pam_id, tree_id=None):
    inputs = {"pam": pam_id} | ({"tree": tree_id} if tree_id else {})
    return {"workflow": "pam-stats", "inputs": inputs, "params": {"randomizations": 5}}


@pytest.mark.django_db
class TestSubmission:
    def test_a_tree_that_does_not_parse_is_refused(self, api, pam_dataset, data_dir):
        tree = upload(api, "tree.tre", b"((a,b),(c;\n").json()
        response = api.post("/api/v1/jobs/", pam_request(pam_dataset["id"], tree["id"]))
        assert response.status_code == 400
        assert "does not parse" in response.json()["errors"]["inputs.tree"][0]
        assert Job.objects.count() == 0 and not (data_dir / "jobs").exists()

    def test_its_twin_with_a_good_tree_is_accepted(self, api, pam_dataset):
        tree = upload(api, "tree.tre", b"((a:1,b:1):1,(c:1,d:1):1);\n").json()
        response = api.post("/api/v1/jobs/", pam_request(pam_dataset["id"], tree["id"]))
        assert response.status_code == 201

    def test_a_pam_that_is_not_a_matrix_is_refused(self, api, data_dir):
        fake = zip_bytes({"headers.json": b"{}", "data.npz": b"not numpy"})
        pam = upload(api, "pam.lmm", fake).json()
        assert pam["format"] == "lmm"
        response = api.post("/api/v1/jobs/", pam_request(pam["id"]))
        assert response.status_code == 400
        assert "not an lmpy matrix" in response.json()["errors"]["inputs.pam"][0]
        assert Job.objects.count() == 0

    def test_a_pam_and_nexus_tree_like_the_sample_are_accepted(self, api):
        names = synthetic.pam_matrix().get_headers()["1"]
        pam = upload(api, "p.lmm", synthetic.pam_bytes())
        tree = upload(api, "t.nex", synthetic.nexus(names))
        response = api.post("/api/v1/jobs/", pam_request(pam.json()["id"], tree.json()["id"]))
        assert response.status_code == 201, response.content

    def test_the_real_heuchera_inputs_are_accepted(self, api):
        heuchera = synthetic.sample_data() / "heuchera"
        pam = upload(
            api, "h.lmm", (heuchera / "heuchera_rfolk_1deg_global_noempties.lmm").read_bytes()
        )
        tree = upload(api, "h.nex", (heuchera / "heuchera.nex").read_bytes())
        response = api.post("/api/v1/jobs/", pam_request(pam.json()["id"], tree.json()["id"]))
        assert response.status_code == 201, response.content


@pytest.mark.django_db
class TestUploadedArchives:
    @pytest.mark.parametrize(
        ("member", "reason"),
        [("../../etc/evil.txt", "'..'"), ("/etc/evil.txt", "absolute"), ("a/../../x", "'..'")],
    )
    def test_a_zip_that_climbs_out_is_refused_and_nothing_is_stored(
        self, api, data_dir, member, reason
    ):
        response = upload(api, "evil.zip", zip_bytes({"ok.txt": b"x", member: b"boom"}))
        assert response.status_code == 400
        assert reason in response.json()["errors"]["file"][0]
        assert Dataset.objects.count() == 0
        assert not any(p.is_file() for p in (data_dir / "datasets").rglob("*"))

    def test_a_zip_with_a_symlink_is_refused(self, api):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            info = zipfile.ZipInfo("link")
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
        response = upload(api, "link.zip", buffer.getvalue())
        assert response.status_code == 400
        assert "symbolic link" in response.json()["errors"]["file"][0]

    def test_a_clean_zip_is_stored(self, api):
        response = upload(api, "fine.zip", zip_bytes({"a/b.txt": b"x"}))
        assert response.status_code == 201


class TestChecks:
    def test_a_csv_without_the_named_columns_says_which(self, tmp_path):
        path = tmp_path / "occ.csv"
        path.write_text("name,lon,lat\nA b,1,2\n")
        with pytest.raises(inspection.BadContent, match="species_column='species_name'"):
            inspection.check_occurrences(
                path,
                {"species_column": "species_name", "x_column": "lon", "y_column": "lat"},
                limits=LIMITS,
            )
        inspection.check_occurrences(
            path, {"species_column": "name", "x_column": "lon", "y_column": "lat"}, limits=LIMITS
        )

    def test_a_csv_with_a_non_numeric_coordinate_is_refused(self, tmp_path):
        path = tmp_path / "occ.csv"
        path.write_text("species_name,x,y\nA b,east,2\n")
        with pytest.raises(inspection.BadContent, match="row 2"):
            inspection.check_occurrences(path, {"x_column": "x", "y_column": "y"}, limits=LIMITS)

    def test_a_non_utf8_csv_is_refused(self, tmp_path):
        path = tmp_path / "occ.csv"
        path.write_bytes("species_name,x,y\nHeuchera \u00d7brizoides,1,2\n".encode("latin-1"))
        with pytest.raises(inspection.BadContent, match="UTF-8"):
            inspection.check_occurrences(path, {"x_column": "x", "y_column": "y"}, limits=LIMITS)

    def test_occurrences_like_the_sample_pass(self, tmp_path):
        path = tmp_path / "occ.csv"
        rows = synthetic.occurrence_rows(dict.fromkeys(synthetic.species_names(4), 30))
        path.write_bytes(synthetic.occurrences_csv(rows))
        inspection.check_occurrences(
            path,
            {"species_column": "species_name", "x_column": "x", "y_column": "y"},
            limits=LIMITS,
        )

    def test_the_real_occurrences_pass(self):
        inspection.check_occurrences(
            synthetic.sample_data() / "heuchera" / "heuchera.csv",
            {"species_column": "species_name", "x_column": "x", "y_column": "y"},
            limits=LIMITS,
        )

    def test_a_raster_gdal_cannot_open_is_refused(self, tmp_path):
        path = tmp_path / "bad.tif"
        path.write_bytes(b"II*\x00" + b"\x00" * 64)
        with pytest.raises(inspection.BadContent, match="GDAL"):
            inspection.check_raster(path, limits=LIMITS)
        inspection.check_raster(synthetic.ecoregions(tmp_path / "eco.tif"), limits=LIMITS)
        inspection.check_raster(synthetic.environment(tmp_path / "env.tif"), limits=LIMITS)

    def test_the_real_rasters_pass(self):
        folder = synthetic.sample_data()
        inspection.check_raster(folder / "heuchera" / "ecoregions.tif", limits=LIMITS)
        inspection.check_raster(folder / "lmpy_layers" / "env_3.tif", limits=LIMITS)

    def test_a_shapefile_zip_needs_its_siblings(self, tmp_path):
        path = tmp_path / "hyp.zip"
        parts = synthetic.bg_hypothesis(tmp_path / "layers")
        path.write_bytes(zip_bytes({"a.shp": parts["shp"], "a.dbf": parts["dbf"]}))
        with pytest.raises(inspection.BadContent, match=r"\.shx"):
            inspection.check_shapefiles(path, limits=LIMITS)
        path.write_bytes(
            zip_bytes({"a.shp": parts["shp"], "a.dbf": parts["dbf"], "a.shx": parts["shx"]})
        )
        inspection.check_shapefiles(path, limits=LIMITS)
        path.write_bytes(synthetic.folder_zip(synthetic.hypotheses(tmp_path / "hypotheses")))
        inspection.check_shapefiles(path, limits=LIMITS)

    def test_a_dwca_needs_meta_xml(self, tmp_path):
        path = tmp_path / "d.zip"
        path.write_bytes(zip_bytes({"occurrence.txt": b"x"}))
        with pytest.raises(inspection.BadContent, match=r"meta\.xml"):
            inspection.check_dwca(path, limits=LIMITS)
        rows = synthetic.occurrence_rows(dict.fromkeys(synthetic.species_names(2), 5))
        path.write_bytes(synthetic.dwca(rows))
        inspection.check_dwca(path, limits=LIMITS)

    def test_the_real_dwca_passes(self):
        path = synthetic.sample_data() / "dwca" / "idigbio_acer_rubrum.zip"
        inspection.check_dwca(path, limits=LIMITS)

    def test_a_small_real_lmm_passes(self, tmp_path):
        path = tmp_path / "p.lmm"
        path.write_bytes(lmm_bytes())
        inspection.check_pam(path, limits=LIMITS)
