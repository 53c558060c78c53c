"""GA4GH WES 1.1.0 documents of lmweb's own jobs and rules, and WES run requests read into
lmweb's own request. No HTTP here: the views hand in what they know (URLs, versions)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import urlparse

from django.core import signing

WES_VERSION = "1.1.0"
WORKFLOW_TYPE = "LMWEB"
# The request format of /api/v1/: a run's workflow_params are that request's inputs and params.
WORKFLOW_TYPE_VERSION = "1"
ENGINE = "makeflow"
# What a run's workflow_engine_parameters may set: name -> (type, default, meaning).
ENGINE_PARAMETERS = {
    "name": ("string", "", "the job's name, shown in lists and the admin"),
}
PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
_CATALOG_PATH = re.compile(r"/workflows/([a-z0-9][a-z0-9-]*)/?$")
_PAGE_SALT = "lmweb.wes.page"


class BadRequest(Exception):
    """A malformed WES request: 400, the message naming the field."""


def timestamp(value: datetime | None) -> str | None:
    """WES times: ISO 8601 in UTC, "%Y-%m-%dT%H:%M:%SZ"."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _given(document: dict) -> dict:
    """WES's optional fields are not nullable: one with no value is left out."""
    return {key: value for key, value in document.items() if value is not None}


def string_tags(tags: dict) -> dict[str, str]:
    """WES tags are strings: a native job's other values as their JSON text."""
    return {
        str(key): value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for key, value in (tags or {}).items()
    }


# -- a run request ----------------------------------------------------------------------------


def _json_field(fields, name: str, default):
    """A field holding JSON text (WES sends every multipart field as a string); a JSON body may
    hold the value itself."""
    value = fields.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise BadRequest(f"{name}: not JSON ({exc})") from None
    return value


def _text_field(fields, name: str) -> str:
    value = fields.get(name) or ""
    if not isinstance(value, str):
        raise BadRequest(f"{name}: expected a string")
    return value.strip()


def workflow_name(url: str, known: Iterable[str]) -> str:
    """The catalog workflow a `workflow_url` names: its name ("pam-stats") or its catalog URL
    (".../api/v1/workflows/pam-stats/"). lmweb runs only its catalog's workflows."""
    known = list(known)
    name = url
    if "/" in url:
        match = _CATALOG_PATH.search(urlparse(url).path)
        name = match.group(1) if match else ""
    if name not in known:
        shown = url if len(url) <= 100 else url[:100] + "..."
        raise BadRequest(
            f"workflow_url: {shown!r} names no workflow of this service's catalog; give one of "
            f"{', '.join(known)} (or its /api/v1/workflows/<name>/ URL)"
        )
    return name


def run_request(fields, known_workflows: Iterable[str], engine_versions: Iterable[str]) -> dict:
    """The native request (workflow, inputs, params, tags, name) a WES RunRequest stands for.

    `fields` is the multipart form (or a JSON body) without its files. Every check that needs
    no database is made here, before any attached file is stored."""
    url = _text_field(fields, "workflow_url")
    if not url:
        raise BadRequest("workflow_url: required: a workflow of the catalog, e.g. pam-stats")
    workflow = workflow_name(url, known_workflows)
    kind = _text_field(fields, "workflow_type")
    if kind and kind.upper() != WORKFLOW_TYPE:
        raise BadRequest(f"workflow_type: this service runs type {WORKFLOW_TYPE}, not {kind!r}")
    version = _text_field(fields, "workflow_type_version")
    if version and version != WORKFLOW_TYPE_VERSION:
        raise BadRequest(
            f"workflow_type_version: {WORKFLOW_TYPE} {WORKFLOW_TYPE_VERSION} is supported, "
            f"not {version!r}"
        )
    engine = _text_field(fields, "workflow_engine")
    if engine and engine != ENGINE:
        raise BadRequest(f"workflow_engine: this service runs {ENGINE}, not {engine!r}")
    engine_version = _text_field(fields, "workflow_engine_version")
    if engine_version and engine_version not in engine_versions:
        raise BadRequest(
            f"workflow_engine_version: {ENGINE} {', '.join(engine_versions)} runs here, "
            f"not {engine_version!r}"
        )
    params = _json_field(fields, "workflow_params", {})
    if not isinstance(params, dict):
        raise BadRequest("workflow_params: expected a JSON object of `inputs` and `params`")
    unknown = sorted(set(params) - {"inputs", "params"})
    if unknown:
        raise BadRequest(
            f"workflow_params.{unknown[0]}: unknown; workflow_params holds `inputs` (dataset ids "
            "or the names of attached files) and `params`"
        )
    tags = _json_field(fields, "tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise BadRequest("tags: expected a JSON object of strings")
    engine_parameters = _json_field(fields, "workflow_engine_parameters", {})
    if not isinstance(engine_parameters, dict):
        raise BadRequest("workflow_engine_parameters: expected a JSON object of strings")
    for key, value in engine_parameters.items():
        if key not in ENGINE_PARAMETERS:
            known = ", ".join(ENGINE_PARAMETERS)
            raise BadRequest(f"workflow_engine_parameters.{key}: unknown; known: {known}")
        if not isinstance(value, str):
            raise BadRequest(f"workflow_engine_parameters.{key}: expected a string")
    request = {"workflow": workflow, "inputs": params.get("inputs", {}), "tags": tags}
    # WES has no field for it: a `callback_url` tag asks for a completion callback.
    if tags.get("callback_url"):
        request["callback_url"] = tags["callback_url"]
    if "params" in params:
        request["params"] = params["params"]
    if engine_parameters.get("name"):
        request["name"] = engine_parameters["name"]
    return request


# The native request's fields, as a WES caller named them.
_FIELD_NAMES = {
    "workflow": "workflow_url",
    "inputs": "workflow_params.inputs",
    "params": "workflow_params.params",
    "name": "workflow_engine_parameters.name",
    "files": "workflow_attachment",
    "callback_url": "tags.callback_url",
}


def field_name(native: str) -> str:
    """A native error's field ("params.randomizations") as the WES request names it."""
    head, dot, rest = native.partition(".")
    if head in _FIELD_NAMES:
        return _FIELD_NAMES[head] + dot + rest
    return native


# -- documents --------------------------------------------------------------------------------


def service_info(
    *,
    workflows: dict[str, str],
    lmweb_version: str,
    engine_version: str,
    state_counts: dict[str, int],
    protocols: list[str],
    auth_instructions_url: str,
    service_id: str,
    organization: dict,
) -> dict:
    """GA4GH service-info with WES 1.1.0's fields. `workflows` maps each catalog workflow's
    name to its catalog URL."""
    return {
        "id": service_id,
        "name": "lmweb",
        "type": {"group": "org.ga4gh", "artifact": "wes", "version": WES_VERSION},
        "description": (
            "Lifemapper biodiversity workflows (lmpy) run by Makeflow on Work Queue workers."
        ),
        "organization": organization,
        "documentationUrl": auth_instructions_url,
        "version": lmweb_version,
        "workflow_type_versions": {
            WORKFLOW_TYPE: {
                "workflow_type_version": [WORKFLOW_TYPE_VERSION],
                # lmweb's own addition: the catalog behind the type, workflow by workflow.
                "workflows": {
                    name: {"version": lmweb_version, "url": url}
                    for name, url in sorted(workflows.items())
                },
            }
        },
        "supported_wes_versions": [WES_VERSION],
        "supported_filesystem_protocols": protocols,
        "workflow_engine_versions": {ENGINE: {"workflow_engine_version": [engine_version]}},
        "default_workflow_engine_parameters": [
            {"name": name, "type": kind, "default_value": default}
            for name, (kind, default, _) in ENGINE_PARAMETERS.items()
        ],
        "system_state_counts": dict(state_counts),
        "auth_instructions_url": auth_instructions_url,
        "tags": {
            "workflows": " ".join(sorted(workflows)),
            "inputs": "workflow_params.inputs names dataset ids or workflow_attachment files",
        },
    }


def run_status(job) -> dict:
    return {"run_id": str(job.id), "state": job.state}


def run_summary(job) -> dict:
    return _given(
        {
            **run_status(job),
            "start_time": timestamp(job.started_at),
            "end_time": timestamp(job.finished_at),
            "tags": string_tags(job.tags),
        }
    )


def run_request_of(job, workflow_url: str, engine_version: str) -> dict:
    """The RunRequest a job stands for (attached files appear by the datasets they became)."""
    request = {
        "workflow_params": {
            "inputs": job.request.get("inputs", {}),
            "params": job.request.get("params", {}),
        },
        "workflow_type": WORKFLOW_TYPE,
        "workflow_type_version": WORKFLOW_TYPE_VERSION,
        "tags": string_tags(job.tags),
        "workflow_engine": ENGINE,
        "workflow_engine_version": engine_version,
        "workflow_engine_parameters": {"name": job.name} if job.name else {},
        "workflow_url": workflow_url,
    }
    return request


def _exit_code(job) -> int | None:
    if job.state == "COMPLETE":
        return 0
    if job.state in {"EXECUTOR_ERROR", "SYSTEM_ERROR"}:
        return 1
    return None


def run_log(
    job,
    *,
    workflow_url: str,
    engine_version: str,
    stages: list[str],
    outputs: dict,
    task_logs_url: str,
) -> dict:
    system_logs = []
    if job.error_code or job.error_message:
        system_logs.append(f"{job.error_code}: {job.error_message}".strip(": "))
    return {
        "run_id": str(job.id),
        "request": run_request_of(job, workflow_url, engine_version),
        "state": job.state,
        "run_log": _given(
            {
                "name": job.name or job.workflow,
                "cmd": [ENGINE, "-T", "wq", *(f"{stage}.mf.json" for stage in stages)],
                "start_time": timestamp(job.started_at),
                "end_time": timestamp(job.finished_at),
                "exit_code": _exit_code(job),
                "system_logs": system_logs,
            }
        ),
        "task_logs_url": task_logs_url,
        "task_logs": None,
        "outputs": outputs,
    }


def task_id(task: dict) -> str:
    """A rule's task id: "<stage>:<rule>" (neither holds a colon)."""
    return f"{task['stage']}:{task['rule']}"


def _argv(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:  # not shell syntax after all: the line as makeflow logged it
        return [command]


def task_log(task: dict, log_url: Callable[[str, str], str]) -> dict:
    """A makeflow rule as a WES TaskLog; `log_url(task_id, stream)` is where its output reads."""
    key = task_id(task)
    system_logs = [f"host: {task['host']}"] if task["host"] else []
    system_logs.append(f"state: {task['state']}, attempts: {task['attempts']}")
    return _given(
        {
            "id": key,
            "name": task["rule"],
            "cmd": _argv(task["command"]),
            "start_time": timestamp(task["started_at"]),
            "end_time": timestamp(task["finished_at"]),
            "stdout": log_url(key, "stdout"),
            "stderr": log_url(key, "stderr"),
            "exit_code": task["exit_code"],
            "system_logs": system_logs,
            "tags": {
                "stage": task["stage"],
                "rule": task["rule"],
                "state": task["state"],
                "host": task["host"],
                "attempts": str(task["attempts"]),
            },
        }
    )


# -- page tokens ------------------------------------------------------------------------------


def page_size(value) -> int:
    if value in (None, ""):
        return PAGE_SIZE
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise BadRequest("page_size: expected a whole number") from None
    if size < 1:
        raise BadRequest("page_size: at least 1")
    return min(size, MAX_PAGE_SIZE)


def make_token(position: dict) -> str:
    """An opaque, signed page token: a caller can hand it back, not forge one."""
    return signing.dumps(position, salt=_PAGE_SALT, compress=True)


def read_token(token: str) -> dict:
    try:
        position = signing.loads(token, salt=_PAGE_SALT)
    except signing.BadSignature:
        raise BadRequest("page_token: not a token this service gave") from None
    if not isinstance(position, dict):
        raise BadRequest("page_token: not a token this service gave")
    return position
