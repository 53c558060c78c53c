"""A finished job's results: the output catalog, the manifest and the package."""

import hashlib
import json
import zipfile
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .. import formats, rules, versions
from ..models import Job
from . import report, rocrate
from .folder import JobFolder

# outputs/report.html, relative to outputs/ (translators/report).
REPORT_NAME = report.REPORT.removeprefix("outputs/")

# Already-compressed formats are stored as they are; deflating them again only costs time.
STORED_SUFFIXES = {".zip", ".lmm", ".png", ".tif", ".gz", ".npz"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def catalog_outputs(folder: JobFolder) -> list[dict]:
    root = folder.outputs
    entries = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        relative = path.relative_to(root).as_posix()
        entries.append(
            {
                "path": relative,
                "role": _role(relative),
                "media_type": formats.media_type(path),
                "size": path.stat().st_size,
                "sha256": _sha256(path),
            }
        )
    return entries


def _role(relative: str) -> str:
    if relative == REPORT_NAME:
        return "report"
    return relative.split("/", 1)[0] if "/" in relative else "result"


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _job_record(job: Job, finished_at) -> dict:
    return {
        "id": str(job.id),
        "workflow": job.workflow,
        "name": job.name,
        "owner": job.owner.get_username(),
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": finished_at,
    }


def write_manifest(
    job: Job, folder: JobFolder, outputs: list[dict], *, finished_at=None, tasks=None
) -> dict:
    job.refresh_from_db()
    tasks = rules.read_tasks(job) if tasks is None else tasks
    rule_records = [
        {
            key: (_iso(value) if key.endswith("_at") else value)
            for key, value in task.items()
            if key not in {"stdout", "stderr"}
        }
        for task in tasks
    ]
    record = _job_record(job, finished_at or timezone.now())
    manifest = {
        "job": {k: (_iso(v) if k.endswith("_at") else v) for k, v in record.items()},
        "request": job.request,
        "versions": versions.tool_versions(),
        "rules": rule_records,
        "outputs": outputs,
    }
    folder.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_package(folder: JobFolder, manifest: dict, stages: list[str] | None = None) -> Path:
    """The zip: manifest.json, SHA256SUMS, ro-crate-metadata.json and README.md (when written),
    the Makeflow file of each stage under workflow/, and the outputs under outputs/."""
    target = folder.package
    temporary = target.with_name("package.zip.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(folder.manifest, "manifest.json")
        archive.writestr(rocrate.SUMS, rocrate.sha256sums(manifest["outputs"]))
        if folder.crate.is_file():
            archive.write(folder.crate, rocrate.METADATA)
        if folder.readme.is_file():
            archive.write(folder.readme, rocrate.README)
        for stage in stages or []:
            archive.writestr(rocrate.workflow_path(stage), _workflow_text(folder, stage))
        for entry in manifest["outputs"]:
            source = folder.output(entry["path"])
            stored = Path(entry["path"]).suffix.lower() in STORED_SUFFIXES
            archive.write(
                source,
                f"outputs/{entry['path']}",
                compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED,
            )
    temporary.replace(target)
    return target


# The service's own plumbing in a rule's environment, not part of the workflow a reader reruns
# (the live-log token would let its holder write into the job's live logs).
PLUMBING = ("LMWEB_LOG_URL", "LMWEB_LOG_TOKEN")


def _workflow_text(folder: JobFolder, stage: str) -> str:
    document = json.loads((folder.root / folder.dag(stage)).read_text())
    for rule in document.get("rules", []):
        for name in PLUMBING:
            rule.get("environment", {}).pop(name, None)
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def _inputs(job: Job) -> list[dict]:
    """The job's input datasets as the crate names them (a dataset deleted since is left out)."""
    return [
        {
            "slot": item.name,
            "position": item.position,
            "id": str(item.dataset.id),
            "name": item.dataset.name,
            "original_name": item.dataset.original_name,
            "sha256": item.dataset.sha256,
            "size": item.dataset.size,
            "format": item.dataset.format,
            "media_type": formats.media_type(item.dataset.absolute_path),
        }
        for item in job.inputs.select_related("dataset").order_by("name", "position")
        if item.dataset is not None
    ]


def write_crate(
    job: Job, folder: JobFolder, manifest: dict, stages: list[str], tasks: list[dict]
) -> dict:
    # A job is packaged once every rule has succeeded, just before it becomes COMPLETE.
    record = dict(manifest["job"], state="COMPLETE", tags=job.tags)
    inputs = _inputs(job)
    crate = rocrate.metadata(
        job=record,
        request=job.request,
        versions=manifest["versions"],
        stages=stages,
        tasks=tasks,
        outputs=manifest["outputs"],
        inputs=inputs,
        files=["manifest.json"],
        publisher={
            "name": settings.LMWEB_WES_ORGANIZATION,
            "url": settings.LMWEB_WES_ORGANIZATION_URL,
        },
    )
    folder.crate.write_text(json.dumps(crate, indent=2) + "\n")
    folder.readme.write_text(
        rocrate.readme(
            job=record,
            request=job.request,
            versions=manifest["versions"],
            outputs=manifest["outputs"],
            inputs=inputs,
        )
    )
    return crate


def package_job(job: Job, folder: JobFolder) -> list[dict]:
    """Complete the report, catalog the outputs, write the manifest, build the package; the
    catalog entries."""
    job.refresh_from_db()
    finished_at = timezone.now()
    tasks = rules.read_tasks(job)
    report.complete_report(
        folder,
        report.job_section(
            _job_record(job, finished_at), job.request, versions.tool_versions(), tasks
        ),
    )
    outputs = catalog_outputs(folder)
    manifest = write_manifest(job, folder, outputs, finished_at=finished_at, tasks=tasks)
    stages = [s for s in folder.read_stages()["started"] if (folder.root / folder.dag(s)).is_file()]
    write_crate(job, folder, manifest, stages, tasks)
    build_package(folder, manifest, stages)
    return outputs
