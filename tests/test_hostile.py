"""Hostile input: every malicious or malformed request is a 4xx that says why and writes nothing."""

import csv
import hashlib
import io
import json
import os
import re
import uuid
import zipfile
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

import translators
from jobs import services
from jobs.models import Dataset, Job, JobInput, Output, State
from tests.support.factories import upload
from tests.support.payloads import lmm_bytes

from . import synthetic

JOBS = "/api/v1/jobs/"
DATASETS = "/api/v1/datasets/"
SELFTEST = {"workflow": "selftest", "name": "smoke", "params": {"tasks": 2, "seconds": 0}}
TREE = b"((sp_a:1,sp_b:1):1);\n"

# What a shell would act on. Job requests become argument lists (never a shell line), so in free
# text these are just characters; in a name the service looks up they must not match anything.
METACHARACTERS = [
    pytest.param("; rm -rf /", id="a-semicolon-command"),
    pytest.param("$(id)", id="a-command-substitution"),
    pytest.param("`id`", id="backticks"),
    pytest.param("| cat /etc/passwd", id="a-pipe"),
    pytest.param("&& reboot", id="an-and-list"),
    pytest.param("\nid", id="a-newline"),
    pytest.param("\rid", id="a-carriage-return"),
    pytest.param("'", id="a-single-quote"),
    pytest.param('"', id="a-double-quote"),
]

# Placeholders in case bodies, filled at run time with the id of a dataset uploaded then:
# "<content:n>" is the n-th sample of that InputSpec.content (see SAMPLES), "<theirs>" a PAM
# of another user.
PAM, OTHER_TREE, THEIRS = "<pam:0>", "<tree:0>", "<theirs>"
PLACEHOLDER = re.compile(r"<([a-z-]+):(\d+)>")
LMM = lmm_bytes()
OCCURRENCES = b"species_name,x,y\nHeuchera alba,-100.5,40.25\nHeuchera alba,-101.5,41.25\n"


def _shapefiles_zip() -> bytes:
    parts = (".shp", ".shx", ".dbf", ".prj")
    made = synthetic.bg_hypothesis_bytes()
    return zip_bytes({f"bg_hyp_1{ext}": made[ext[1:]] for ext in parts})


# A small file that passes the inspection of each kind of input (InputSpec.content).
SAMPLES = {
    "pam": ("pam.lmm", lambda: LMM),
    "tree": ("tree.tre", lambda: TREE),
    "occurrences": ("occurrences.csv", lambda: OCCURRENCES),
    "name-map": ("names.csv", lambda: b"Heuchera alba,Heuchera americana\n"),
    "raster": ("layer.tif", synthetic.environment_bytes),
    "shapefiles": ("hypotheses.zip", _shapefiles_zip),
}


# ---------------------------------------------------------------------------------------------
# Harness


@pytest.fixture
def api(api):
    api.raise_request_exception = False  # a 500 is an answer to check, not an exception
    return api


@pytest.fixture
def other_api(other_api):
    other_api.raise_request_exception = False
    return other_api


@pytest.fixture
def anon_api(anon_api):
    anon_api.raise_request_exception = False
    return anon_api


@pytest.fixture(autouse=True)
def _fresh_throttles_and_no_static_scan(settings):
    cache.clear()  # throttle counters live in the local-memory cache, across tests
    # Each test client builds its middleware, and WhiteNoise would index every static file
    # (~60 ms a client); the API never serves one, so let it look them up on demand instead.
    settings.WHITENOISE_AUTOREFRESH = True


WRITABLE = (Job, JobInput, Dataset, Output)


def _rows() -> tuple:
    """Every row of every table a request could write."""
    if connection.vendor != "postgresql":
        return tuple(list(model.objects.order_by("pk").values()) for model in WRITABLE)
    # One round trip instead of four: this runs twice in each of some 300 tests.
    tables = [connection.ops.quote_name(model._meta.db_table) for model in WRITABLE]
    select = "(SELECT json_agg(t ORDER BY t::text)::text FROM {} t)"
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(select.format(table) for table in tables))
        return cursor.fetchone()


def _state(data_dir: Path) -> tuple:
    """Every row that a request could write, and every file and folder under the data dir."""
    rows = _rows()
    tree = {}
    for root, folders, files in os.walk(data_dir):
        for name in folders:
            tree[os.path.relpath(os.path.join(root, name), data_dir)] = "folder"
        for name in files:
            path = Path(root, name)
            if path.is_symlink():
                tree[str(path.relative_to(data_dir))] = "link -> " + os.readlink(path)
            else:
                tree[str(path.relative_to(data_dir))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
    return rows, tree


def _makeflows(data_dir: Path) -> list[str]:
    """Command lines of running makeflows that work under `data_dir`."""
    found, needle = [], str(data_dir).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:  # the process has ended meanwhile
            continue
        if b"makeflow" in cmdline and needle in cmdline:
            found.append(cmdline.replace(b"\x00", b" ").decode(errors="replace"))
    return found


class Guard:
    """Snapshot after setup (`arm`), then check a refusal left everything as it was."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.before = None

    def arm(self) -> None:
        self.before = _state(self.data_dir)

    def refused(self, response, status: int, field: str | None = None) -> dict:
        assert 400 <= status < 500
        assert response.status_code == status, (response.status_code, response.content[:600])
        assert response["Content-Type"].startswith("application/json"), response.content[:300]
        body = response.json()
        assert isinstance(body.get("detail"), str) and body["detail"], body
        if field is not None:
            assert field in body.get("errors", {}), body
            assert all(isinstance(m, str) and m for m in body["errors"][field]), body
            assert field in body["detail"], body
        self.unchanged()
        return body

    def unchanged(self) -> None:
        assert self.before is not None, "arm() after the setup"
        assert _state(self.data_dir) == self.before, "the refused request wrote something"
        assert not _makeflows(self.data_dir)


@pytest.fixture
def guard(data_dir):
    return Guard(data_dir)


@pytest.mark.django_db
def test_the_guard_sees_a_new_row_a_changed_row_and_a_new_folder(api, guard, data_dir):
    # Every refusal below leans on the guard: it must fail when something was written.
    guard.arm()
    guard.unchanged()
    assert post_json(api, SELFTEST).status_code == 201
    with pytest.raises(AssertionError, match="wrote something"):
        guard.unchanged()
    guard.arm()
    Job.objects.update(name="changed")
    with pytest.raises(AssertionError, match="wrote something"):
        guard.unchanged()
    guard.arm()
    (data_dir / "jobs" / "x").mkdir(parents=True)
    with pytest.raises(AssertionError, match="wrote something"):
        guard.unchanged()


class Datasets:
    """Datasets for case bodies, uploaded only when a case names them."""

    def __init__(self, api, request, samples=None):
        self.api, self.request, self.ids = api, request, {}
        self.samples = {**SAMPLES, **(samples or {})}

    def _upload(self, key, owner, filename, content):
        # Through the service rather than HTTP: setup, not the subject, and a third faster.
        if key not in self.ids:
            upload = SimpleUploadedFile(filename, content)
            self.ids[key] = str(services.dataset_create(owner=owner, upload=upload).id)
        return self.ids[key]

    def _sample(self, match: re.Match) -> str:
        filename, content = self.samples[match[1]]
        return self._upload(match[0], self.api.user, filename, content())

    def fill(self, value):
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, str):
            value = PLACEHOLDER.sub(self._sample, value)
            if THEIRS in value:
                bob = self.request.getfixturevalue("other_api").user
                theirs = self._upload(THEIRS, bob, "pam.lmm", LMM)
                value = value.replace(THEIRS, theirs)
        return value


@pytest.fixture
def datasets(api, request):
    return Datasets(api, request)


def post_json(client, body, **extra):
    return client.generic("POST", JOBS, json.dumps(body), content_type="application/json", **extra)


def post_raw(client, content: bytes | str, content_type: str = "application/json", **extra):
    return client.generic("POST", JOBS, content, content_type=content_type, **extra)


def pam_request(pam=PAM, **params):
    return {
        "workflow": "pam-stats",
        "name": "Heuchera",
        "inputs": {"pam": pam},
        "params": {"randomizations": 5, "p_value_method": "fdr", "alpha": 0.05, **params},
    }


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Every workflow in the catalog: its enum/identifier string params, and a request that passes.


COLUMNS = ("species_column", "x_column", "y_column")
TRAILING_NEWLINE = pytest.param("\n", id="a-trailing-newline")


def _valid_request(name: str) -> dict | None:
    """The workflow's own example with sample datasets as its inputs (None: no samples)."""
    workflow = translators.get(name)
    request = json.loads(json.dumps(workflow.example))
    used: dict[str, int] = {}

    def sample(content: str) -> str:
        used[content] = used.get(content, -1) + 1
        return f"<{content}:{used[content]}>"

    for key, value in request.get("inputs", {}).items():
        content = workflow.dataset_inputs[key].content
        if content not in SAMPLES:
            return None
        request["inputs"][key] = (
            [sample(content) for _ in value] if isinstance(value, list) else sample(content)
        )
    return request


def _valid_or_skip(name: str) -> dict:
    request = _valid_request(name)
    if request is None:
        pytest.skip(f"no sample dataset for an input of {name}")
    return request


def _rejects(pattern: str, value: str) -> bool:
    # JSON Schema patterns are ECMA-262: "$" is the end of the text, not "before a final newline".
    return re.search(pattern.replace("$", r"\Z"), value) is None


def _identifier_cases():
    """Each string param of each workflow that names one of a closed set (an enum, a pattern),
    with each metacharacter appended to a valid value. Column names are tested further down."""
    for name in translators.names():
        properties = translators.get(name).params_schema.get("properties", {})
        for key, prop in properties.items():
            if key in COLUMNS or prop.get("type") != "string":
                continue
            if "enum" not in prop and "pattern" not in prop:
                continue
            valid = prop.get("default", (prop.get("enum") or [None])[0])
            for mark in [*METACHARACTERS, TRAILING_NEWLINE]:
                value = valid + mark.values[0]
                if "enum" not in prop and not _rejects(prop["pattern"], value):
                    continue  # the pattern allows it: free text after all
                yield pytest.param(name, key, value, id=f"{name}-{key}-{mark.id}")


def _column_cases():
    """Column names of workflows that read CSV occurrences: each must name a column of the CSV."""
    for name in translators.names():
        properties = translators.get(name).params_schema.get("properties", {})
        for key in COLUMNS:
            if key not in properties:
                continue
            # A command and a trailing newline on each column, more marks on the species one.
            marks = [METACHARACTERS[0], TRAILING_NEWLINE]
            if key == "species_column":
                marks += [METACHARACTERS[i] for i in (1, 2, 5, 8)]
            for mark in marks:
                yield pytest.param(name, key, mark.values[0], id=f"{name}-{key}-{mark.id}")


# ---------------------------------------------------------------------------------------------
# Shell metacharacters and newlines


@pytest.mark.django_db
@pytest.mark.parametrize("text", METACHARACTERS)
def test_free_text_with_shell_metacharacters_is_stored_verbatim(api, text):
    # The twin of every refusal below: the same characters in free text are legitimate.
    body = {**SELFTEST, "name": f"run {text} now", "tags": {text: text, "plain": f"x{text}y"}}
    response = post_json(api, body)
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.name == body["name"] and job.request["name"] == body["name"]
    assert job.tags == body["tags"] and job.request["tags"] == body["tags"]
    assert response.json()["tags"] == body["tags"]


@pytest.mark.django_db
@pytest.mark.parametrize("workflow", translators.names())
def test_every_workflow_accepts_its_example_with_free_text_full_of_metacharacters(
    api, datasets, workflow
):
    texts = [mark.values[0] for mark in METACHARACTERS]
    body = datasets.fill(_valid_or_skip(workflow))
    body["name"] = "".join(texts)
    body["tags"] = {text: text for text in texts}
    response = post_json(api, body)
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.name, job.tags) == (body["name"], body["tags"])


@pytest.mark.django_db
@pytest.mark.parametrize("text", METACHARACTERS)
def test_a_workflow_name_with_shell_metacharacters_is_refused(api, guard, text):
    guard.arm()
    body = guard.refused(
        post_json(api, {**SELFTEST, "workflow": "selftest" + text}), 400, "workflow"
    )
    assert list(body["errors"]) == ["workflow"]


@pytest.mark.django_db
@pytest.mark.parametrize(("workflow", "param", "value"), list(_identifier_cases()))
def test_an_enum_param_with_shell_metacharacters_is_refused(
    api, guard, datasets, workflow, param, value
):
    body = datasets.fill(_valid_or_skip(workflow))
    body.setdefault("params", {})[param] = value
    guard.arm()
    guard.refused(post_json(api, body), 400, f"params.{param}")


@pytest.mark.django_db
@pytest.mark.parametrize(("workflow", "param", "text"), list(_column_cases()))
def test_a_column_name_with_shell_metacharacters_must_name_a_column_of_the_csv(
    api, guard, datasets, workflow, param, text
):
    body = datasets.fill(_valid_or_skip(workflow))
    prop = translators.get(workflow).params_schema["properties"][param]
    value = prop["default"] + text
    body["params"][param] = value
    # Refused by its pattern if it has one that says so, else because no CSV has that column.
    pattern = prop.get("pattern")
    field = f"params.{param}" if pattern and _rejects(pattern, value) else "inputs.occurrences[0]"
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


ODD_COLUMN = "sp; rm -rf / $(id) `id` | x && y 'q\""


@pytest.mark.django_db
@pytest.mark.parametrize(
    "workflow",
    [
        w
        for w in translators.names()
        if "species_column" in translators.get(w).params_schema.get("properties", {})
    ],
)
def test_a_column_name_with_shell_metacharacters_that_the_csv_has_is_accepted(api, workflow):
    # The twin of the test above: a column name is free text that must match the CSV header.
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([ODD_COLUMN, "x", "y"])
    content = header.getvalue().encode() + OCCURRENCES.split(b"\n", 1)[1]
    datasets = Datasets(api, None, {"occurrences": ("odd.csv", lambda: content)})
    body = datasets.fill(_valid_or_skip(workflow))
    body["params"]["species_column"] = ODD_COLUMN
    response = post_json(api, body)
    assert response.status_code == 201, response.content
    assert Job.objects.get(pk=response.json()["id"]).request["params"]["species_column"] == (
        ODD_COLUMN
    )


CLEANING = "occurrence-cleaning"
needs_cleaning = pytest.mark.skipif(
    CLEANING not in translators.names(), reason=f"{CLEANING} is not in the catalog"
)


def _wrangler_cases():
    """(a step to append, or a value for the example's accepted_names `unmapped`; the field)."""
    dash = pytest.param("-", id="an-option-dash")
    for mark in [*METACHARACTERS[:3], METACHARACTERS[5], TRAILING_NEWLINE, dash]:
        text = mark.values[0]
        kind = "-unique_localities" if text == "-" else "unique_localities" + text
        yield pytest.param({"type": kind}, "params.wranglers[{new}].type", id=f"type-{mark.id}")
    for mark in (METACHARACTERS[0], TRAILING_NEWLINE):
        field = "params.wranglers[0].unmapped"
        yield pytest.param("keep" + mark.values[0], field, id=f"unmapped-{mark.id}")
    for mark in (TRAILING_NEWLINE, METACHARACTERS[6]):
        step = {"type": "attribute_filter", "attribute": "issue" + mark.values[0], "exclude": ["x"]}
        yield pytest.param(step, "params.wranglers[{new}].attribute", id=f"attribute-{mark.id}")
    # One name map serves one accepted_names step.
    step = {"type": "accepted_names", "unmapped": "keep"}
    yield pytest.param(step, "params.wranglers", id="a-second-accepted-names-step")


@needs_cleaning
@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field"), list(_wrangler_cases()))
def test_a_wrangler_string_with_shell_metacharacters_is_refused(
    api, guard, datasets, change, field
):
    body = datasets.fill(_valid_or_skip(CLEANING))
    wranglers = body["params"]["wranglers"]
    assert wranglers[0]["type"] == "accepted_names"  # the example's first step
    if isinstance(change, dict):
        wranglers.append(change)
    else:
        wranglers[0]["unmapped"] = change
    guard.arm()
    guard.refused(post_json(api, body), 400, field.format(new=len(wranglers) - 1))


@needs_cleaning
@pytest.mark.django_db
def test_wrangler_free_text_with_shell_metacharacters_is_stored_verbatim(api):
    # The twin: an attribute name and the values to exclude are the user's text. The attribute
    # must be a column of the CSV (checked at submission).
    texts = [mark.values[0] for mark in METACHARACTERS]
    wrangler = {"type": "attribute_filter", "attribute": ODD_COLUMN, "exclude": texts}
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(["species_name", "x", "y", ODD_COLUMN])
    rows = b"".join(line + b",1\n" for line in OCCURRENCES.split(b"\n")[1:] if line)
    content = header.getvalue().encode() + rows
    datasets = Datasets(api, None, {"occurrences": ("odd.csv", lambda: content)})
    body = datasets.fill(_valid_or_skip(CLEANING))
    body["params"]["wranglers"].append(wrangler)
    response = post_json(api, body)
    assert response.status_code == 201, response.content
    stored = Job.objects.get(pk=response.json()["id"]).request["params"]["wranglers"]
    assert stored[-1] == wrangler


@pytest.mark.django_db
@pytest.mark.parametrize("text", METACHARACTERS)
def test_a_dataset_id_with_shell_metacharacters_is_refused(api, guard, datasets, text):
    body = datasets.fill(pam_request(PAM + text))
    guard.arm()
    guard.refused(post_json(api, body), 400, "inputs.pam")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(
            {"workflow": "pam-stats", "inputs": {"pam; rm -rf /": PAM}},
            "inputs.pam; rm -rf /",
            id="an-input-name-with-a-command",
        ),
        pytest.param(
            {"workflow": "pam-stats", "inputs": {"pam\n": PAM}},
            "inputs.pam\n",
            id="an-input-name-with-a-newline",
        ),
        pytest.param(
            {"workflow": "selftest", "params": {"tasks $(id)": 1}},
            "params.tasks $(id)",
            id="a-param-name-with-a-command-substitution",
        ),
    ],
)
def test_a_field_name_with_shell_metacharacters_is_refused(api, guard, datasets, body, field):
    body = datasets.fill(body)
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


# ---------------------------------------------------------------------------------------------
# Option injection, paths


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"workflow": "-selftest"}, "workflow", id="a-workflow-like-an-option"),
        pytest.param({"workflow": "--help"}, "workflow", id="a-workflow-of-help"),
        pytest.param({"workflow": "--workflow=selftest"}, "workflow", id="a-long-option"),
        pytest.param(pam_request(p_value_method="--fdr"), "params.p_value_method", id="--fdr"),
        pytest.param(pam_request(p_value_method="-rf"), "params.p_value_method", id="-rf"),
        pytest.param(pam_request("-" + PAM), "inputs.pam", id="a-dataset-id-after-a-dash"),
        pytest.param(pam_request("--version"), "inputs.pam", id="a-dataset-id-of-version"),
        pytest.param(
            {"workflow": "selftest", "params": {"--tasks": 1}}, "params.--tasks", id="--tasks"
        ),
        pytest.param({"workflow": "../selftest"}, "workflow", id="a-workflow-up-a-folder"),
        pytest.param({"workflow": "/usr/bin/makeflow"}, "workflow", id="a-workflow-as-a-path"),
        pytest.param(pam_request("../../etc/passwd"), "inputs.pam", id="a-dataset-id-climbing"),
        pytest.param(pam_request("/etc/passwd"), "inputs.pam", id="an-absolute-dataset-path"),
        pytest.param(pam_request("../" + PAM), "inputs.pam", id="a-real-id-behind-dot-dot"),
        pytest.param(
            pam_request(f"datasets/{PAM}/data.lmm"), "inputs.pam", id="the-stored-relative-path"
        ),
        pytest.param(pam_request("file:///etc/passwd"), "inputs.pam", id="a-file-url"),
        pytest.param(pam_request("~/.ssh/id_rsa"), "inputs.pam", id="a-home-path"),
    ],
)
def test_an_option_or_a_path_in_an_identifier_field_is_refused(api, guard, datasets, body, field):
    body = datasets.fill(body)
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


@pytest.mark.django_db
def test_the_absolute_path_of_a_stored_dataset_is_not_a_dataset_id(api, guard, datasets):
    pam = datasets.fill(PAM)
    stored = str(Dataset.objects.get(pk=pam).absolute_path)
    guard.arm()
    guard.refused(post_json(api, pam_request(stored)), 400, "inputs.pam")


# ---------------------------------------------------------------------------------------------
# Strings PostgreSQL cannot store: NUL, unpaired surrogates


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**SELFTEST, "name": "a\x00b"}, "name", id="a-nul-in-the-name"),
        pytest.param({**SELFTEST, "tags": {"k\x00": "v"}}, "tags", id="a-nul-in-a-tag-key"),
        pytest.param({**SELFTEST, "tags": {"k": "\x00"}}, "tags.k", id="a-nul-in-a-tag-value"),
        pytest.param({**SELFTEST, "workflow": "selftest\x00"}, "workflow", id="a-nul-workflow"),
        pytest.param(pam_request(p_value_method="fdr\x00"), "params.p_value_method", id="nul-enum"),
        pytest.param(pam_request(PAM + "\x00"), "inputs.pam", id="a-nul-after-a-dataset-id"),
        pytest.param({**SELFTEST, "\x00": 1}, "request", id="a-nul-as-a-top-level-key"),
        pytest.param({**SELFTEST, "name": "\ud800"}, "name", id="an-unpaired-surrogate-name"),
        pytest.param({**SELFTEST, "tags": {"\udfff": "v"}}, "tags", id="a-surrogate-tag-key"),
    ],
)
def test_a_string_the_database_cannot_store_is_refused_naming_it(api, guard, datasets, body, field):
    body = datasets.fill(body)
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


@pytest.mark.django_db
def test_an_unpaired_surrogate_with_an_idempotency_key_is_refused(api, guard):
    guard.arm()
    response = post_json(api, {**SELFTEST, "name": "\ud800"}, HTTP_IDEMPOTENCY_KEY="k-1")
    guard.refused(response, 400, "name")


@pytest.mark.django_db
def test_a_nul_in_a_dataset_name_is_refused(api, guard):
    guard.arm()
    guard.refused(upload(api, "a.csv", b"a,b\n1,2\n", name="x\x00y"), 400, "name")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("a\x00b.csv", id="a-nul"),
        pytest.param("../../etc/passwd.csv", id="climbing"),
        pytest.param("/etc/cron.d/evil.csv", id="absolute"),
        pytest.param("..\\..\\evil.csv", id="windows-climbing"),
        pytest.param("; rm -rf $(id).csv", id="shell"),
    ],
)
def test_an_upload_file_name_is_only_a_hint_and_never_a_path(api, data_dir, filename):
    # Twin of the refusals: Django strips the path and unprintable characters from a file name,
    # and the stored file is named by us; so the upload is legitimate and lands in its folder.
    response = upload(api, filename, b"a,b\n1,2\n")
    assert response.status_code == 201, response.content
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert "\x00" not in dataset.original_name and "/" not in dataset.original_name
    assert dataset.absolute_path == data_dir / "datasets" / str(dataset.id) / "data.csv"
    written = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")}
    assert written == {"datasets", f"datasets/{dataset.id}", f"datasets/{dataset.id}/data.csv"}


# ---------------------------------------------------------------------------------------------
# Oversized bodies and fields, numbers out of range


def _padded_body(size: int) -> str:
    # A valid request, made large by whitespace alone: only the byte count is wrong.
    return '{"workflow": "selftest"' + " " * size + "}"


@pytest.mark.django_db
def test_a_body_over_the_request_limit_is_413(api, guard, settings):
    guard.arm()
    response = post_raw(api, _padded_body(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
    guard.refused(response, 413)


@pytest.mark.django_db
def test_a_body_at_the_request_limit_is_accepted(api, settings):
    body = _padded_body(0)
    body = _padded_body(settings.DATA_UPLOAD_MAX_MEMORY_SIZE - len(body))
    assert len(body) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert post_raw(api, body).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**SELFTEST, "name": "x" * 201}, "name", id="a-name-of-201"),
        pytest.param({**SELFTEST, "tags": {f"k{i}": "v" for i in range(51)}}, "tags", id="51-tags"),
        pytest.param({**SELFTEST, "tags": {"k": "v" * 257}}, "tags.k", id="a-tag-value-of-257"),
        pytest.param({**SELFTEST, "tags": {"k" * 65: "v"}}, "tags", id="a-tag-key-of-65"),
        pytest.param(
            {"workflow": "selftest", "params": {"tasks": 10**100}}, "params.tasks", id="a-googol"
        ),
        pytest.param(
            {"workflow": "selftest", "params": {"tasks": -(10**100)}},
            "params.tasks",
            id="minus-a-googol",
        ),
        pytest.param(
            pam_request(randomizations=10**100), "params.randomizations", id="googol-randomizations"
        ),
    ],
)
def test_an_oversized_field_is_refused_naming_it(api, guard, datasets, body, field):
    body = datasets.fill(body)
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


@pytest.mark.django_db
def test_fields_at_their_limits_are_accepted(staff_api):
    # A selftest this large is for staff only (LMWEB_SELFTEST_MAX_WORK; tests/test_fair_limits).
    body = {
        **SELFTEST,
        "name": "x" * 200,
        "tags": {f"{i:064d}": "v" * 256 for i in range(50)},
        "params": {"tasks": 10000, "seconds": 600, "fail": 10000},
    }
    assert post_json(staff_api, body).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "field"),
    [
        pytest.param(
            '{"workflow": "selftest", "params": {"tasks": ' + "9" * 5000 + "}}",
            None,
            id="an-integer-of-5000-digits",
        ),
        pytest.param('{"workflow": "selftest", "params": {"seconds": NaN}}', None, id="nan"),
        pytest.param(
            '{"workflow": "selftest", "params": {"seconds": Infinity}}', None, id="infinity"
        ),
        pytest.param(
            '{"workflow": "selftest", "params": {"seconds": -Infinity}}', None, id="-infinity"
        ),
        pytest.param('{"workflow": "selftest", "tags": {"k": NaN}}', None, id="nan-as-a-tag"),
        pytest.param(
            '{"workflow": "selftest", "params": {"seconds": 1e400}}',
            "params.seconds",
            id="1e400-that-overflows-to-infinity",
        ),
        pytest.param(
            '{"workflow": "selftest", "params": {"seconds": -1e400}}',
            "params.seconds",
            id="-1e400",
        ),
    ],
)
def test_numbers_beyond_what_json_or_a_float_holds_are_refused(api, guard, content, field):
    guard.arm()
    guard.refused(post_raw(api, content), 400, field)


@pytest.mark.django_db
@pytest.mark.parametrize("alpha", ["1e-400", "-0.0"])
def test_an_alpha_that_is_zero_in_disguise_is_refused(api, guard, datasets, alpha):
    content = json.dumps(datasets.fill(pam_request(alpha=0.5))).replace("0.5", alpha)
    guard.arm()
    guard.refused(post_raw(api, content), 400, "params.alpha")


@pytest.mark.django_db
def test_an_upload_over_the_limit_is_413(api, guard, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    guard.arm()
    guard.refused(upload(api, "big.csv", b"x," * 600), 413)


@pytest.mark.django_db
def test_an_upload_declaring_a_huge_length_is_413_before_it_is_read(api, guard):
    content = encode_multipart(BOUNDARY, {"file": io.BytesIO(b"a,b\n")})
    guard.arm()
    response = api.generic(
        "POST", DATASETS, content, content_type=MULTIPART_CONTENT, CONTENT_LENGTH=str(10**13)
    )
    guard.refused(response, 413)


@pytest.mark.django_db
def test_a_dataset_name_of_201_is_refused(api, guard):
    guard.arm()
    guard.refused(upload(api, "a.csv", b"a,b\n1,2\n", name="n" * 201), 400, "name")


@pytest.mark.django_db
def test_an_upload_of_101_files_is_refused(api, guard):
    files = []
    for number in range(101):
        handle = io.BytesIO(b"a,b\n")
        handle.name = f"f{number}.csv"
        files.append(handle)
    guard.arm()
    response = api.post(DATASETS, {"file": files}, format="multipart")
    guard.refused(response, 400)


@pytest.mark.django_db
def test_an_upload_with_1001_fields_is_refused(api, guard):
    handle = io.BytesIO(b"a,b\n")
    handle.name = "a.csv"
    fields = {f"f{number}": "x" for number in range(1001)}
    guard.arm()
    response = api.post(DATASETS, {"file": handle, **fields}, format="multipart")
    guard.refused(response, 400)


# ---------------------------------------------------------------------------------------------
# Wrong JSON types


WRONG_TYPES = [
    *[
        pytest.param({"workflow": value}, "workflow", id=f"workflow-as-{label}")
        for label, value in [("list", ["selftest"]), ("null", None), ("true", True)]
    ],
    *[
        pytest.param({**SELFTEST, "name": value}, "name", id=f"name-as-{label}")
        for label, value in [("list", ["x"]), ("object", {}), ("number", 5)]
    ],
    *[
        pytest.param({**SELFTEST, "tags": value}, "tags", id=f"tags-as-{label}")
        for label, value in [("list", ["x"]), ("string", "x"), ("null", None)]
    ],
    *[
        pytest.param({**SELFTEST, "tags": {"k": value}}, "tags.k", id=f"a-tag-value-as-{label}")
        for label, value in [("null", None), ("number", 1), ("true", True)]
    ],
    *[
        pytest.param({"workflow": "selftest", "params": value}, "params", id=f"params-as-{label}")
        for label, value in [("list", []), ("string", "x"), ("null", None)]
    ],
    *[
        pytest.param(
            {"workflow": "selftest", "params": {"tasks": value}},
            "params.tasks",
            id=f"an-integer-as-{label}",
        )
        for label, value in [
            ("true", True),
            ("false", False),
            ("null", None),
            ("string", "3"),
            ("fraction", 3.5),
            ("float", 3.0),
            ("list", [3]),
        ]
    ],
    *[
        pytest.param(
            {"workflow": "selftest", "params": {"seconds": value}},
            "params.seconds",
            id=f"a-number-as-{label}",
        )
        for label, value in [("true", True), ("string", "1")]
    ],
    pytest.param({"workflow": "selftest", "inputs": []}, "inputs", id="inputs-as-a-list"),
    *[
        pytest.param(pam_request(value), "inputs.pam", id=f"a-dataset-id-as-{label}")
        for label, value in [
            ("number", 1),
            ("null", None),
            ("list", [PAM]),
            ("object", {"id": PAM}),
        ]
    ],
    *[
        pytest.param(pam_request(alpha=value), "params.alpha", id=f"alpha-as-{label}")
        for label, value in [("true", True), ("string", "0.05")]
    ],
    pytest.param(
        pam_request(randomizations=True), "params.randomizations", id="randomizations-as-true"
    ),
    *[
        pytest.param(
            pam_request(p_value_method=value), "params.p_value_method", id=f"an-enum-as-{label}"
        )
        for label, value in [("true", True), ("null", None), ("list", ["fdr"])]
    ],
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), WRONG_TYPES)
def test_a_field_of_the_wrong_json_type_is_refused_naming_it(api, guard, datasets, body, field):
    body = datasets.fill(body)
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


# What a field of each JSON type must not be given; True stands in for a number on purpose.
WRONG_FOR = {"integer": True, "number": True, "string": 1, "array": {}, "object": []}


def _wrong_value(prop: dict):
    """A value of the wrong type for `prop`, or None: a nullable type (["integer", "null"])
    is the type beside null."""
    kinds = prop.get("type")
    kinds = [kind for kind in (kinds if isinstance(kinds, list) else [kinds]) if kind != "null"]
    return WRONG_FOR[kinds[0]] if len(kinds) == 1 and kinds[0] in WRONG_FOR else None


def _catalog_wrong_type_cases():
    """Every param of every workflow, and every member of an object param, given a value of
    the wrong type (a boolean where a number goes)."""
    for name in translators.names():
        for key, prop in translators.get(name).params_schema.get("properties", {}).items():
            if (wrong := _wrong_value(prop)) is not None:
                yield pytest.param(name, [key], wrong, id=f"{name}-{key}")
            for member, inner in prop.get("properties", {}).items():
                if (wrong := _wrong_value(inner)) is not None:
                    yield pytest.param(name, [key, member], wrong, id=f"{name}-{key}.{member}")


@pytest.mark.django_db
@pytest.mark.parametrize(("workflow", "path", "wrong"), list(_catalog_wrong_type_cases()))
def test_every_param_of_every_workflow_refuses_the_wrong_json_type(
    api, guard, datasets, workflow, path, wrong
):
    body = datasets.fill(_valid_or_skip(workflow))
    target = body.setdefault("params", {})
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = wrong
    guard.arm()
    guard.refused(post_json(api, body), 400, "params." + ".".join(path))


# ---------------------------------------------------------------------------------------------
# Deep nesting, unknown fields


def _nested(levels: int, leaf=1):
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"workflow": "selftest", "params": _nested(300)}, "params", id="params"),
        pytest.param({**SELFTEST, "tags": _nested(300)}, "tags", id="tags"),
        pytest.param({**SELFTEST, "name": json.loads("[" * 300 + "]" * 300)}, "name", id="name"),
        pytest.param({"workflow": "pam-stats", "inputs": _nested(300)}, "inputs", id="inputs"),
        pytest.param({**SELFTEST, "extra": _nested(500)}, "extra", id="an-unknown-member"),
    ],
)
def test_nesting_hundreds_of_levels_deep_is_refused_naming_the_member(api, guard, body, field):
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content",
    [
        pytest.param("[" * 100_000 + "]" * 100_000, id="a-list-100k-deep"),
        pytest.param(
            '{"workflow": "selftest", "params": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001,
            id="params-100k-deep",
        ),
    ],
)
def test_nesting_deeper_than_the_parser_recurses_is_a_parse_error(api, guard, content):
    guard.arm()
    body = guard.refused(post_raw(api, content), 400)
    assert "nested too deeply" in body["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**SELFTEST, "colour": "red"}, "colour", id="at-the-top"),
        pytest.param({**SELFTEST, "state": "COMPLETE"}, "state", id="a-state-to-skip-the-run"),
        pytest.param({**SELFTEST, "owner": "bob"}, "owner", id="an-owner-to-impersonate"),
        pytest.param({**SELFTEST, "id": str(uuid.uuid4())}, "id", id="an-id-to-choose"),
        pytest.param(
            {"workflow": "selftest", "params": {"tasks": 1, "shell": "sh"}},
            "params.shell",
            id="in-params",
        ),
        pytest.param(
            {"workflow": "pam-stats", "inputs": {"pam": PAM, "script": PAM}},
            "inputs.script",
            id="in-inputs",
        ),
        pytest.param(
            {"workflow": "selftest", "inputs": {"pam": PAM}},
            "inputs.pam",
            id="an-input-the-workflow-has-not",
        ),
    ],
)
def test_an_unknown_field_at_any_level_is_refused_naming_it(api, guard, datasets, body, field):
    body = datasets.fill(body)
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


# ---------------------------------------------------------------------------------------------
# Dataset ids: foreign, missing, malformed, of the wrong kind


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(pam_request(THEIRS), "inputs.pam", id="another-users"),
        pytest.param(pam_request(str(uuid.uuid4())), "inputs.pam", id="missing"),
        pytest.param(pam_request(str(uuid.UUID(int=0))), "inputs.pam", id="the-nil-uuid"),
        pytest.param(
            pam_request("00000000-0000-0000-0000-000000000001"), "inputs.pam", id="the-examples"
        ),
        pytest.param(pam_request("{" + PAM + "}"), "inputs.pam", id="in-braces"),
        pytest.param(pam_request("urn:uuid:" + PAM), "inputs.pam", id="as-a-urn"),
        pytest.param(pam_request(PAM + " "), "inputs.pam", id="with-a-trailing-space"),
        pytest.param(pam_request("x" * 10_000), "inputs.pam", id="ten-thousand-characters"),
        pytest.param(pam_request(OTHER_TREE), "inputs.pam", id="a-tree-given-as-the-pam"),
        pytest.param(
            {**pam_request(), "inputs": {"pam": PAM, "tree": THEIRS}},
            "inputs.tree",
            id="another-users-tree-beside-my-pam",
        ),
    ],
)
def test_a_dataset_that_is_not_the_callers_or_not_one_is_refused(api, guard, datasets, body, field):
    body = datasets.fill(body)
    guard.arm()
    guard.refused(post_json(api, body), 400, field)


@pytest.mark.django_db
def test_the_id_of_one_of_my_jobs_is_not_a_dataset_id(api, guard, datasets):
    body = datasets.fill(pam_request())
    job = Job.objects.create(owner=api.user, workflow="selftest", request=SELFTEST)
    body["inputs"]["pam"] = str(job.id)
    guard.arm()
    guard.refused(post_json(api, body), 400, "inputs.pam")


@pytest.mark.django_db
def test_my_own_dataset_is_accepted_even_in_upper_case(api, datasets):
    body = datasets.fill(pam_request())
    body["inputs"]["pam"] = body["inputs"]["pam"].upper()
    assert post_json(api, body).status_code == 201


# ---------------------------------------------------------------------------------------------
# Archives that would write outside their folder


def _symlink_zip(extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _bomb_zip() -> bytes:
    """Three tiny members whose central directory claims 4 GiB each (12 GiB in all)."""
    data = bytearray(zip_bytes({f"part{i}.bin": b"x" for i in range(3)}))
    position = data.find(b"PK\x01\x02")
    while position != -1:
        data[position + 24 : position + 28] = (0xFFFFFFFE).to_bytes(4, "little")
        position = data.find(b"PK\x01\x02", position + 4)
    return bytes(data)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        pytest.param("a.zip", zip_bytes({"ok": b"x", "../x": b"!"}), "'..'", id="dot-dot"),
        pytest.param("a.zip", zip_bytes({"a/../../x": b"!"}), "'..'", id="dot-dot-inside"),
        pytest.param("a.zip", zip_bytes({"..\\x": b"!"}), "'..'", id="windows-dot-dot"),
        pytest.param("a.zip", zip_bytes({"/etc/cron.d/x": b"!"}), "absolute", id="absolute"),
        pytest.param("a.zip", zip_bytes({"C:\\x.bat": b"!"}), "absolute", id="a-drive"),
        pytest.param("a.zip", _symlink_zip(), "symbolic link", id="a-symlink"),
        pytest.param(
            "dwca.zip",
            _symlink_zip({"meta.xml": b"<archive/>"}),
            "symbolic link",
            id="a-symlink-in-a-dwca",
        ),
        pytest.param(
            "shapes.zip",
            zip_bytes({"a.shp": b"x", "a.shx": b"x", "../a.dbf": b"x"}),
            "'..'",
            id="dot-dot-in-a-shapefile-zip",
        ),
        pytest.param("a.zip", _bomb_zip(), "unpack to more than", id="a-zip-bomb"),
    ],
)
def test_an_archive_that_climbs_out_links_or_explodes_is_refused_at_upload(
    api, guard, filename, content, reason
):
    # Its twin first: a clean archive is stored (and the store's folder exists, as it does
    # after any first upload; see the test below for a refusal that comes first).
    assert upload(api, "fine.zip", zip_bytes({"a/b.txt": b"x"})).status_code == 201
    guard.arm()
    body = guard.refused(upload(api, filename, content), 400, "file")
    assert reason in body["errors"]["file"][0]


@pytest.mark.django_db
def test_a_refused_archive_leaves_an_empty_data_directory_empty(api, guard):
    guard.arm()
    guard.refused(upload(api, "a.zip", zip_bytes({"../x": b"!"})), 400, "file")


def _slip_lmm() -> bytes:
    data = zipfile.ZipFile(io.BytesIO(LMM))
    members = {info.filename: data.read(info) for info in data.infolist()}
    return zip_bytes({**members, "../../evil.sh": b"rm -rf /"})


@pytest.mark.django_db
def test_a_matrix_archive_with_a_climbing_member_is_refused_at_upload(api, guard):
    assert upload(api, "pam.lmm", LMM).status_code == 201  # the twin, and the store's folder
    guard.arm()
    guard.refused(upload(api, "pam.lmm", _slip_lmm()), 400, "file")


# ---------------------------------------------------------------------------------------------
# CSV inputs that are not clean UTF-8 text


def _csv_pam(tail: bytes = b"") -> bytes:
    """A CSV PAM longer than the 64 KiB format sniffing reads, so that `tail` is past it."""
    rows = [b"site,x,y,sp_a,sp_b"]
    rows += [b"%d,%d,%d,1,0" % (n, n % 180, n % 90) for n in range(7_000)]  # ~90 KB
    return b"\n".join(rows) + b"\n" + tail


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(_csv_pam(b"s\xe9,1,2,1,0\n"), "UTF-8", id="latin-1-after-the-sniffed-head"),
        pytest.param(_csv_pam(b"s\x00,1,2,1,0\n"), "NUL", id="a-nul-after-the-sniffed-head"),
        pytest.param(_csv_pam(b"s" * 140_000 + b",1,2,1,0\n"), "parse", id="a-giant-field"),
        pytest.param(
            "site,x,y,sp_a,sp_b\n1,1,2,1,0\n".encode("utf-16"), "unknown", id="utf-16-text"
        ),
    ],
)
def test_a_csv_input_that_is_not_clean_utf8_is_refused_at_submission(api, guard, content, reason):
    stored = upload(api, "pam.csv", content)
    assert stored.status_code == 201, stored.content
    guard.arm()
    body = guard.refused(post_json(api, pam_request(stored.json()["id"])), 400, "inputs.pam")
    assert reason in body["errors"]["inputs.pam"][0]


@pytest.mark.django_db
def test_the_same_csv_input_in_clean_utf8_is_accepted(api):
    stored = upload(api, "pam.csv", _csv_pam(b"s\xc3\xa9,1,2,1,0\n"))
    assert stored.json()["format"] == "csv"
    assert post_json(api, pam_request(stored.json()["id"])).status_code == 201


# ---------------------------------------------------------------------------------------------
# Uploads without exactly one file, bodies of the wrong kind


def _multipart_upload(api, content: bytes, content_type: str = MULTIPART_CONTENT):
    return api.generic("POST", DATASETS, content, content_type=content_type)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("send", "status", "field"),
    [
        pytest.param(
            lambda api: api.post(DATASETS, {"name": "x"}, format="multipart"),
            400,
            "file",
            id="no-file",
        ),
        pytest.param(lambda api: upload(api, "empty.csv", b""), 400, "file", id="an-empty-file"),
        pytest.param(
            lambda api: api.post(DATASETS, {"file": "a,b\n1,2\n"}, format="multipart"),
            400,
            "file",
            id="the-file-as-a-text-field",
        ),
        pytest.param(
            lambda api: api.generic(
                "POST", DATASETS, "file=a%2Cb", content_type="application/x-www-form-urlencoded"
            ),
            400,
            "file",
            id="a-form-without-a-file",
        ),
        pytest.param(
            lambda api: api.post(DATASETS, {"file": "abc"}, format="json"), 415, None, id="json"
        ),
        pytest.param(
            lambda api: _multipart_upload(api, b"a,b\n1,2\n", "text/plain"),
            415,
            None,
            id="text-plain",
        ),
        pytest.param(
            lambda api: _multipart_upload(api, b"a,b\n1,2\n", "multipart/form-data"),
            400,
            None,
            id="multipart-without-a-boundary",
        ),
        pytest.param(
            lambda api: _multipart_upload(
                api, encode_multipart(BOUNDARY, {"file": io.BytesIO(b"a,b\n1,2\n")})[:-40]
            ),
            400,
            None,
            id="a-truncated-multipart-body",
        ),
    ],
)
def test_an_upload_without_exactly_one_good_file_is_refused(api, guard, send, status, field):
    guard.arm()
    guard.refused(send(api), status, field)


@pytest.mark.django_db
def test_an_upload_of_two_files_is_refused(api, guard):
    first, second = io.BytesIO(b"a,b\n1,2\n"), io.BytesIO(b"c,d\n3,4\n")
    first.name, second.name = "a.csv", "b.csv"
    guard.arm()
    guard.refused(api.post(DATASETS, {"file": [first, second]}, format="multipart"), 400, "file")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "content_type", "status", "field"),
    [
        pytest.param(json.dumps(SELFTEST), "text/plain", 415, None, id="text-plain"),
        pytest.param(json.dumps(SELFTEST), "application/xml", 415, None, id="xml"),
        pytest.param(
            "workflow=selftest&name=x",
            "application/x-www-form-urlencoded",
            400,
            "request",
            id="form-encoded",
        ),
        pytest.param(
            encode_multipart(BOUNDARY, {"workflow": "selftest"}),
            MULTIPART_CONTENT,
            400,
            "request",
            id="multipart",
        ),
        pytest.param(
            json.dumps(SELFTEST),
            "application/json; charset=bz2_codec",
            400,
            None,
            id="a-decompressing-charset",
        ),
        pytest.param(
            json.dumps(SELFTEST).encode("utf-8") + b"\xff",
            "application/json; charset=utf-16",
            400,
            None,
            id="a-charset-the-body-is-not-in",
        ),
    ],
)
def test_a_job_body_that_is_not_json_is_refused(api, guard, content, content_type, status, field):
    guard.arm()
    guard.refused(post_raw(api, content, content_type), status, field)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "field"),
    [
        pytest.param('{"workflow": "selftest"', None, id="truncated"),
        pytest.param('{"workflow": "selftest",}', None, id="a-trailing-comma"),
        pytest.param("{'workflow': 'selftest'}", None, id="single-quotes"),
        pytest.param('{"workflow": "selftest"} // run it', None, id="a-comment"),
        pytest.param(b'{"workflow": "selftest", "name": "\xff"}', None, id="invalid-utf8"),
        pytest.param(b'\xef\xbb\xbf{"workflow": "selftest"}', None, id="a-byte-order-mark"),
        pytest.param('{"workflow": "selftest"}{"workflow": "selftest"}', None, id="two-objects"),
        pytest.param("", "workflow", id="an-empty-body"),
        pytest.param("[]", "request", id="a-list"),
        pytest.param('[{"workflow": "selftest"}]', "request", id="a-list-of-a-request"),
        pytest.param('"selftest"', "request", id="a-string"),
        pytest.param("7", "request", id="a-number"),
        pytest.param("null", "request", id="null"),
        pytest.param("true", "request", id="true"),
    ],
)
def test_malformed_json_or_a_top_level_that_is_not_an_object_is_refused(api, guard, content, field):
    guard.arm()
    guard.refused(post_raw(api, content), 400, field)


# ---------------------------------------------------------------------------------------------
# URLs: output paths, malformed ids, methods


@pytest.fixture
def finished_job(api, data_dir):
    job = Job.objects.create(
        owner=api.user, workflow="selftest", request=SELFTEST, state=State.COMPLETE
    )
    (job.directory / "outputs").mkdir(parents=True)
    (job.directory / "outputs" / "result.csv").write_text("a,b\n")
    (job.directory / "package.zip").write_bytes(zip_bytes({"result.csv": b"a,b\n"}))
    (job.directory / "selftest.mf.json").write_text("{}")
    (data_dir / "secret.txt").write_text("not yours")
    Output.objects.create(
        job=job, path="result.csv", role="result", media_type="text/csv", size=4, sha256="x"
    )
    return job


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("../../secret.txt", 404, id="dot-dot"),
        pytest.param("%2e%2e/%2e%2e/secret.txt", 404, id="encoded-dots"),
        pytest.param("..%2F..%2Fsecret.txt", 404, id="encoded-slashes"),
        pytest.param("..%5C..%5Csecret.txt", 404, id="encoded-backslashes"),
        pytest.param("/etc/passwd", 404, id="absolute"),
        pytest.param("result.csv/../../../secret.txt", 404, id="through-a-real-output"),
        pytest.param("../package.zip", 404, id="an-uncataloged-file-of-the-job"),
        pytest.param("../selftest.mf.json", 404, id="the-workflow-file"),
        pytest.param("{root}/secret.txt", 404, id="the-data-dir-itself"),
        pytest.param("RESULT.CSV", 404, id="another-case"),
        pytest.param("result.csv%00.txt", 400, id="a-nul"),
    ],
)
def test_an_output_path_outside_the_catalog_is_refused(
    api, guard, data_dir, finished_job, path, status
):
    guard.arm()
    url = f"{JOBS}{finished_job.id}/outputs/" + path.replace("{root}", str(data_dir))
    guard.refused(api.get(url), status)


@pytest.mark.django_db
def test_a_cataloged_output_downloads(api, finished_job):
    response = api.get(f"{JOBS}{finished_job.id}/outputs/result.csv")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"a,b\n"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "template"),
    [
        pytest.param("get", JOBS + "not-a-uuid/", id="a-word-as-a-job-id"),
        pytest.param("get", JOBS + "{id}x/", id="a-uuid-and-more"),
        pytest.param("post", JOBS + "{short}/cancel/", id="a-uuid-short-of-a-digit-to-cancel"),
        pytest.param("delete", JOBS + "%00/", id="a-nul-to-delete"),
        pytest.param("get", JOBS + "%20/", id="a-space"),
        pytest.param("delete", DATASETS + "1%20OR%201%3D1/", id="sql-to-delete-a-dataset"),
        pytest.param("get", DATASETS + "-1/", id="a-negative-number-as-a-dataset-id"),
    ],
)
def test_a_malformed_id_in_a_url_is_404(api, guard, finished_job, method, template):
    real = str(finished_job.id)
    url = template.replace("{id}", real).replace("{short}", real[:-1])
    guard.arm()
    guard.refused(getattr(api, method)(url), 404)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "template",
    [
        pytest.param(JOBS + "not-a-uuid/tasks/", id="tasks"),
        pytest.param(JOBS + "not-a-uuid/outputs/", id="outputs"),
        pytest.param(JOBS + "not-a-uuid/package/", id="package"),
        pytest.param(DATASETS + "not-a-uuid/", id="dataset"),
    ],
)
def test_a_malformed_id_in_other_urls_is_404(api, guard, finished_job, template):
    guard.arm()
    guard.refused(api.get(template), 404)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        pytest.param(JOBS + "not-a-uuid/outputs/result.csv", id="an-output-of-a-malformed-id"),
        pytest.param(JOBS + "..%2F..%2Fetc%2Fpasswd/", id="a-job-id-that-climbs"),
        pytest.param(DATASETS + "%2Fetc%2Fpasswd/", id="a-dataset-id-that-is-a-path"),
    ],
)
def test_an_unrouted_api_url_is_a_json_404(api, guard, finished_job, url):
    guard.arm()
    guard.refused(api.get(url), 404)


@pytest.fixture
def running_job(api, finished_job):
    dataset = Dataset.objects.create(
        owner=api.user,
        name="d",
        original_name="d",
        path="datasets/x/data.csv",
        size=1,
        sha256="x",
        format="csv",
    )
    job = Job.objects.create(owner=api.user, workflow="pam-stats", request={}, state=State.RUNNING)
    JobInput.objects.create(job=job, dataset=dataset, name="pam")
    return job, dataset


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "template", "data", "status"),
    [
        pytest.param("patch", JOBS + "{done}/", {"state": "QUEUED"}, 405, id="patch-a-job"),
        pytest.param("put", JOBS + "{done}/", SELFTEST, 405, id="put-a-job"),
        pytest.param("post", JOBS + "{done}/", SELFTEST, 405, id="post-to-a-job"),
        pytest.param(
            "patch", DATASETS + "{dataset}/", {"path": "/etc/passwd"}, 405, id="patch-a-dataset"
        ),
        pytest.param(
            "delete", JOBS + "{done}/outputs/result.csv", None, 405, id="delete-an-output"
        ),
        pytest.param("post", JOBS + "{done}/cancel/", None, 409, id="cancel-a-finished-job"),
        pytest.param("delete", JOBS + "{running}/", None, 409, id="delete-a-running-job"),
        pytest.param(
            "delete", DATASETS + "{dataset}/", None, 409, id="delete-an-input-of-a-running-job"
        ),
        pytest.param("get", JOBS + "?state=SLEEPING", None, 400, id="list-an-unknown-state"),
        pytest.param(
            "get", JOBS + "?submitted_after=$(date)", None, 400, id="list-after-a-command"
        ),
        pytest.param("get", JOBS + "?workflow=%00", None, 400, id="list-a-nul-workflow"),
        pytest.param("get", JOBS + "?page=" + "9" * 100, None, 404, id="list-a-huge-page"),
        pytest.param("get", JOBS + "?page=-1", None, 404, id="list-a-negative-page"),
        pytest.param(
            "get", DATASETS + "?file_format=../../etc", None, 400, id="list-a-path-as-format"
        ),
    ],
)
def test_methods_transitions_and_queries_that_would_rewrite_or_escape_are_refused(
    api, guard, finished_job, running_job, method, template, data, status
):
    job, dataset = running_job
    url = template.format(done=finished_job.id, running=job.id, dataset=dataset.id)
    guard.arm()
    guard.refused(getattr(api, method)(url, data, format="json"), status)


# ---------------------------------------------------------------------------------------------
# Idempotency-Key abuse


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key",
    [
        pytest.param("k" * 201, id="201-characters"),
        pytest.param("clé", id="non-ascii"),
        pytest.param("\u202ekey", id="a-right-to-left-override"),
        pytest.param("k\x00", id="a-nul"),
        pytest.param("k\x01", id="a-control-character"),
        pytest.param("k\tv", id="a-tab"),
        pytest.param("k\r\nX-Injected: 1", id="a-header-injection"),
        pytest.param("k\x7f", id="a-delete-character"),
    ],
)
def test_an_abusive_idempotency_key_is_refused(api, guard, key):
    guard.arm()
    guard.refused(post_json(api, SELFTEST, HTTP_IDEMPOTENCY_KEY=key), 400, "Idempotency-Key")


@pytest.mark.django_db
def test_a_printable_idempotency_key_with_shell_characters_is_kept_verbatim(api):
    key = "$(id); rm -rf / `x` | y && 'z\"" + "k" * 170
    assert len(key) == 200
    response = post_json(api, SELFTEST, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 201
    assert Job.objects.get(pk=response.json()["id"]).idempotency_key == key


# ---------------------------------------------------------------------------------------------
# Access: anonymous callers (401) and other users (404), at every endpoint


def _csv_upload():
    handle = io.BytesIO(b"a,b\n1,2\n")
    handle.name = "a.csv"
    return {"file": handle}


ENDPOINTS = [
    pytest.param("get", JOBS, None, id="list-jobs"),
    pytest.param("post", JOBS, SELFTEST, id="submit-a-job"),
    pytest.param("get", JOBS + "{job}/", None, id="retrieve-a-job"),
    pytest.param("delete", JOBS + "{job}/", None, id="delete-a-job"),
    pytest.param("post", JOBS + "{job}/cancel/", None, id="cancel-a-job"),
    pytest.param("get", JOBS + "{job}/tasks/", None, id="list-tasks"),
    pytest.param("get", JOBS + "{job}/outputs/", None, id="list-outputs"),
    pytest.param("get", JOBS + "{job}/outputs/result.csv", None, id="download-an-output"),
    pytest.param("get", JOBS + "{job}/package/", None, id="download-the-package"),
    pytest.param("get", DATASETS, None, id="list-datasets"),
    pytest.param("post", DATASETS, "upload", id="upload-a-dataset"),
    pytest.param("get", DATASETS + "{dataset}/", None, id="retrieve-a-dataset"),
    pytest.param("delete", DATASETS + "{dataset}/", None, id="delete-a-dataset"),
]


@pytest.fixture
def alices(api, finished_job):
    response = upload(api, "a.csv", b"a,b\n1,2\n")
    assert response.status_code == 201
    return {"job": finished_job.id, "dataset": response.json()["id"]}


def _call(client, method, template, data, ids):
    url = template.format(**ids)
    if data == "upload":
        return client.post(url, _csv_upload(), format="multipart")
    return getattr(client, method)(url, data, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "template", "data"), ENDPOINTS)
def test_every_endpoint_refuses_an_anonymous_caller(
    anon_api, guard, alices, method, template, data
):
    guard.arm()
    guard.refused(_call(anon_api, method, template, data, alices), 401)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Token not-a-token", id="an-unknown-token"),
        pytest.param("Token " + "a" * 5000, id="a-5000-character-token"),
        pytest.param("Token a b", id="a-token-with-spaces"),
        pytest.param("Bearer {token}", id="the-right-token-under-another-scheme"),
        pytest.param("Token {token}'--", id="the-right-token-with-sql"),
    ],
)
def test_a_forged_token_is_401(anon_api, api, guard, alices, authorization):
    from rest_framework.authtoken.models import Token

    token = Token.objects.get(user=api.user).key
    guard.arm()
    response = anon_api.get(JOBS, HTTP_AUTHORIZATION=authorization.format(token=token))
    guard.refused(response, 401)


@pytest.mark.django_db
def test_a_token_with_a_nul_is_refused(anon_api, api, guard, alices):
    guard.arm()
    guard.refused(anon_api.get(JOBS, HTTP_AUTHORIZATION="Token abc\x00def"), 400)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "template", "data"), [e for e in ENDPOINTS if "{" in e.values[1]]
)
def test_every_endpoint_hides_another_users_objects(
    other_api, guard, alices, method, template, data
):
    guard.arm()
    guard.refused(_call(other_api, method, template, data, alices), 404)


@pytest.mark.django_db
def test_every_endpoint_serves_the_owner(api, alices):
    # The twin of the two tests above: the same URLs answer their owner.
    for method, template, data in [e.values for e in ENDPOINTS]:
        if method == "get":
            response = _call(api, method, template, data, alices)
            assert response.status_code == 200, (template, response.content[:300])
