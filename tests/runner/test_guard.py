"""The rule guard on real workers: limits, the sandbox and GDAL's fence, inside real rules.

Every makeflow here runs as the controller runs it (``--wrapper`` with the guard shipped by
``--wrapper-input``), with a real Work Queue worker. Each check has a twin run without the guard
that shows the rule could do the forbidden thing, so no test passes for want of trying.
"""

import http.server
import json
import os
import shlex
import shutil
import sqlite3
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from jobs import sandbox
from jobs.cctools import log as makeflowlog
from translators.makeflow import Category

from .conftest import logged_rule

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def run_dag(
    procs, workdir, rules, *, category=None, guard=True, seconds=120, env=None, rule_env=None
):
    """Run `rules` (all in one category) to the end; returns the rules' records."""
    category = category or Category(cores=1, memory=512, disk=512)
    document = {
        "categories": {"c": category.render()},
        "default_category": "c",
        "rules": [{**rule, "category": "c",
                   "environment": {"LMWEB_RULE": rule["id"], **(rule_env or {})}}
                  for rule in rules],
    }  # fmt: skip
    for rule in document["rules"]:
        del rule["id"]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "test.mf.json").write_text(json.dumps(document, indent=1))
    extra = []
    if guard:
        sandbox.write_files(workdir)
        extra = sandbox.makeflow_arguments(seconds)
    run = procs.start(workdir, "test.mf.json", extra_args=extra)
    run.add_workers(1, procs.spec(env=tuple((env or {}).items())))
    deadline = time.monotonic() + 120
    while run.poll() is None:
        assert time.monotonic() < deadline, "makeflow did not finish"
        time.sleep(0.1)
    return {rule.rule: rule for rule in makeflowlog.read_rules(workdir, "test.mf.json")}


def python_rule(rule_id: str, script: str, outputs: list[str], inputs=()) -> dict:
    """A rule that runs a Python script (shipped as an input) with the service's Python."""
    name = f"{rule_id}.py"
    return {
        "id": rule_id,
        **logged_rule(rule_id, f"{PYTHON} {name}", outputs, [name, *inputs]),
    }


def write_script(workdir: Path, rule_id: str, text: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{rule_id}.py").write_text(textwrap.dedent(text))


def stderr_of(workdir: Path, rule) -> str:
    for folder in (workdir / f"makeflow.failed.{rule.node_id}", workdir):
        path = folder / "logs" / f"{rule.rule}.stderr"
        if path.exists():
            return path.read_text()
    return ""


# -- Limits ------------------------------------------------------------------------------------

FILL = "held = b'x' * (300 << 20)\nprint(len(held))\n"


def test_a_rule_over_its_declared_memory_is_killed_and_says_which_limit(procs, tmp_path):
    workdir = tmp_path / "job"
    write_script(workdir, "fill", FILL)
    rules = run_dag(
        procs,
        workdir,
        [python_rule("fill", "", ["done.txt"])],
        category=Category(cores=1, memory=100, disk=512),
    )
    rule = rules["fill"]
    assert rule.state == "failed" and rule.exit_code == 137
    assert "rule fill was killed" in stderr_of(workdir, rule)
    assert "over its limit of 100 MB (memory)" in stderr_of(workdir, rule)

    # Twin: declared 512 MB, the same rule completes.
    twin = tmp_path / "twin"
    write_script(twin, "fill", FILL + "open('done.txt', 'w').write('ok')\n")
    rules = run_dag(procs, twin, [python_rule("fill", "", ["done.txt"])])
    assert rules["fill"].state == "complete", stderr_of(twin, rules["fill"])


def test_a_rule_over_its_time_or_disk_is_killed_and_says_which_limit(procs, tmp_path):
    workdir = tmp_path / "job"
    rules = run_dag(
        procs,
        workdir,
        [
            {"id": "slow", **logged_rule("slow", "sleep 30 && touch a", ["a"])},
            {"id": "big", **logged_rule("big", "head -c 80000000 /dev/zero > b", ["b"])},
        ],
        category=Category(cores=1, memory=512, disk=50),
        seconds=2,
    )
    assert rules["slow"].state == "failed"
    assert "over its limit of 2 s (time)" in stderr_of(workdir, rules["slow"])
    assert rules["big"].state == "failed"
    assert "limit of 50 MB (disk)" in stderr_of(workdir, rules["big"])


# -- Least privilege ---------------------------------------------------------------------------

PROBE = """
    import json, os, socket, sqlite3, sys
    from urllib.parse import urlsplit
    data, database, broker = sys.argv[1:4]
    found = {}
    def attempt(name, action):
        try:
            found[name] = str(action())[:200]
        except Exception as exc:
            found[name] = "refused: " + type(exc).__name__
    attempt("secret", lambda: open(os.path.join(data, "secrets", "wq.password")).read())
    attempt("other job", lambda: open(os.path.join(data, "jobs", "other", "inputs.csv")).read())
    attempt(
        "sqlite",
        lambda: sqlite3.connect("file:" + os.path.join(data, "lmweb.sqlite3") + "?mode=ro",
                                uri=True).execute("select key from authtoken_token").fetchall(),
    )
    def postgres():
        import psycopg
        with psycopg.connect(database, connect_timeout=2) as db:
            return db.execute("select count(*) from pg_database").fetchone()
    attempt("postgres", postgres)
    redis = urlsplit(broker)
    attempt("redis", lambda: socket.create_connection((redis.hostname, redis.port), timeout=2))
    attempt("processes", lambda: len([p for p in os.listdir("/proc") if p.isdigit()]) > 20 or 1/0)
    open("report.json", "w").write(json.dumps(found))
"""


@pytest.fixture
def service_data():
    """A data folder outside /tmp (the guard gives each rule its own /tmp), as the service's:
    a secret, another job's input and the SQLite database with an API token in it."""
    folder = Path(tempfile.mkdtemp(prefix="lmweb-guard-", dir="/var/tmp"))
    try:
        (folder / "secrets").mkdir()
        (folder / "secrets" / "wq.password").write_text("the-password\n")
        (folder / "jobs" / "other").mkdir(parents=True)
        (folder / "jobs" / "other" / "inputs.csv").write_text("species,x,y\n")
        with sqlite3.connect(folder / "lmweb.sqlite3") as db:
            db.execute("create table authtoken_token (key text)")
            db.execute("insert into authtoken_token values ('token-of-alice')")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_rule_reads_no_secret_no_other_job_no_database(procs, tmp_path, service_data):
    def probe(workdir, **options):
        write_script(workdir, "probe", PROBE)
        rule = python_rule("probe", "", ["report.json"])
        # The server the service uses, its maintenance database (the service's own may not
        # exist before the suite creates its test copy).
        server = urlsplit(os.environ["DATABASE_URL"])
        database = urlunsplit(("postgresql", server.netloc, "/postgres", "", ""))
        arguments = [str(service_data), database, os.environ["CELERY_BROKER_URL"]]
        rule["command"] = rule["command"].replace("probe.py", "probe.py " + shlex.join(arguments))
        rules = run_dag(procs, workdir, [rule], **options)
        assert rules["probe"].state == "complete", stderr_of(workdir, rules["probe"])
        return json.loads((workdir / "report.json").read_text())

    # Twin without the guard: a rule can read all of it (trust-auth PostgreSQL included).
    bare = probe(tmp_path / "bare", guard=False)
    assert bare["secret"] == "the-password\n"
    assert bare["other job"] == "species,x,y\n"
    assert "token-of-alice" in bare["sqlite"]
    assert not bare["postgres"].startswith("refused") and not bare["redis"].startswith("refused")

    worker_env = {"LMWEB_RULE_SANDBOX": "required", "LMWEB_RULE_HIDE": str(service_data)}
    guarded = probe(tmp_path / "guarded", env=worker_env)
    assert all(value.startswith("refused") for value in guarded.values()), guarded


# -- GDAL's fence ------------------------------------------------------------------------------

GDAL_PROBE = """
    import json
    from osgeo import gdal, ogr
    gdal.UseExceptions()
    found = {}
    def attempt(name, action):
        try:
            found[name] = "opened" if action() is not None else "refused: None"
        except Exception as exc:
            found[name] = "refused: " + type(exc).__name__
    attempt("plain tif", lambda: gdal.Open("a.tif"))
    attempt("zipped tif", lambda: gdal.Open("/vsizip/inner.zip/a.tif"))
    def vrt_rows():
        source = ogr.Open("evil.shp")  # kept: a layer outliving its source crashes GDAL
        if source is None:
            return None
        rows = [feature.GetField(0) for feature in source.GetLayer(0)]
        return rows if rows else None
    attempt("vrt as shp", vrt_rows)
    attempt("vrt as tif", lambda: gdal.Open("evil.tif"))
    attempt("vsicurl", lambda: gdal.Open("/vsicurl/URL"))
    attempt("nested vsizip", lambda: gdal.Open("/vsizip/{/vsizip/outer.zip/inner.zip}/a.tif"))
    open("report.json", "w").write(json.dumps(found))
"""


class _Counting(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"II*\x00" + b"\x00" * 64)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def web_server():
    _Counting.hits = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()


# What a hostile VRT would run on the service's database.
TOKENS = "SELECT key FROM authtoken_token"


def _gdal_inputs(workdir: Path, secret_db: Path) -> None:
    from osgeo import gdal

    workdir.mkdir(parents=True, exist_ok=True)
    tif = workdir / "a.tif"
    gdal.GetDriverByName("GTiff").Create(str(tif), 4, 4, 1, gdal.GDT_Byte).FlushCache()
    with zipfile.ZipFile(workdir / "inner.zip", "w") as archive:
        archive.write(tif, "a.tif")
    with zipfile.ZipFile(workdir / "outer.zip", "w") as archive:
        archive.write(workdir / "inner.zip", "inner.zip")
    vrt = (
        f"<OGRVRTDataSource><OGRVRTLayer name='t'><SrcDataSource>{secret_db}</SrcDataSource>"
        f"<SrcSQL>{TOKENS}</SrcSQL></OGRVRTLayer></OGRVRTDataSource>"
    )
    (workdir / "evil.shp").write_text(vrt)
    raster_vrt = (
        "<VRTDataset rasterXSize='4' rasterYSize='4'><VRTRasterBand dataType='Byte' band='1'>"
        f"<SimpleSource><SourceFilename>{tif}</SourceFilename></SimpleSource>"
        "</VRTRasterBand></VRTDataset>"
    )
    (workdir / "evil.tif").write_text(raster_vrt)


def test_gdal_in_a_rule_opens_only_its_drivers_and_no_virtual_file_system(
    procs, tmp_path, service_data, web_server
):
    url = f"http://127.0.0.1:{web_server.server_address[1]}/x.tif"
    files = ["a.tif", "inner.zip", "outer.zip", "evil.shp", "evil.tif"]

    def probe(workdir, **options):
        _gdal_inputs(workdir, service_data / "lmweb.sqlite3")
        write_script(workdir, "gdal", GDAL_PROBE.replace("URL", url))
        rules = run_dag(
            procs, workdir, [python_rule("gdal", "", ["report.json"], files)], **options
        )
        assert rules["gdal"].state == "complete", stderr_of(workdir, rules["gdal"])
        return json.loads((workdir / "report.json").read_text())

    # Twin without the guard: GDAL picks the VRT driver by content and fetches the URL.
    bare = probe(tmp_path / "bare", guard=False)
    assert bare["vrt as shp"] == "opened" and bare["vrt as tif"] == "opened"
    assert bare["nested vsizip"] == "opened"
    assert _Counting.hits > 0
    _Counting.hits = 0

    # The fence alone (sandbox off, so the network is there): still nothing of it opens.
    category = Category(cores=1, memory=512, disk=512, gdal=("GTiff", "ESRI Shapefile"),
                        vsi=("/vsizip/",))  # fmt: skip
    fenced = probe(tmp_path / "fenced", category=category, env={"LMWEB_RULE_SANDBOX": "off"})
    assert fenced["plain tif"] == "opened" and fenced["zipped tif"] == "opened"
    for name in ("vrt as shp", "vrt as tif", "vsicurl", "nested vsizip"):
        assert fenced[name].startswith("refused"), (name, fenced)
    assert _Counting.hits == 0


def test_the_sandbox_probe_tries_the_sandbox_the_rules_get(tmp_path):
    """In a container whose engine masks /proc, bubblewrap can unshare the network but cannot
    mount the rules' /proc: the probe must try the whole sandbox, or `auto` fails every rule."""
    from jobs.sandbox import guard

    bwrap = shutil.which("bwrap")
    assert bwrap, "scripts/setup.sh installs bubblewrap"
    folder = str(tmp_path.resolve())
    sandbox = guard.sandbox_argv(bwrap, folder, [])
    assert guard.bwrap_works(sandbox, None) is True
    # A sandbox this bubblewrap cannot make (here: an option it refuses) is not taken for one
    # it can: the light probe that passed before would.
    assert guard.bwrap_works([bwrap, "--proc", "/proc", "--no-such-option", "--"], None) is False
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    assert guard.bwrap_works(sandbox, str(workspace)) is True
    assert (workspace / ".lmweb-bwrap").read_text() == "yes"


class _LogReceiver(http.server.BaseHTTPRequestHandler):
    """The service's live-log endpoint, as far as a guard sees it: records each POST."""

    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((time.monotonic(), self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_running_rule_sends_its_output_as_it_grows_and_never_sees_the_token(procs, tmp_path):
    _LogReceiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LogReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/api/v1/live-logs/j/main/"
    write_script(
        tmp_path,
        "talk",
        """
        import os, sys, time
        for n in range(9):
            print(f"line {n}", file=sys.stderr, flush=True)
            time.sleep(0.5)
        print("token seen:", "LMWEB_LOG_TOKEN" in os.environ, "LMWEB_LOG_URL" in os.environ)
        open("done.txt", "w").write("ok")
        """,
    )
    try:
        rules = run_dag(
            procs, tmp_path, [python_rule("talk", "", ["done.txt"])],
            rule_env={"LMWEB_LOG_URL": url, "LMWEB_LOG_TOKEN": "job-token"},
        )  # fmt: skip
        ended = time.monotonic()
    finally:
        server.shutdown()
        server.server_close()
    assert rules["talk"].state == "complete"
    received = [r for r in _LogReceiver.received if "stream=stderr" in r[1]]
    assert received, "nothing was sent while the rule ran"
    # Sent while it ran (the rule lasts 4.5 s; the first after SHIP_AFTER), in order, whole.
    assert received[0][0] < ended - 1.0
    assert all(r[1].startswith("/api/v1/live-logs/j/main/talk?") for r in received)
    assert all(r[2]["Authorization"] == "LiveLog job-token" for r in received)
    offsets = [int(r[1].rsplit("offset=", 1)[1]) for r in received]
    sent = b"".join(r[3] for r in received)
    assert offsets[0] == 0 and offsets == sorted(offsets)
    final = (tmp_path / "logs" / "talk.stderr").read_bytes()
    assert final.startswith(sent) and b"line 0" in sent
    stdout = (tmp_path / "logs" / "talk.stdout").read_text()
    assert "token seen: False False" in stdout
