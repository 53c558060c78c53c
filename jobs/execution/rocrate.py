"""The package's ro-crate-metadata.json: the job as a Workflow Run RO-Crate (RO-Crate 1.1, Workflow
Run Crate 0.5), from what packaging already holds. Pure: dictionaries in, a JSON-LD document out.

- The workflow is the Makeflow file of each stage the job ran (`workflow/<stage>.mf.json`, in
  the package): the first is the crate's main entity, a `ComputationalWorkflow`.
- The run is a `CreateAction`: the workflow its instrument, the inputs (the user's datasets by
  name and sha256, and every parameter) its object, every output file (with its sha256) its
  result, the owner its agent.
- Each makeflow rule is a `CreateAction` too: its command, the Work Queue worker that ran it (its
  location), its times, its exit code and state.
- lmweb, lmpy and CCTools appear with their versions.
- The owner is the crate's author, the organization running the service its publisher.
- README.md, for a person opening the package: what ran, on what, what came out, how to check it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

RO_CRATE = "https://w3id.org/ro/crate/1.1"
CONTEXT = f"{RO_CRATE}/context"
PROFILES = [
    ("https://w3id.org/ro/wfrun/process/0.5", "Process Run Crate", "0.5"),
    ("https://w3id.org/ro/wfrun/workflow/0.5", "Workflow Run Crate", "0.5"),
    ("https://w3id.org/workflowhub/workflow-ro-crate/1.0", "Workflow RO-Crate", "1.0"),
]
FORMAL_PARAMETER = "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
COMPUTATIONAL_WORKFLOW = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"
LMPY_URL = "https://pypi.org/project/specify-lmpy/"
CCTOOLS_URL = "https://cctools.readthedocs.io/"
MAKEFLOW_URL = "https://cctools.readthedocs.io/en/latest/makeflow/"
# Terms RO-Crate 1.1's context lacks: a Workflow Run term (https://w3id.org/ro/terms/workflow-run)
# and schema.org's sha256 (in RO-Crate's context from 1.2 on).
TERMS = {
    "exitCode": "https://w3id.org/ro/terms/workflow-run#exitCode",
    "sha256": "http://schema.org/sha256",
}
# Results carry their owner's terms: a job tagged `license` (a URL, say
# https://creativecommons.org/licenses/by/4.0/) names its own.
UNLICENSED = {
    "@id": "#license",
    "@type": "CreativeWork",
    "name": "The job owner's terms",
    "description": (
        "lmweb grants no license to these results: they belong to the job's owner, under the "
        "terms of the data they were made from. Tag a job `license` to name a license here."
    ),
}
COMPLETED = "http://schema.org/CompletedActionStatus"
FAILED = "http://schema.org/FailedActionStatus"
ACTIVE = "http://schema.org/ActiveActionStatus"
METADATA = "ro-crate-metadata.json"
README = "README.md"
SUMS = "SHA256SUMS"


def workflow_path(stage: str) -> str:
    return f"workflow/{stage}.mf.json"


def _iso(value: datetime | str | None) -> str | None:
    """ISO 8601 to the second, as the profiles' checks read times."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.isoformat(timespec="seconds")


def _ref(entity_id: str) -> dict:
    return {"@id": entity_id}


def _given(entity: dict) -> dict:
    """Without empty properties, and a list of one as that one value (RO-Crate 1.1's JSON-LD
    form); @type stays a list where it has several."""
    return {
        key: value[0] if isinstance(value, list) and len(value) == 1 and key != "@type" else value
        for key, value in entity.items()
        if value not in (None, "", [])
    }


def _status(state: str) -> str:
    if state in {"complete", "COMPLETE"}:
        return COMPLETED
    if state in {"failed", "aborted", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}:
        return FAILED
    return ACTIVE


def _kind(value) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    return "Text"  # text, or a list or object as its JSON text (`_text`)


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def release(version: str) -> str:
    """The release number in a tool's version line (makeflow's `makeflow version 8.0.0 ...`)."""
    found = re.search(r"\bversion\s+(\S+)", version)
    return found.group(1) if found else version


def metadata(
    *,
    publisher: dict | None = None,
    job: dict,
    request: dict,
    versions: dict,
    stages: list[str],
    tasks: list[dict],
    outputs: list[dict],
    inputs: list[dict],
    files: list[str],
) -> dict:
    """`job`: id, workflow, name, owner, tags, state, submitted_at, started_at, finished_at;
    `inputs`: one dict per input dataset (slot, position, id, name, original_name, sha256, size,
    format);
    `outputs`: the output catalog (path, role, media_type, size, sha256); `files`: the other
    files of the package (manifest.json); `publisher`: the organization running the service
    (name, url)."""
    workflow_ids = [workflow_path(stage) for stage in stages]
    main = workflow_ids[0] if workflow_ids else None
    graph: list[dict] = []

    # Formal parameters: each dataset slot and each parameter of the request.
    slots = sorted({item["slot"] for item in inputs})
    params = request.get("params") or {}
    formal_inputs = [
        {
            "@id": f"#param-input-{slot}",
            "@type": "FormalParameter",
            "conformsTo": _ref(FORMAL_PARAMETER),
            "name": slot,
            "additionalType": "File",
        }
        for slot in slots
    ] + [
        {
            "@id": f"#param-{name}",
            "@type": "FormalParameter",
            "conformsTo": _ref(FORMAL_PARAMETER),
            "name": name,
            "additionalType": _kind(value),
        }
        for name, value in sorted(params.items())
    ]
    formal_outputs = [
        {
            "@id": f"#param-output-{role}",
            "@type": "FormalParameter",
            "conformsTo": _ref(FORMAL_PARAMETER),
            "name": role,
            "additionalType": "File",
        }
        for role in sorted({entry["role"] or "result" for entry in outputs})
    ]

    input_files = [
        _given(
            {
                # The dataset stays in the service (not in the package): named by its id.
                "@id": f"urn:uuid:{item['id']}",
                "@type": "File",
                "name": item["name"],
                "alternateName": item.get("original_name"),
                "identifier": str(item["id"]),
                "sha256": item["sha256"],
                "contentSize": str(item["size"]),
                "encodingFormat": item.get("media_type"),
                "description": f"input {item['slot']}, {item.get('format')}",
                "exampleOfWork": _ref(f"#param-input-{item['slot']}"),
            }
        )
        for item in inputs
    ]
    values = [
        {
            "@id": f"#pv-{name}",
            "@type": "PropertyValue",
            "name": name,
            "value": _text(value),
            "exampleOfWork": _ref(f"#param-{name}"),
        }
        for name, value in sorted(params.items())
    ]
    output_files = [
        _given(
            {
                "@id": f"outputs/{entry['path']}",
                "@type": "File",
                "name": entry["path"],
                "description": entry["role"],
                "sha256": entry["sha256"],
                "contentSize": str(entry["size"]),
                "encodingFormat": entry["media_type"],
                "exampleOfWork": _ref(f"#param-output-{entry['role'] or 'result'}"),
            }
        )
        for entry in outputs
    ]
    other_files = [
        {"@id": path, "@type": "File", "name": path, "encodingFormat": "application/json"}
        for path in files
    ] + [
        {
            "@id": README,
            "@type": "File",
            "name": README,
            "about": _ref("./"),
            "encodingFormat": "text/markdown",
        },
        {"@id": SUMS, "@type": "File", "name": SUMS, "encodingFormat": "text/plain"},
    ]

    # The tools by their home pages (absolute ids, as the Process Run Crate profile asks); lmpy's
    # page of the release that ran.
    lmpy_version = versions.get("specify-lmpy")
    lmpy_id = f"{LMPY_URL}{lmpy_version}/" if lmpy_version else LMPY_URL
    software = [
        {
            "@id": "#lmweb",
            "@type": "SoftwareApplication",
            "name": "lmweb",
            "version": versions.get("lmweb", "unknown"),
        },
        {
            "@id": lmpy_id,
            "@type": "SoftwareApplication",
            "name": "lmpy (specify-lmpy)",
            "url": LMPY_URL,
            "version": versions.get("specify-lmpy", "unknown"),
        },
        {
            "@id": CCTOOLS_URL,
            "@type": "SoftwareApplication",
            "name": "CCTools (Makeflow, Work Queue)",
            "url": CCTOOLS_URL,
            "version": release(versions.get("cctools", "unknown")),
            "description": versions.get("cctools"),
        },
    ]
    language = {
        "@id": "#makeflow",
        "@type": "ComputerLanguage",
        "name": "Makeflow",
        "alternateName": "Makeflow JSON",
        "identifier": _ref(MAKEFLOW_URL),
        "url": _ref(MAKEFLOW_URL),
        "version": release(versions.get("cctools", "unknown")),
    }
    workflows = [
        _given(
            {
                "@id": path,
                "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"],
                "conformsTo": _ref(COMPUTATIONAL_WORKFLOW),
                "name": f"{job['workflow']}, stage {stage}",
                "encodingFormat": "application/json",
                "version": versions.get("lmweb", "unknown"),
                "programmingLanguage": _ref("#makeflow"),
                "softwareRequirements": [_ref(lmpy_id), _ref(CCTOOLS_URL)],
                "input": [_ref(p["@id"]) for p in formal_inputs] if path == main else None,
                "output": [_ref(p["@id"]) for p in formal_outputs] if path == main else None,
                "hasPart": [_ref(w) for w in workflow_ids if w != main] if path == main else None,
            }
        )
        for stage, path in zip(stages, workflow_ids, strict=True)
    ]
    owner = {"@id": "#owner", "@type": "Person", "name": job.get("owner") or "unknown"}
    organization = (
        _given(
            {
                "@id": publisher.get("url") or "#publisher",
                "@type": "Organization",
                "name": publisher.get("name"),
                "url": publisher.get("url"),
            }
        )
        if publisher
        else None
    )
    run = _given(
        {
            "@id": "#run",
            "@type": "CreateAction",
            "name": f"lmweb job {job['id']}: {job['workflow']}"
            + (f" ({job['name']})" if job.get("name") else ""),
            "identifier": str(job["id"]),
            "description": f"lmweb ran {job['workflow']} with makeflow on Work Queue workers",
            "instrument": _ref(main) if main else None,
            "agent": _ref("#owner"),
            "object": [_ref(e["@id"]) for e in input_files + values],
            "result": [_ref(e["@id"]) for e in output_files],
            "startTime": _iso(job.get("started_at")),
            "endTime": _iso(job.get("finished_at")),
            "actionStatus": _status(job.get("state", "COMPLETE")),
        }
    )

    hosts = sorted({task["host"] for task in tasks if task.get("host")})
    # Where each rule ran: the Work Queue worker (host:port), as the action's location; its
    # agent is the owner, on whose behalf it ran.
    workers = [
        {
            "@id": f"#worker-{host}",
            "@type": "Place",
            "name": f"Work Queue worker {host}",
            "identifier": host,
        }
        for host in hosts
    ]
    rules = [
        _given(
            {
                "@id": f"#rule-{task['stage']}-{task['rule']}",
                "@type": "CreateAction",
                "name": f"{task['stage']}:{task['rule']}",
                "description": task.get("command"),
                "instrument": _ref(workflow_path(task["stage"])),
                "agent": _ref("#owner"),
                "location": _ref(f"#worker-{task['host']}") if task.get("host") else None,
                "startTime": _iso(task.get("started_at")),
                "endTime": _iso(task.get("finished_at")),
                "exitCode": task.get("exit_code"),
                "actionStatus": _status(task.get("state", "")),
            }
        )
        for task in tasks
    ]

    license_tag = (job.get("tags") or {}).get("license")
    license_entity = (
        {"@id": license_tag, "@type": "CreativeWork", "name": license_tag}
        if isinstance(license_tag, str) and license_tag.strip()
        else UNLICENSED
    )
    root = _given(
        {
            "@id": "./",
            "@type": "Dataset",
            "name": run["name"],
            "description": (
                f"The results of lmweb job {job['id']} ({job['workflow']}), with the workflow that "
                "made them and the record of its run."
            ),
            "datePublished": _iso(job.get("finished_at")),
            "author": _ref("#owner"),
            "publisher": _ref(organization["@id"]) if organization else None,
            "license": _ref(license_entity["@id"]),
            "conformsTo": [_ref(uri) for uri, _, _ in PROFILES],
            "mainEntity": _ref(main) if main else None,
            # Inputs too, by their ids: data entities outside the package are still its parts.
            "hasPart": [
                _ref(e["@id"]) for e in workflows + output_files + other_files + input_files
            ],
            "mentions": [_ref("#run"), *(_ref(r["@id"]) for r in rules)],
            "about": [_ref("#lmweb")],
        }
    )
    descriptor = {
        "@id": METADATA,
        "@type": "CreativeWork",
        "conformsTo": [_ref(RO_CRATE), _ref(PROFILES[2][0])],
        "about": _ref("./"),
    }
    profiles = [
        {"@id": uri, "@type": "CreativeWork", "name": name, "version": version}
        for uri, name, version in PROFILES
    ]
    graph = [
        descriptor,
        root,
        *workflows,
        language,
        *software,
        owner,
        *([organization] if organization else []),
        run,
        *rules,
        *workers,
        *formal_inputs,
        *formal_outputs,
        *input_files,
        *values,
        *output_files,
        *other_files,
        *profiles,
        license_entity,
    ]
    return {"@context": [CONTEXT, TERMS], "@graph": graph}


def _cell(value) -> str:
    """User text as Markdown text: one line, every character Markdown or HTML would read as
    markup escaped (a dataset named `<img src=x>` or `[x](javascript:...)` stays text)."""
    text = " ".join(str(value).split())
    return "".join(f"\\{c}" if c in MARKUP else c for c in text)


MARKUP = set("\\`*_[]<>|&")


def readme(*, job: dict, request: dict, versions: dict, outputs: list[dict], inputs: list) -> str:
    """README.md of the package: the same record as the crate, for a person."""
    title = f"lmweb job {job['id']}: {job['workflow']}" + (
        f" ({job['name']})" if job.get("name") else ""
    )
    lines = [
        f"# {_cell(title)}",
        "",
        f"Run by {_cell(job.get('owner') or 'unknown')} with lmweb "
        f"{versions.get('lmweb', 'unknown')}, lmpy {versions.get('specify-lmpy', 'unknown')} "
        f"and CCTools {release(versions.get('cctools', 'unknown'))}; "
        f"started {_iso(job.get('started_at')) or '-'}, "
        f"finished {_iso(job.get('finished_at')) or '-'}.",
        "",
        "## Inputs",
        "",
        "| slot | dataset | id | sha256 |",
        "| --- | --- | --- | --- |",
        *(
            f"| {_cell(item['slot'])} | {_cell(item['name'])} | {item['id']} | {item['sha256']} |"
            for item in inputs
        ),
        "",
        "## Parameters",
        "",
        "| name | value |",
        "| --- | --- |",
        *(
            f"| {_cell(name)} | {_cell(_text(value))} |"
            for name, value in sorted((request.get("params") or {}).items())
        ),
        "",
        "## Outputs",
        "",
        "| file | role | bytes | sha256 |",
        "| --- | --- | --- | --- |",
        *(
            f"| outputs/{_cell(entry['path'])} | {_cell(entry['role'] or 'result')} "
            f"| {entry['size']} | {entry['sha256']} |"
            for entry in outputs
        ),
        "",
        "## What else is here",
        "",
        "- `manifest.json`: the request, the tool versions, every rule of the run and every output"
        " with its sha256.",
        f"- `{METADATA}`: the same as a Workflow Run RO-Crate"
        " (https://w3id.org/ro/wfrun/workflow/0.5).",
        "- `workflow/`: the Makeflow file of each stage, as it ran.",
        f"- `{SUMS}`: the sha256 of every output; `sha256sum -c {SUMS}` checks them.",
        "",
    ]
    return "\n".join(lines)


def sha256sums(outputs: list[dict]) -> str:
    """SHA256SUMS of the package, as `sha256sum -c` reads it."""
    return "".join(f"{entry['sha256']}  outputs/{entry['path']}\n" for entry in outputs)
