"""OGC API - Processes - Part 1 (1.0) documents of lmweb's catalog and jobs, and execute requests
read into lmweb's own request. No HTTP here: the views hand in the URLs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

SPEC = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf"
CONFORMANCE = [
    f"{SPEC}/core",
    f"{SPEC}/ogc-process-description",
    f"{SPEC}/json",
    f"{SPEC}/job-list",
    f"{SPEC}/dismiss",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
]
REL = "http://www.opengis.net/def/rel/ogc/1.0"
EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0"
ECHO = "echo"
PROCESS_VERSION = "1.0.0"
# lmweb's states as OGC's job statuses.
STATUS = {
    "QUEUED": "accepted",
    "INITIALIZING": "running",
    "RUNNING": "running",
    "CANCELING": "running",
    "COMPLETE": "successful",
    "EXECUTOR_ERROR": "failed",
    "SYSTEM_ERROR": "failed",
    "CANCELED": "dismissed",
}
# What every catalog process gives back, as links (outputTransmission "reference").
OUTPUTS = {
    "package": ("the job's package: outputs, manifest, RO-Crate", "application/zip"),
    "report": ("the job's report", "text/html"),
}


class BadRequest(Exception):
    """A malformed execute request: 400, with the field it names."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def link(href: str, rel: str, title: str = "", kind: str = "application/json") -> dict:
    item = {"href": href, "rel": rel, "type": kind}
    if title:
        item["title"] = title
    return item


def landing(url: Callable[[str], str], readme: str) -> dict:
    return {
        "title": "lmweb",
        "description": (
            "Lifemapper biodiversity workflows (lmpy) as OGC API processes, run by Makeflow on "
            "Work Queue workers."
        ),
        "links": [
            link(url(""), "self", "this document"),
            link(readme, "service-doc", "the README: how to get a token", "text/markdown"),
            link(url("conformance"), "http://www.opengis.net/def/rel/ogc/1.0/conformance"),
            link(url("conformance"), "conformance", "the conformance classes"),
            link(url("processes"), f"{REL}/processes", "the processes"),
            link(url("jobs"), f"{REL}/job-list", "your jobs"),
        ],
    }


def _summary(process_id: str, title: str, description: str, url, sync: bool) -> dict:
    return {
        "id": process_id,
        "title": title,
        "description": description,
        "version": PROCESS_VERSION,
        "jobControlOptions": ["sync-execute"] if sync else ["async-execute"],
        "outputTransmission": ["value"] if sync else ["reference"],
        "links": [
            link(url(f"processes/{process_id}"), "self", "process description"),
            link(url(f"processes/{process_id}/execution"), f"{REL}/execute", "execute"),
        ],
    }


def echo_summary(url) -> dict:
    return _summary(
        ECHO,
        "Echo",
        "Gives back every input as an output of the same name, at once (sync-execute): for OGC's "
        "conformance tests.",
        url,
        sync=True,
    )


def echo_description(url) -> dict:
    anything = {"description": "any JSON value"}
    return {
        **echo_summary(url),
        "inputs": {
            "message": {
                "title": "message",
                "description": "echoed as the output `message`; other inputs are echoed too",
                "schema": {"type": "string"},
                "minOccurs": 0,
                "maxOccurs": 1,
            }
        },
        "outputs": {"message": {"title": "message", "schema": anything}},
    }


def process_summary(workflow, url) -> dict:
    return _summary(workflow.name, workflow.title, workflow.description, url, sync=False)


def process_description(workflow, url, datasets_url: str) -> dict:
    """A catalog workflow: its parameters (from its JSON Schema) and its dataset inputs (each a
    dataset id, or a link to the dataset) as inputs; its package and report as outputs."""
    schema = workflow.params_schema
    required = set(schema.get("required", []))
    inputs = {}
    for name, spec in workflow.dataset_inputs.items():
        one = {
            "oneOf": [
                {"type": "string", "format": "uuid", "description": "a dataset id"},
                {
                    "type": "object",
                    "required": ["href"],
                    "properties": {"href": {"type": "string", "format": "uri"}},
                    "description": f"a link to the dataset ({datasets_url}<id>/)",
                },
            ]
        }
        formats = ", ".join("." + f for f in spec.formats)
        inputs[name] = {
            "title": name,
            "description": (spec.description or name) + (f" ({formats})" if formats else ""),
            "schema": one,
            "minOccurs": 1 if spec.required else 0,
            "maxOccurs": "unbounded" if spec.many else 1,
        }
    for name, spec in schema.get("properties", {}).items():
        inputs[name] = {
            "title": spec.get("title", name),
            "description": spec.get("description", ""),
            "schema": spec,
            "minOccurs": 1 if name in required else 0,
            "maxOccurs": 1,
        }
    outputs = {
        name: {
            "title": name,
            "description": text,
            "schema": {"type": "string", "contentMediaType": media},
        }
        for name, (text, media) in OUTPUTS.items()
    }
    return {**process_summary(workflow, url), "inputs": inputs, "outputs": outputs}


def _unwrap(value):
    """An input as given, or the value of a qualified one ({"value": ...})."""
    qualified = {"value", "mediaType", "encoding", "schema"}
    if isinstance(value, dict) and "value" in value and set(value) <= qualified:
        return value["value"]
    return value


def _dataset_id(value, name: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("href"), str):
        parts = [p for p in value["href"].split("?")[0].rstrip("/").split("/") if p]
        if len(parts) >= 2 and parts[-2] == "datasets":
            return parts[-1]
        raise BadRequest(f"inputs.{name}: href must name one of your datasets (.../datasets/<id>/)")
    value = _unwrap(value)
    if not isinstance(value, str):
        raise BadRequest(f'inputs.{name}: a dataset id, or {{"href": <the dataset\'s URL>}}')
    return value


def execute_request(body, workflow) -> dict:
    """The native request an execute request stands for: dataset inputs as `inputs`, every other
    input a parameter."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object with `inputs`")
    given = body.get("inputs", {})
    if not isinstance(given, dict):
        raise BadRequest("inputs: expected an object of input name -> value")
    inputs, params = {}, {}
    for name, value in given.items():
        if name in workflow.dataset_inputs:
            if workflow.dataset_inputs[name].many:
                values = value if isinstance(value, list) else [value]
                inputs[name] = [_dataset_id(v, name) for v in values]
            else:
                inputs[name] = _dataset_id(value, name)
        else:
            params[name] = _unwrap(value)
    request = {"workflow": workflow.name, "inputs": inputs, "params": params}
    return request


def echo(body) -> dict:
    if body is None:
        body = {}
    if not isinstance(body, dict) or not isinstance(body.get("inputs", {}), dict):
        raise BadRequest("inputs: expected an object of input name -> value")
    return {name: _unwrap(value) for name, value in body.get("inputs", {}).items()}


def field_name(native: str) -> str:
    """A native error's field as the execute request names it."""
    head, _, rest = native.partition(".")
    if head in {"inputs", "params"}:
        return f"inputs.{rest}" if rest else "inputs"
    if head == "workflow":
        return "processID"
    return native


def status_info(job, url, native_url: str) -> dict:
    status = STATUS.get(job.state, "accepted")
    progress = getattr(job, "rules_total", 0) or 0
    percent = (
        100
        if status == "successful"
        else int(100 * (job.rules_done or 0) / progress)
        if progress
        else 0
    )
    message = job.state
    if job.error_code or job.error_message:
        message = f"{job.state}: {job.error_code}: {job.error_message}".rstrip(": ")
    document = {
        "processID": job.workflow,
        "type": "process",
        "jobID": str(job.id),
        "status": status,
        "message": message,
        "created": _time(job.submitted_at),
        "started": _time(job.started_at),
        "finished": _time(job.finished_at),
        "updated": _time(job.heartbeat_at or job.finished_at or job.started_at or job.submitted_at),
        "progress": percent,
        "links": [
            link(url(f"jobs/{job.id}"), "self", "this job's status"),
            link(native_url, "alternate", "the job in lmweb's own API"),
        ],
    }
    if status == "successful":
        document["links"].append(link(url(f"jobs/{job.id}/results"), f"{REL}/results", "results"))
    return {key: value for key, value in document.items() if value is not None}


def exception(kind: str, title: str, status: int, detail: str = "") -> dict:
    """An OGC exception (RFC 7807 problem details)."""
    body = {"type": f"{EXCEPTIONS}/{kind}" if kind else "about:blank", "title": title}
    body["status"] = status
    if detail:
        body["detail"] = detail
    return body
