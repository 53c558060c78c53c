"""A finished job's results: the output catalog, the manifest and the package."""

import hashlib
import json
import zipfile
from pathlib import Path

from django.utils import timezone

from .. import formats, rules, versions
from ..models import Job
from .folder import JobFolder

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
                "role": relative.split("/", 1)[0] if "/" in relative else "result",
                "media_type": formats.media_type(path),
                "size": path.stat().st_size,
                "sha256": _sha256(path),
            }
        )
    return entries


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def write_manifest(job: Job, folder: JobFolder, outputs: list[dict]) -> dict:
    job.refresh_from_db()
    rule_records = [
        {
            key: (_iso(value) if key.endswith("_at") else value)
            for key, value in task.items()
            if key not in {"stdout", "stderr"}
        }
        for task in rules.read_tasks(job)
    ]
    manifest = {
        "job": {
            "id": str(job.id),
            "workflow": job.workflow,
            "name": job.name,
            "owner": job.owner.get_username(),
            "submitted_at": _iso(job.submitted_at),
            "started_at": _iso(job.started_at),
            "finished_at": _iso(timezone.now()),
        },
        "request": job.request,
        "versions": versions.tool_versions(),
        "rules": rule_records,
        "outputs": outputs,
    }
    folder.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_package(folder: JobFolder, manifest: dict) -> Path:
    target = folder.package
    temporary = target.with_name("package.zip.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(folder.manifest, "manifest.json")
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


def package_job(job: Job, folder: JobFolder) -> list[dict]:
    """Catalog the outputs, write the manifest, build the package; the catalog entries."""
    outputs = catalog_outputs(folder)
    build_package(folder, write_manifest(job, folder, outputs))
    return outputs
