"""The network in the rule sandbox: only a rule whose category declares it reaches a service
(occurrence-cleaning's name resolver); its twin in an ordinary category is cut off."""

import http.server
import json
import threading

import pytest

from translators.makeflow import Category

from .test_guard import python_rule, run_dag, stderr_of, write_script

pytestmark = pytest.mark.integration

FETCH = """
    import json, sys, urllib.request
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
            found = "reached: %d" % response.status
    except Exception as exc:
        found = "refused: " + type(exc).__name__
    open("report.json", "w").write(json.dumps(found))
"""


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def service():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_only_a_rule_that_declares_the_network_reaches_a_service(procs, tmp_path, service):
    url = f"{service}/species/match?name=Acer"
    worker_env = {"LMWEB_RULE_SANDBOX": "required"}

    def fetch(workdir, network):
        write_script(workdir, "fetch", FETCH)
        rule = python_rule("fetch", "", ["report.json"])
        rule["command"] = rule["command"].replace("fetch.py", f"fetch.py {url}")
        category = Category(cores=1, memory=512, disk=512, network=network)
        rules = run_dag(procs, workdir, [rule], category=category, env=worker_env)
        assert rules["fetch"].state == "complete", stderr_of(workdir, rules["fetch"])
        return json.loads((workdir / "report.json").read_text())

    assert fetch(tmp_path / "declared", network=True) == "reached: 200"
    assert fetch(tmp_path / "ordinary", network=False).startswith("refused")
