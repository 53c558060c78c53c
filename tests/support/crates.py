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


def _entity(issue: dict) -> str:
    return str(issue.get("violatingEntity"))


def _named_by(issue: dict) -> str:
    return str(issue.get("violatingPropertyValue"))


# What the package's crate knowingly leaves out of the profiles' RECOMMENDED checks, each by check
# and entity (anything else failing fails the test):
# - the Makeflow files are in the package, so their ids are relative (Workflow RO-Crate wants the
#   main workflow as a data entity of the crate) and they have no URL of their own; lmweb itself
#   has no public address to name it by;
# - the inputs stay in the service, named by their dataset ids (urn:uuid:...), which the validator
#   cannot fetch;
# - the service knows the owner's user name only, not their affiliation;
# - a rule's outputs are the workflow's intermediate files, not in the package, so a rule's
#   action lists no result (the run's action lists every output).
KNOWN_MISSES = {
    "process-run-crate-0.5_3.2": lambda i: (
        _entity(i).startswith("./workflow/") or _entity(i) == "./#lmweb"
    ),
    "process-run-crate-0.5_5.1": lambda i: (
        _named_by(i).startswith("file://")
        and ("/workflow/" in _named_by(i) or _named_by(i).endswith("/#lmweb"))
    ),
    "ro-crate-1.1_28.1": lambda i: "urn:uuid:" in (i.get("message") or ""),
    "ro-crate-1.1_30.2": lambda i: _entity(i) == "./#owner",
    "ro-crate-1.1_30.3": lambda i: _entity(i) == "./#owner",
    "process-run-crate-0.5_11.1": lambda i: _entity(i).startswith("./#rule-"),
}


def _known(issue: dict) -> bool:
    return KNOWN_MISSES.get(issue["check"]["identifier"], lambda _: False)(issue)


def validate(folder: Path) -> None:
    """rocrate-validator on an unzipped package: no check of the Workflow Run Crate profile (and
    the profiles it builds on) fails, REQUIRED or RECOMMENDED, but the KNOWN_MISSES."""
    assert (TOOLS / "rocrate-validator").exists(), "no RO-Crate tools: run make setup-test"
    with tempfile.TemporaryDirectory() as scratch:
        cache = str(Path(scratch) / "http-cache")
        subprocess.run(
            [str(TOOLS / "python"), "-c", WARM_CACHE, cache, CONTEXT], check=True, timeout=60
        )
        done = subprocess.run(
            [str(TOOLS / "rocrate-validator"), "validate", "--profile-identifier",
             "workflow-run-crate", "--requirement-severity", "RECOMMENDED", "--offline",
             "--cache-path", cache, "--no-paging", "--output-format", "json", str(folder)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    # The report is the first JSON document on stdout (a summary may follow it).
    result, _ = json.JSONDecoder().raw_decode(done.stdout.lstrip())
    unknown = [issue for issue in result["issues"] if not _known(issue)]
    assert not unknown, json.dumps(
        [
            {
                "check": issue["check"]["identifier"],
                "message": issue.get("message"),
                "entity": issue.get("violatingEntity"),
            }
            for issue in unknown
        ],
        indent=1,
    )[:4000]
    assert done.returncode in (0, 1), (done.stdout[-4000:], done.stderr[-4000:])


def read_with_ro_crate_py(folder: Path) -> dict:
    done = subprocess.run(
        [str(TOOLS / "python"), "-c", READ_WITH_RO_CRATE_PY, str(folder)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
