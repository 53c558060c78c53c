"""Inputs are checked by content, in a capped subprocess, against limits that the catalog shows."""

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

import translators
from jobs import inspection
from tests.support.factories import upload

from . import synthetic
from .test_settings import start as start_django

BG_HYP = synthetic.bg_hypothesis_bytes()  # one polygon shapefile: extension -> bytes
OCCURRENCES = b"species_name,x,y\nHeuchera alba,-100.5,40.25\nHeuchera alba,-101.5,41.25\n"
VRT = (
    b'<OGRVRTDataSource><OGRVRTLayer name="t"><SrcDataSource>/etc/passwd</SrcDataSource>'
    b"<SrcSQL>SELECT * FROM passwd</SrcSQL></OGRVRTLayer></OGRVRTDataSource>\n"
)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def shapefiles(**replace: bytes) -> bytes:
    """The bg_hyp_1 shapefile zipped, with members replaced by name (shp=..., dbf=...)."""
    members = {}
    for ext in ("shp", "shx", "dbf", "prj"):
        members[f"bg_hyp_1.{ext}"] = replace.get(ext, BG_HYP[ext])
    return zip_bytes(members)


def lmm(data: np.ndarray) -> bytes:
    """An lmpy matrix as lmpy writes it: headers nested under "headers"."""
    npz = io.BytesIO()
    np.savez_compressed(npz, data)
    sites = [[n, 0.5, 0.5] for n in range(data.shape[0])]
    species = [f"sp_{n}" for n in range(data.shape[1])]
    headers = {"headers": {"0": sites, "1": species}, "metadata": {}, "version": "1"}
    return zip_bytes({"headers.json": json.dumps(headers).encode(), "data.npz": npz.getvalue()})


def newick(tips: int) -> bytes:
    """A balanced binary tree (dendropy parses it in linear time)."""

    def clade(low: int, high: int) -> str:
        if high - low == 1:
            return f"t{low}:1"
        middle = (low + high) // 2
        return f"({clade(low, middle)},{clade(middle, high)}):1"

    return (clade(0, tips) + ";\n").encode()


def pam_sized(sites: int, species: int, *, seed: int = 1) -> bytes:
    """A seeded 0/1 PAM of the given size (the Heuchera PAMs: 2,114 x 55 and 54,000 x 62)."""
    rng = np.random.default_rng(seed)
    return lmm((rng.random((sites, species)) < 0.2).astype(float))


def tiff(path, width: int, height: int, bands: int = 1) -> bytes:
    from osgeo import gdal

    gdal.UseExceptions()
    options = ["SPARSE_OK=TRUE", "TILED=YES", "BIGTIFF=YES", "COMPRESS=DEFLATE"]
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), width, height, bands, gdal.GDT_Byte, options=options
    )
    dataset.SetGeoTransform([-180, 360 / width, 0, 90, 0, -180 / height])
    dataset = None
    return path.read_bytes()


def stored(api, filename: str, content: bytes) -> str:
    response = upload(api, filename, content)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def submit(api, workflow: str, inputs: dict, **params):
    example = translators.get(workflow).example
    body = {
        "workflow": workflow,
        "inputs": inputs,
        "params": {**example.get("params", {}), **params},
    }
    return api.post("/api/v1/jobs/", body, format="json")


def refused(response, field: str, *words: str) -> str:
    assert response.status_code == 400, response.content
    messages = response.json()["errors"][field]
    for word in words:
        assert word in messages[0], messages
    return messages[0]


@pytest.fixture
def limits():
    return inspection.Limits.from_settings(settings)


class Inputs(dict):
    """A job's inputs (name -> dataset id), with the PAM's cell count."""

    cells: int


@pytest.fixture(params=["synthetic", "sample"])
def mcpa_inputs(request, api, tmp_path):
    """mcpa's example inputs, stored: synthetic ones shaped like the example's, and (with
    LMWEB_SAMPLE_DATA) the Heuchera PAM, tree, ecoregions and hypotheses themselves."""
    if request.param == "sample":
        heuchera = synthetic.sample_data() / "heuchera"
        files = {
            "pam": (
                "pam.lmm",
                (heuchera / "heuchera_rfolk_1deg_global_noempties.lmm").read_bytes(),
            ),
            "tree": ("tree.nex", (heuchera / "heuchera.nex").read_bytes()),
            "environment": ("eco.tif", (heuchera / "ecoregions.tif").read_bytes()),
            "hypotheses": ("hypotheses.zip", synthetic.folder_zip(heuchera / "hypotheses")),
        }
    else:
        files = synthetic.example_files("mcpa", tmp_path / "mcpa")
    inputs = Inputs({key: stored(api, *files[key]) for key in files})
    inputs["environment"] = [inputs["environment"]]
    with zipfile.ZipFile(io.BytesIO(files["pam"][1])) as archive:
        headers = json.loads(archive.read("headers.json"))
    headers = headers.get("headers", headers)
    inputs.cells = len(headers["0"]) * len(headers["1"])
    return inputs


# ---------------------------------------------------------------------------------------------
# Formats by content


@pytest.mark.django_db
def test_mcpa_refuses_hypotheses_whose_shp_is_ogr_vrt_and_accepts_real_ones(api, mcpa_inputs):
    assert submit(api, "mcpa", mcpa_inputs).status_code == 201
    vrt = stored(api, "hypotheses.zip", shapefiles(shp=VRT))
    response = submit(api, "mcpa", {**mcpa_inputs, "hypotheses": vrt})
    refused(response, "inputs.hypotheses", "bg_hyp_1.shp is not a shapefile", "9994")


@pytest.mark.parametrize(
    ("member", "content", "reason"),
    [
        pytest.param("shp", VRT, "no file code 9994", id="a-shp-that-is-vrt"),
        pytest.param("shx", VRT, "no file code 9994", id="a-shx-that-is-vrt"),
        pytest.param("dbf", VRT, "not a dBASE table", id="a-dbf-that-is-vrt"),
        pytest.param(
            "shp", BG_HYP["shp"][:-8], "header says", id="a-cut-shp"
        ),
        pytest.param(
            "dbf",
            BG_HYP["dbf"][:4] + (1000).to_bytes(4, "little") + BG_HYP["dbf"][8:],
            "header says",
            id="a-dbf-that-claims-more-records-than-it-holds",
        ),
        pytest.param(
            "dbf",
            BG_HYP["dbf"][:10] + b"\x05\x00" + BG_HYP["dbf"][12:],
            "fields do not make up a record",
            id="a-dbf-record-length-its-fields-do-not-fill",
        ),
    ],
)  # fmt: skip
def test_each_member_of_a_shapefile_zip_is_checked_by_content(
    tmp_path, limits, member, content, reason
):
    path = tmp_path / "hypotheses.zip"
    path.write_bytes(shapefiles())
    assert inspection.check_shapefiles(path, limits=limits) == {"shapefiles": 1}
    path.write_bytes(shapefiles(**{member: content}))
    with pytest.raises(inspection.BadContent, match=reason):
        inspection.check_shapefiles(path, limits=limits)


def test_a_shapefile_member_that_does_not_unpack_is_refused_saying_so(tmp_path, limits):
    content = bytearray(shapefiles())
    # Inside the first member's deflated data (bg_hyp_1.shp, 12 bytes of name after the
    # 30-byte local header).
    content[60:90] = bytes(30)
    path = tmp_path / "hypotheses.zip"
    path.write_bytes(bytes(content))
    with pytest.raises(inspection.BadContent, match="does not unpack"):
        inspection.check_shapefiles(path, limits=limits)


def test_macos_resource_forks_in_a_shapefile_zip_are_left_alone(tmp_path, limits):
    # The hypotheses rule skips them too: they are never opened.
    path = tmp_path / "hypotheses.zip"
    with zipfile.ZipFile(io.BytesIO(shapefiles())) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["__MACOSX/._bg_hyp_1.shp"] = b"\x00\x05\x16\x07 resource fork"
    path.write_bytes(zip_bytes(members))
    assert inspection.check_shapefiles(path, limits=limits) == {"shapefiles": 1}


def test_a_raster_must_be_a_tiff_by_its_first_bytes(tmp_path, limits):
    path = tmp_path / "layer.tif"
    path.write_bytes(synthetic.environment_bytes())
    assert inspection.check_raster(path, limits=limits) == {"pixels": 100, "bands": 1}
    # GDAL would open this by content (its VRT driver), whatever the name says.
    path.write_bytes(
        b'<VRTDataset rasterXSize="10" rasterYSize="10"><VRTRasterBand dataType="Byte" '
        b'band="1"><SimpleSource><SourceFilename>/vsicurl/http://127.0.0.1:9/x.tif'
        b"</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    with pytest.raises(inspection.BadContent, match="not a TIFF"):
        inspection.check_raster(path, limits=limits)


@pytest.mark.parametrize(
    "name",
    ["/vsicurl/http://127.0.0.1:9/x.tif", "/vsizip//tmp/a.zip/x.tif", "GTIFF_DIR:1:/tmp/x.tif"],
)
def test_a_raster_is_opened_by_a_plain_path_only(limits, name):
    with pytest.raises(inspection.BadContent, match="refusing to open"):
        inspection.check_raster(Path(name), limits=limits)


def test_the_inspection_subprocess_gets_no_secrets(monkeypatch, limits):
    monkeypatch.setenv("SECRET_KEY", "s" * 50)
    environment = inspection._child_env(limits)
    assert not {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"} & set(environment)
    assert environment["GDAL_PAM_ENABLED"] == "NO"
    assert environment["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


# ---------------------------------------------------------------------------------------------
# Limits: each kind of input over its limit is a 400 naming it, its twin at the limit passes


@pytest.mark.django_db
def test_a_pam_over_the_cell_limit_is_refused_naming_the_input(api, settings):
    settings.MAX_PAM_CELLS = 2114 * 55
    pam = stored(api, "pam.lmm", pam_sized(2114, 55))
    assert submit(api, "pam-stats", {"pam": pam}).status_code == 201
    settings.MAX_PAM_CELLS = 2114 * 55 - 1
    refused(
        submit(api, "pam-stats", {"pam": pam}),
        "inputs.pam",
        "116270 cells (2114 sites x 55 species)",
        "limit of 116269",
    )


@pytest.mark.django_db
def test_a_csv_pam_over_the_cell_limit_is_refused(api, settings):
    rows = [b"site,x,y,sp_a,sp_b"] + [b"%d,1,2,1,0" % n for n in range(50)]
    pam = stored(api, "pam.csv", b"\n".join(rows) + b"\n")
    settings.MAX_PAM_CELLS = 100
    assert submit(api, "pam-stats", {"pam": pam}).status_code == 201
    settings.MAX_PAM_CELLS = 99
    refused(submit(api, "pam-stats", {"pam": pam}), "inputs.pam", "more than 99 cells")


@pytest.mark.django_db
def test_a_tree_over_the_tip_limit_is_refused_before_it_is_parsed(api, pam_dataset, settings):
    settings.MAX_TREE_TIPS = 1000
    inputs = {"pam": pam_dataset["id"]}
    fits = stored(api, "tree.tre", newick(1000))
    assert submit(api, "pam-stats", {**inputs, "tree": fits}).status_code == 201
    # A polytomy of 200,000 tips would keep dendropy busy for hours: counted, never parsed.
    star = b"(" + b",".join(b"t%d" % n for n in range(200_000)) + b");\n"
    bomb = stored(api, "tree.tre", star)
    started = time.monotonic()
    response = submit(api, "pam-stats", {**inputs, "tree": bomb})
    # Counted: a parsed tree would be refused as "has 200000 tips, over the limit".
    refused(response, "inputs.tree", "more than 1000 tips")
    assert "over the limit" not in response.content.decode()
    assert time.monotonic() - started < 60  # a deadline only: parsing it would take hours


def test_commas_in_quoted_labels_and_comments_are_not_tips(tmp_path, limits):
    path = tmp_path / "tree.tre"
    path.write_bytes(b"(('a,b,c':1[&x={1,2,3}],d:1):1,e:1);\n")
    assert inspection._tip_bound(path, stop=100) == 3
    assert inspection.check_tree(path, limits=limits) == {"tips": 3}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("size", "bands", "limit", "reason"),
    [
        pytest.param((1000, 500, 1), 1, ("MAX_RASTER_PIXELS", 500_000), "500000 pixels", id="px"),
        pytest.param((10, 10, 4), 4, ("MAX_RASTER_BANDS", 4), "4 bands", id="bands"),
    ],
)
def test_a_raster_over_its_pixel_or_band_limit_is_refused(
    api, settings, tmp_path, size, bands, limit, reason
):
    width, height, count = size
    raster = stored(api, "eco.tif", tiff(tmp_path / "eco.tif", width, height, count))
    occurrences = stored(api, "occ.csv", OCCURRENCES)
    inputs = {"occurrences": [occurrences], "ecoregions": raster}
    setattr(settings, limit[0], limit[1])
    assert submit(api, "species-pam", inputs).status_code == 201
    setattr(settings, limit[0], limit[1] - 1)
    refused(submit(api, "species-pam", inputs), "inputs.ecoregions", reason, "over the limit")


@pytest.mark.django_db
def test_the_sparse_200000_pixel_square_geotiff_is_refused(api, tmp_path):
    raster = stored(api, "eco.tif", tiff(tmp_path / "eco.tif", 200_000, 200_000))
    inputs = {"occurrences": [stored(api, "occ.csv", OCCURRENCES)], "ecoregions": raster}
    message = refused(submit(api, "species-pam", inputs), "inputs.ecoregions", "40000000000")
    assert f"limit of {settings.MAX_RASTER_PIXELS}" in message


@pytest.mark.django_db
def test_a_csv_over_the_row_limit_is_refused_naming_the_input(api, settings):
    rows = b"".join(b"Heuchera alba,-100.5,%d\n" % n for n in range(20))
    occurrences = stored(api, "occ.csv", b"species_name,x,y\n" + rows)
    inputs = {"occurrences": [occurrences], "ecoregions": stored(api, "e.tif", _eco())}
    settings.MAX_CSV_ROWS = 21
    assert submit(api, "species-pam", inputs).status_code == 201
    settings.MAX_CSV_ROWS = 20
    refused(submit(api, "species-pam", inputs), "inputs.occurrences[0]", "more than 20 rows")


def _eco() -> bytes:
    return synthetic.ecoregions_bytes()


@pytest.mark.django_db
def test_a_zip_with_too_many_members_is_refused_at_upload(api, settings):
    settings.MAX_ZIP_MEMBERS = 5
    assert upload(api, "a.zip", zip_bytes({f"{n}.txt": b"x" for n in range(5)})).status_code == 201
    response = upload(api, "a.zip", zip_bytes({f"{n}.txt": b"x" for n in range(6)}))
    refused(response, "file", "more than 5 members")


@pytest.mark.django_db
def test_a_zip_that_unpacks_past_the_limit_is_refused_at_upload(api, settings):
    settings.MAX_ZIP_UNPACKED = 1024**2
    assert upload(api, "a.zip", zip_bytes({"a.bin": bytes(1024**2)})).status_code == 201
    response = upload(api, "a.zip", zip_bytes({"a.bin": bytes(1024**2 + 1)}))
    refused(response, "file", f"more than {1024**2} bytes")


@pytest.mark.django_db
def test_a_list_input_over_the_dataset_limit_is_refused_naming_it(api, settings):
    occurrences = [stored(api, f"o{n}.csv", OCCURRENCES) for n in range(3)]
    inputs = {"occurrences": occurrences, "ecoregions": stored(api, "e.tif", _eco())}
    settings.MAX_INPUT_DATASETS = 3
    assert submit(api, "species-pam", inputs).status_code == 201
    settings.MAX_INPUT_DATASETS = 2
    refused(submit(api, "species-pam", inputs), "inputs.occurrences", "3 datasets", "limit of 2")


# ---------------------------------------------------------------------------------------------
# Work: randomizations x PAM cells


@pytest.mark.django_db
def test_the_production_run_of_10000_randomizations_passes_the_default_work_limit(api):
    pam = stored(api, "pam.lmm", pam_sized(2114, 55))  # the Heuchera PAM's size
    response = submit(api, "pam-stats", {"pam": pam}, randomizations=10_000)
    assert response.status_code == 201, response.content


@pytest.mark.django_db
def test_randomizations_times_cells_over_the_limit_is_refused_naming_the_param(api):
    pam = stored(api, "pam.lmm", pam_sized(54_000, 62))  # 3,348,000 cells, the global PAM's
    fits = settings.MAX_RANDOMIZED_CELLS // 3_348_000
    assert submit(api, "pam-stats", {"pam": pam}, randomizations=fits).status_code == 201
    response = submit(api, "pam-stats", {"pam": pam}, randomizations=fits + 1)
    refused(
        response,
        "params.randomizations",
        f"{fits + 1} randomizations",
        f"limit of {settings.MAX_RANDOMIZED_CELLS}",
    )


@pytest.mark.django_db
def test_mcpa_permutations_times_cells_over_the_limit_is_refused(api, mcpa_inputs, settings):
    settings.MAX_RANDOMIZED_CELLS = mcpa_inputs.cells * 20
    assert submit(api, "mcpa", mcpa_inputs, permutations=20).status_code == 201
    response = submit(api, "mcpa", mcpa_inputs, permutations=21)
    limit = f"limit of {mcpa_inputs.cells * 20}"
    refused(response, "params.permutations", "21 permutations", limit)


# ---------------------------------------------------------------------------------------------
# The subprocess's own bounds: time and memory


@pytest.mark.django_db
def test_an_inspection_over_its_time_is_refused_naming_the_input(api, pam_dataset, settings):
    # A 20,000-tip polytomy: under the tip limit, but dendropy takes ~12 s over it.
    star = b"(" + b",".join(b"t%d" % n for n in range(20_000)) + b");\n"
    tree = stored(api, "tree.tre", star)
    settings.INSPECT_SECONDS = 2
    started = time.monotonic()
    response = submit(api, "pam-stats", {"pam": pam_dataset["id"], "tree": tree})
    refused(response, "inputs.tree", "took longer than 2 s")
    # A deadline, not a speed: under the ~12 s of the parse, so nothing waited for it to end.
    assert time.monotonic() - started < 10


@pytest.mark.django_db
def test_an_inspection_over_its_memory_is_refused_naming_the_input(api, settings):
    # headers.json of 30 MB: a list of 15 million numbers is ~500 MB of Python objects.
    npz = io.BytesIO()
    np.savez_compressed(npz, np.ones((2, 2)))
    headers = b'{"metadata": [' + b"1," * 15_000_000 + b"1]}"
    content = zip_bytes({"headers.json": headers, "data.npz": npz.getvalue()})
    pam = stored(api, "pam.lmm", content)
    assert submit(api, "pam-stats", {"pam": pam}).status_code == 201
    settings.INSPECT_MEMORY_BYTES = 400 * 1024**2
    refused(submit(api, "pam-stats", {"pam": pam}), "inputs.pam", "more than the 400 MiB")


def test_an_lmm_whose_npz_says_more_than_it_holds_is_refused(tmp_path, limits):
    path = tmp_path / "pam.lmm"
    path.write_bytes(lmm(np.ones((3, 2))))
    assert inspection.check_pam(path, limits=limits) == {"cells": 6, "shape": [3, 2]}
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (3, 2)}
        )
        archive.writestr("arr_0.npy", header.getvalue() + bytes(8 * 5))
    with zipfile.ZipFile(path) as archive:
        headers = archive.read("headers.json")
    path.write_bytes(zip_bytes({"headers.json": headers, "data.npz": npz.getvalue()}))
    with pytest.raises(inspection.BadContent, match="less data than its shape"):
        inspection.check_pam(path, limits=limits)


# ---------------------------------------------------------------------------------------------
# The catalog shows the limits


@pytest.mark.django_db
def test_each_workflow_document_shows_the_limits_its_inputs_are_held_to(api, settings):
    settings.MAX_TREE_TIPS = 1234
    body = {item["name"]: item for item in api.get("/api/v1/workflows/").json()}
    assert body["pam-stats"]["limits"] == {
        "csv_rows": settings.MAX_CSV_ROWS,
        "pam_cells": settings.MAX_PAM_CELLS,
        "tree_tips": 1234,
        "zip_members": settings.MAX_ZIP_MEMBERS,
        "zip_unpacked_bytes": settings.MAX_ZIP_UNPACKED,
        "randomized_cells": settings.MAX_RANDOMIZED_CELLS,
        "inspection_memory_bytes": settings.INSPECT_MEMORY_BYTES,
        "inspection_seconds": settings.INSPECT_SECONDS,
    }
    assert {"raster_pixels", "raster_bands", "datasets_per_input"} <= set(body["mcpa"]["limits"])
    assert body["mcpa"]["limits"]["randomized_cells"] == settings.MAX_RANDOMIZED_CELLS
    assert body["selftest"]["limits"] == {}
    # The fields that were there are there as they were.
    detail = api.get("/api/v1/workflows/pam-stats/").json()
    assert detail["limits"]["tree_tips"] == 1234
    assert {"name", "title", "description", "url", "inputs", "schema", "example"} <= set(detail)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LMWEB_MAX_PAM_CELLS", "lots"),
        ("LMWEB_MAX_TREE_TIPS", "1"),
        ("LMWEB_MAX_RASTER_PIXELS", "0"),
        ("LMWEB_MAX_RASTER_BANDS", "-1"),
        ("LMWEB_MAX_CSV_ROWS", "1.5"),
        ("LMWEB_MAX_ZIP_MEMBERS", "many"),
        ("LMWEB_MAX_ZIP_UNPACKED", "4X"),
        ("LMWEB_MAX_INPUT_DATASETS", "0"),
        ("LMWEB_MAX_RANDOMIZED_CELLS", "2e9"),
        ("LMWEB_INSPECT_MEMORY", "100M"),
        ("LMWEB_INSPECT_SECONDS", "0"),
    ],
)
def test_a_bad_limit_stops_the_start_naming_the_variable(tmp_path, variable, value):
    result = start_django(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
