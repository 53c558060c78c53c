"""occurrence-cleaning on names as researchers have them, through the real stack: a Darwin Core
Archive of odd names with a name map lmpy wrote (null for unresolved names), dropped or kept;
names resolved through a stand-in for GBIF's species match API; the iDigBio sample (issue 15)."""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests import synthetic
from tests.conftest import upload

from .conftest import wait_until_finished
from .test_execution import submit

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _upload(client, filename, content) -> str:
    response = upload(client, filename, content)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _output(client, job_id: str, path: str) -> bytes:
    outputs = client.get(f"/api/v1/jobs/{job_id}/outputs/").json()["results"]
    [entry] = [o for o in outputs if o["path"] == path]
    return b"".join(client.get(entry["url"]).streaming_content)


def _cleaning(occurrences, name_map, step) -> dict:
    inputs = {"occurrences": occurrences}
    if name_map:
        inputs["name_map"] = name_map
    return {"workflow": "occurrence-cleaning", "inputs": inputs, "params": {"wranglers": [step]}}


def _species(client, job_id: str) -> dict[str, int]:
    manifest = json.loads(_output(client, job_id, "species.json"))
    return {entry["name"]: entry["records_after_cleaning"] for entry in manifest.values()}


def test_a_map_with_null_drops_or_keeps_the_unresolved_names(live):
    archive = _upload(live, "odd.zip", synthetic.odd_names_dwca())
    name_map = _upload(live, "names.json", synthetic.lmpy_name_map(synthetic.ODD_NAMES_MAP, "json"))
    jobs = {
        unmapped: submit(
            live,
            _cleaning([archive], name_map, {"type": "accepted_names", "unmapped": unmapped}),
        )["id"]
        for unmapped in ("drop", "keep")
    }
    for job_id in jobs.values():
        body = wait_until_finished(live, job_id, timeout=300)
        assert body["state"] == "COMPLETE", (body.get("error"), body.get("state"))
    mapped = {
        "Acer rubrum": 2,
        "Acer saccharinum": 1,
        "Acer \u00d7freemanii": 1,
        "Acer negundo": 1,
        "Quercus alba": 1,
    }
    assert _species(live, jobs["drop"]) == mapped
    assert _species(live, jobs["keep"]) == {
        **mapped,
        "Acer rubrum": 3,  # "ACER RUBRUM", not in the map, kept as lmpy holds it
        "Acer \u00d7freemanii": 2,  # its own spelling kept beside the mapped "x" one
        "Acer platanoides": 2,  # null in the map: kept under its own name
    }
    report = json.loads(_output(live, jobs["drop"], "cleaning_report.json"))
    [source] = report["sources"]
    assert source["records_without_name"] == 1
    assert source["records_without_finite_coordinates"] == 1


class _Names(BaseHTTPRequestHandler):
    """GBIF's /species/match as the tools read it: status and canonicalName."""

    asked: list[str] = []

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        name = query.get("name", [""])[0]
        if url.path != "/v1/species/match" or query.get("verbose") != ["true"]:
            self.send_error(404)
            return
        self.asked.append(name)
        if "rubrum" in name.lower():
            answer = {"status": "ACCEPTED", "canonicalName": "Acer rubrum"}
        elif "freemanii" in name:
            answer = {"status": "SYNONYM", "canonicalName": "Acer \u00d7freemanii"}
        else:
            answer = {"matchType": "NONE", "confidence": 100}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def name_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Names)
    _Names.asked = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Names.asked
    finally:
        server.shutdown()
        server.server_close()


def test_names_the_map_lacks_are_resolved_by_the_name_service(live, settings, name_service):
    url, asked = name_service
    settings.GBIF_NAMES, settings.GBIF_API_URL = True, url
    archive = _upload(live, "odd.zip", synthetic.odd_names_dwca())
    # The map settles two names (one as unresolved): the service is asked only for the rest.
    name_map = _upload(
        live,
        "names.csv",
        synthetic.lmpy_name_map({"Acer rubrum L.": "Acer rubrum", "Acer platanoides": None}, "csv"),
    )
    step = {"type": "accepted_names", "name_resolver": "gbif", "unmapped": "drop"}
    job_id = submit(live, _cleaning([archive], name_map, step))["id"]
    body = wait_until_finished(live, job_id, timeout=300)
    assert body["state"] == "COMPLETE", (body.get("error"), body.get("state"))
    assert sorted(asked) == sorted(
        [
            "Acer rubrum",
            "Ac\u00e9r saccharinum",
            "Acer x freemanii",
            "Acer \u00d7freemanii",
            'Acer "quoted" negundo',
            "Quercus alba l., 1753",
        ]
    )
    assert _species(live, job_id) == {"Acer rubrum": 3, "Acer \u00d7freemanii": 2}
    resolved = json.loads(_output(live, job_id, "resolved_names.json"))
    assert resolved["Acer platanoides"] is None and resolved["Quercus alba l., 1753"] is None
    assert resolved["Acer x freemanii"] == "Acer \u00d7freemanii"


def test_the_idigbio_sample_with_a_map_holding_null(live):
    folder = synthetic.sample_data()
    sample = (folder / "dwca" / "idigbio_acer_rubrum.zip").read_bytes()
    archives = [
        _upload(live, "acer.zip", sample),
        _upload(live, "odd.zip", synthetic.odd_names_dwca()),
    ]
    # Its 3,245 records are all "acer rubrum" (as lmpy holds it: "Acer rubrum").
    name_map = _upload(
        live,
        "names.json",
        synthetic.lmpy_name_map({**synthetic.ODD_NAMES_MAP, "Acer rubrum": "Acer rubrum"}, "json"),
    )
    jobs = {
        unmapped: submit(
            live,
            _cleaning(archives, name_map, {"type": "accepted_names", "unmapped": unmapped}),
        )["id"]
        for unmapped in ("drop", "keep")
    }
    for job_id in jobs.values():
        body = wait_until_finished(live, job_id, timeout=300)
        assert body["state"] == "COMPLETE", (body.get("error"), body.get("state"))
    dropped, kept = _species(live, jobs["drop"]), _species(live, jobs["keep"])
    assert dropped["Acer rubrum"] > 3 + 1000
    assert "Acer platanoides" not in dropped and kept["Acer platanoides"] == 2
    assert kept["Acer rubrum"] == dropped["Acer rubrum"]
    report = json.loads(_output(live, jobs["drop"], "cleaning_report.json"))
    assert report["sources"][0]["records_read"] == 3245
