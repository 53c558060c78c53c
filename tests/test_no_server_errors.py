"""No 500 for any input: regression tests for what fuzzing found, and the fuzzing itself.

Schemathesis generates requests for every operation of the running API's own OpenAPI document
(/api/schema/), valid and invalid, authenticated with a token; hypothesis-jsonschema generates
job requests from each workflow's JSON Schema (GET /workflows/), naming real datasets so that
the content and cross-field checks run too. The API runs in gunicorn on a database of its own
and a Redis database that no controller reads: no job it accepts is run. Nothing here leaves
the machine."""

import io
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import psycopg
import pytest
import redis
import requests
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core import NOT_SET

from tests.support.payloads import lmm_bytes
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SPECIES_PAM = {
    "workflow": "species-pam",
    "inputs": {
        "occurrences": ["00000000-0000-0000-0000-000000000001"],
        "ecoregions": "00000000-0000-0000-0000-000000000002",
    },
    "params": {
        "species_column": "species_name",
        "x_column": "x",
        "y_column": "y",
        "grid": {"min_x": -130, "min_y": 20, "max_x": -60, "max_y": 55, "epsg": 4326},
    },
}


@pytest.mark.django_db
@pytest.mark.parametrize("cell_size", [1e-300, 5e-324, 1e-12])
def test_a_tiny_cell_size_is_a_400_naming_the_field(api, data_dir, cell_size):
    body = {**SPECIES_PAM, "params": {**SPECIES_PAM["params"]}}
    body["params"]["grid"] = {**SPECIES_PAM["params"]["grid"], "cell_size": cell_size}
    response = api.post("/api/v1/jobs/", body)
    assert response.status_code == 400, response.content
    assert "params.grid.cell_size" in response.json()["errors"]


# --- Fuzzing the running API

# Examples per operation and mode (valid, invalid); derandomized, so every run sends the same
# requests. About 40 s for both tests on a busy 2-core machine.
FUZZ_EXAMPLES = 20
WORKFLOW_EXAMPLES = 30  # job requests per workflow schema and mode


def _tiff_bytes() -> bytes:
    from osgeo import gdal, osr

    gdal.UseExceptions()
    path = f"/vsimem/fuzz-{secrets.token_hex(4)}.tif"
    raster = gdal.GetDriverByName("GTiff").Create(path, 4, 4, 1, gdal.GDT_Int16)
    raster.SetGeoTransform((-130, 17.5, 0, 55, 0, -8.75))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    raster.SetProjection(srs.ExportToWkt())
    raster.GetRasterBand(1).WriteArray(__import__("numpy").arange(16).reshape(4, 4))
    raster = None
    data = gdal.VSIGetMemFileBuffer_unsafe(path)
    gdal.Unlink(path)
    return bytes(data)


def _shapefile_zip() -> bytes:
    from osgeo import gdal, ogr, osr

    gdal.UseExceptions()
    folder = f"/vsimem/fuzz-{secrets.token_hex(4)}"
    source = ogr.GetDriverByName("ESRI Shapefile").CreateDataSource(folder)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    layer = source.CreateLayer("hypothesis", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("side", ogr.OFTInteger))
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetField("side", 1)
    feature.SetGeometry(
        ogr.CreateGeometryFromWkt("POLYGON ((-130 20,-95 20,-95 55,-130 55,-130 20))")
    )
    layer.CreateFeature(feature)
    source = None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in gdal.ReadDir(folder) or []:
            handle = gdal.VSIFOpenL(f"{folder}/{name}", "rb")
            gdal.VSIFSeekL(handle, 0, 2)
            size = gdal.VSIFTellL(handle)
            gdal.VSIFSeekL(handle, 0, 0)
            archive.writestr(name, gdal.VSIFReadL(1, size, handle))
            gdal.VSIFCloseL(handle)
            gdal.Unlink(f"{folder}/{name}")
    return buffer.getvalue()


SAMPLES = {
    "pam.lmm": lmm_bytes,
    "tree.tre": lambda: b"((sp_a:1,sp_b:1):1);\n",
    "occurrences.csv": lambda: b"species_name,x,y\nsp_a,-100.5,40.5\nsp_b,-90.25,35.75\n",
    "ecoregions.tif": _tiff_bytes,
    "hypotheses.zip": _shapefile_zip,
}


class FuzzServer:
    def __init__(self, url: str, token: str, datasets: dict[str, str]):
        self.url = url
        self.headers = {"Authorization": f"Token {token}"}
        self.datasets = datasets  # detected format ("lmm", "tif"...) -> dataset id


def _run(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    database = django_settings.DATABASES["default"]
    server_url = f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
    name = f"lmweb_fuzz_{secrets.token_hex(4)}"
    broker = django_settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/14"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMWEB_")}
    env.update(
        DEBUG="0",
        DATABASE_URL=f"{server_url}/{name}",
        # A Redis database no controller reads: accepted jobs stay QUEUED.
        CELERY_BROKER_URL=broker,
        LMWEB_DATA_DIR=str(root / "data"),
        LMWEB_HTTPS="0",
        LMWEB_LOG_LEVEL="ERROR",
        LMWEB_USER_MAX_QUEUED="100000",
        LMWEB_THROTTLE_USER="10000000/hour",
        LMWEB_THROTTLE_SUBMIT="10000000/hour",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    gunicorn = None
    try:
        _run([sys.executable, "manage.py", "migrate", "--noinput"], env)
        script = (
            "from django.contrib.auth.models import User; "
            "from rest_framework.authtoken.models import Token; "
            "print(Token.objects.create(user=User.objects.create_user('fuzzer')).key)"
        )
        # The last line: Django's shell may first say what it imported.
        token = _run([sys.executable, "manage.py", "shell", "-c", script], env).split()[-1]
        port = free_port()
        log = (root / "gunicorn.log").open("wb")
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "lmweb.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "--threads", "4"],
            cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/v1/", timeout=5)
                break
            except urllib.error.HTTPError:
                break  # 401: it serves
            except OSError:
                assert time.monotonic() < deadline and gunicorn.poll() is None, "no server"
                time.sleep(0.2)
        headers = {"Authorization": f"Token {token}"}
        datasets = {}
        for filename, make in SAMPLES.items():
            files = {"file": (filename, make())}
            answer = requests.post(
                f"{url}/api/v1/datasets/", headers=headers, files=files, timeout=60
            )
            assert answer.status_code == 201, (filename, answer.text)
            datasets[answer.json()["format"]] = answer.json()["id"]
        yield FuzzServer(url, token, datasets)
    finally:
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(timeout=15)
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        queue = redis.Redis.from_url(broker)
        queue.delete("lmweb-jobs", "lmweb")


def _server_errors(strategy, send, examples: int = FUZZ_EXAMPLES) -> list[str] | None:
    """Send each example; a description of every 5xx, or None when no example can be made
    (an operation without parameters has no invalid variant)."""
    found: list[str] = []

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(example=strategy)
    def run(example):
        status, described = send(example)
        if status >= 500:
            found.append(f"{status}: {described}")

    try:
        run()
    except Unsatisfiable:
        return None
    return found


def test_no_operation_of_the_openapi_document_answers_a_server_error(fuzz_server):
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(
        f"{fuzz_server.url}/api/schema/?format=json", headers=fuzz_server.headers, timeout=60
    )
    session = requests.Session()

    def send(case):
        response = case.call(
            base_url=fuzz_server.url, session=session, headers=fuzz_server.headers, timeout=60
        )
        body = "" if case.body is NOT_SET else f" body={case.body!r}"
        return response.status_code, f"{case.method} {case.formatted_path} {case.query}{body}"[:500]

    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert {"POST /api/v1/jobs/", "POST /api/v1/datasets/", "GET /api/v1/workflows/"} <= labels
    real_ids = {"job": None, "dataset": next(iter(fuzz_server.datasets.values()))}
    submitted = requests.post(
        f"{fuzz_server.url}/api/v1/jobs/",
        headers=fuzz_server.headers,
        json={"workflow": "selftest", "params": {"tasks": 1, "seconds": 0}},
        timeout=60,
    )
    real_ids["job"] = submitted.json()["id"]
    errors, ran = [], set()
    for operation in operations:
        strategies = {mode: operation.as_strategy(generation_mode=mode) for mode in GenerationMode}
        # The same operation on an object that exists (its owner asking).
        if "{id}" in operation.path:
            kind = "job" if "/jobs/" in operation.path else "dataset"
            strategies["existing"] = operation.as_strategy(path_parameters={"id": real_ids[kind]})
        for name, strategy in strategies.items():
            found = _server_errors(strategy, send)
            if found is not None:
                ran.add((operation.label, str(name)))
                errors += found
    assert errors == [], "\n".join(errors)
    assert {label for label, _ in ran} == labels  # every operation was exercised


def _with_real_datasets(request, specs: dict, datasets: dict[str, str]):
    """Name an uploaded dataset of a fitting format in each input (the generated ids are
    random), so the request reaches the checks of content and across fields."""
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, dict):
        return request
    for name, value in inputs.items():
        formats = specs.get(name, {}).get("formats", [])
        chosen = next((datasets[fmt] for fmt in formats if fmt in datasets), None)
        if chosen is not None:
            inputs[name] = [chosen] if isinstance(value, list) else chosen
    return request


def _submission_document(workflow: dict) -> dict:
    """An OpenAPI document whose one operation is a job submission with this workflow's
    request schema (GET /workflows/), for schemathesis to make valid and invalid bodies of."""
    return {
        "openapi": "3.1.0",
        "info": {"title": f"submit {workflow['name']}", "version": "1"},
        "paths": {
            "/api/v1/jobs/": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": workflow["schema"]}},
                    },
                    "responses": {"201": {"description": "the job"}},
                }
            }
        },
    }


def test_no_job_request_for_any_workflow_schema_answers_a_server_error(fuzz_server):
    import schemathesis
    from schemathesis import GenerationMode

    catalog = requests.get(
        f"{fuzz_server.url}/api/v1/workflows/", headers=fuzz_server.headers, timeout=60
    ).json()
    workflows = catalog["results"] if isinstance(catalog, dict) else catalog
    assert {workflow["name"] for workflow in workflows} >= {"selftest", "pam-stats", "mcpa"}
    session = requests.Session()
    errors, statuses = [], []
    for workflow in workflows:
        operation = schemathesis.openapi.from_dict(_submission_document(workflow))["/api/v1/jobs/"][
            "POST"
        ]

        def send(case, workflow=workflow):
            case.body = _with_real_datasets(case.body, workflow["inputs"], fuzz_server.datasets)
            response = case.call(
                base_url=fuzz_server.url, session=session, headers=fuzz_server.headers, timeout=60
            )
            statuses.append(response.status_code)
            return response.status_code, f"{workflow['name']}: {case.body!r}"[:500]

        example = _with_real_datasets(workflow["example"], workflow["inputs"], fuzz_server.datasets)
        for mode in GenerationMode:
            strategy = operation.as_strategy(generation_mode=mode)
            errors += _server_errors(strategy, send, WORKFLOW_EXAMPLES) or []
        errors += _server_errors(operation.as_strategy(body=example), send, 1) or []
    assert errors == [], "\n".join(errors)
    assert 201 in statuses and 400 in statuses  # valid requests got past every check


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/jobs/", "/api/v1/datasets/"])
@pytest.mark.parametrize("field", ["submitted_after", "finished_before", "created_before"])
def test_a_time_filter_with_a_large_utc_offset_is_not_a_500(api, path, field):
    # Python accepts offsets up to 23:59, PostgreSQL only up to 15:59 (found by fuzzing).
    response = api.get(path, {field: "1419-10-29T14:17:26+22:53"})
    assert response.status_code == 200, response.content
    # At the very start of the calendar, UTC would fall before year 1: the field is named.
    response = api.get(path, {field: "0001-01-01T00:00:00+16:00"})
    known = field in {"created_before"} if "datasets" in path else field != "created_before"
    assert response.status_code == (400 if known else 200), response.content
    if known:
        assert field in response.json()["errors"]
