"""RO-Crate's own tools on a package's crate, in the virtualenv `make setup-test` makes
(var/clients/rocrate/): crs4's rocrate-validator and ro-crate-py.

The validator resolves the crate's @context (https://w3id.org/ro/crate/1.1/context) over HTTP;
this machine has no internet, so it runs offline, from an HTTP cache holding ro-crate-py's own
copy of that context under its URL (put there through requests-cache, as a first online run
would have)."""

import json
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "var" / "clients" / "rocrate" / "bin"

READ_WITH_RO_CRATE_PY = """
import json, sys
from rocrate.rocrate import ROCrate

crate = ROCrate(sys.argv[1])
actions = [e for e in crate.get_entities() if e.type == "CreateAction"]
print(json.dumps({
    "main": crate.mainEntity.id,
    "main_type": crate.mainEntity.type,
    "actions": sorted(a.id for a in actions),
    "files": {e.id: e.get("sha256") for e in crate.get_entities() if e.type == "File"},
}))
"""


CONTEXT = "https://w3id.org/ro/crate/1.1/context"
WARM_CACHE = """
import io, pathlib, sys
import rocrate
from requests.adapters import HTTPAdapter
from requests_cache import CachedSession
from urllib3.response import HTTPResponse

context = pathlib.Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld"
assert __import__("json").loads(context.read_text())["@id"] == sys.argv[2]


class FromDisk(HTTPAdapter):
    def send(self, request, **kwargs):
        raw = HTTPResponse(
            body=io.BytesIO(context.read_bytes()), status=200, preload_content=False,
            headers={"Content-Type": "application/ld+json"}, request_url=request.url,
        )
        return self.build_response(request, raw)


session = CachedSession(cache_name=sys.argv[1], backend="sqlite", expire_after=-1)
session.mount("https://", FromDisk())
assert session.get(sys.argv[2]).status_code == 200
"""


def validate(folder: Path) -> None:
    """rocrate-validator on an unzipped package: no REQUIRED check of the Workflow Run Crate
    profile (and the profiles it builds on) fails."""
    assert (TOOLS / "rocrate-validator").exists(), "no RO-Crate tools: run make setup-test"
    with tempfile.TemporaryDirectory() as scratch:
        cache = str(Path(scratch) / "http-cache")
        subprocess.run(
            [str(TOOLS / "python"), "-c", WARM_CACHE, cache, CONTEXT], check=True, timeout=60
        )
        done = subprocess.run(
            [str(TOOLS / "rocrate-validator"), "validate", "--profile-identifier",
             "workflow-run-crate", "--requirement-severity", "REQUIRED", "--offline",
             "--cache-path", cache, "--no-paging", "--output-format", "json", str(folder)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
    result = json.loads(done.stdout)
    assert result["passed"] is True, json.dumps(result.get("issues"), indent=1)[:4000]


def read_with_ro_crate_py(folder: Path) -> dict:
    done = subprocess.run(
        [str(TOOLS / "python"), "-c", READ_WITH_RO_CRATE_PY, str(folder)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
