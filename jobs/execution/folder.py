"""A job's folder: every path and file of one job, and nothing shared with another job."""

import fcntl
import json
import os
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from translators.makeflow import parallel_width

from ..cctools import log as makeflowlog

STAGES_FILE = "stages.json"
TAIL_BYTES = 4096
# Beyond this many rules a drawing is slow to make and too dense to read.
GRAPH_MAX_RULES = 400


class FolderLocked(Exception):
    """Another process holds the job's folder."""


@dataclass(frozen=True)
class WrittenStage:
    """A stage as written into the folder: its workflow file, how many of its rules can run at
    once, and the files (or folders) its rules declare they make, relative to the job folder."""

    name: str
    dag: str
    width: int
    outputs: tuple[str, ...] = field(default=())


def _name(entry) -> str:
    return entry if isinstance(entry, str) else entry["dag_name"]


def declared_outputs(document: dict) -> tuple[str, ...]:
    return tuple(
        sorted({_name(out) for rule in document.get("rules", []) for out in rule["outputs"]})
    )


class JobFolder:
    """The job's folder under DATA_DIR/jobs/<id>: staged inputs, each stage's makeflow file,
    logs and drawing, the stage record, the outputs, the lock, the manifest and the package."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, job) -> "JobFolder":
        return cls(job.directory)

    def exists(self) -> bool:
        return self.root.exists()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def crate(self) -> Path:
        """The package's RO-Crate metadata, written beside the manifest."""
        return self.root / "ro-crate-metadata.json"

    @property
    def readme(self) -> Path:
        """The package's README.md, written with the crate."""
        return self.root / "README.md"

    @property
    def package(self) -> Path:
        return self.root / "package.zip"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def stages_file(self) -> Path:
        return self.root / STAGES_FILE

    @staticmethod
    def dag(stage: str) -> str:
        """The stage's makeflow file, relative to the folder (makeflow runs in the folder)."""
        return f"{stage}.mf.json"

    def tmp(self, stage: str) -> Path:
        return self.root / "tmp" / stage

    def graph(self, stage: str) -> Path:
        return self.root / "graphs" / f"{stage}.svg"

    def output(self, relative: str) -> Path:
        """A cataloged output (`relative` comes from the catalog, never from a user)."""
        return self.outputs / relative

    def log_paths(self, stage: str) -> makeflowlog.LogPaths:
        return makeflowlog.LogPaths(self.root, self.dag(stage))

    def live_log(self, stage: str, rule_id: str, stream: str) -> Path:
        """What a running rule's guard has sent of its stdout or stderr (live logs)."""
        return self.root / "live-logs" / stage / f"{rule_id}.{stream}"

    def rule_log(self, stage: str, rule) -> Path:
        """Where a rule's stdout/stderr tails live; a failed rule's outputs, its logs included,
        are moved to makeflow.failed.<node>/."""
        folder = (
            self.log_paths(stage).failed_dir(rule.node_id) if rule.state == "failed" else self.root
        )
        return folder / "logs"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Makeflow does not lock its log: this lock keeps two makeflows off one job folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock_file.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FolderLocked(f"{self.root} is locked by another process") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # The stage record: which stages started and finished, with what each one declared.

    def read_stages(self) -> dict:
        if self.stages_file.exists():
            record = json.loads(self.stages_file.read_text())
            record.setdefault("stages", {})
            return record
        return {"done": [], "started": [], "stages": {}}

    def _write_stages(self, record: dict) -> None:
        temporary = self.root / (STAGES_FILE + ".tmp")
        temporary.write_text(json.dumps(record, indent=2))
        temporary.replace(self.stages_file)

    def mark_started(self, stage: WrittenStage) -> None:
        record = self.read_stages()
        known = {"width": stage.width, "outputs": list(stage.outputs)}
        if stage.name in record["started"] and record["stages"].get(stage.name) == known:
            return
        if stage.name not in record["started"]:
            record["started"].append(stage.name)
        record["stages"][stage.name] = known
        self._write_stages(record)

    def mark_done(self, done: list[str]) -> None:
        record = self.read_stages()
        record["done"] = list(done)
        self._write_stages(record)

    def products(self, stage: str) -> list[str]:
        """The files a finished stage made: its rules' declared outputs (as recorded when the
        stage was written), folders expanded, relative to the job folder."""
        known = self.read_stages()["stages"].get(stage)
        if known is None and (self.root / self.dag(stage)).is_file():
            # A record from before stages carried their outputs (a job handed back across the
            # upgrade): read them once from the stage's own makeflow file.
            known = {
                "outputs": declared_outputs(json.loads((self.root / self.dag(stage)).read_text()))
            }
        return self.existing_files((known or {}).get("outputs", []))

    def existing_files(self, names) -> list[str]:
        files = set()
        for name in names:
            path = self.root / name
            if path.is_dir():
                files.update(
                    item.relative_to(self.root).as_posix()
                    for item in path.rglob("*")
                    if item.is_file()
                )
            elif path.is_file():
                files.add(name)
        return sorted(files)

    # Writing a stage.

    def stage_input(self, name: str, source: Path) -> str:
        """Link (or copy) a dataset into the folder as `name`; its path relative to the folder."""
        self.inputs.mkdir(parents=True, exist_ok=True)
        target = self.inputs / name
        if not target.exists():
            temporary = target.with_name(target.name + ".tmp")
            temporary.unlink(missing_ok=True)
            try:
                os.link(source, temporary)
            except OSError:
                shutil.copyfile(source, temporary)
            temporary.rename(target)
        return str(target.relative_to(self.root))

    def sizes(self, names) -> dict[str, int]:
        """Bytes of each of `names` that exists already (staged inputs, earlier stages' files).

        A zip (an lmpy matrix, a DwCA) counts as its members unpacked: a rule that loads a 2 MB
        .lmm holds its 320 MB array (B10), and the rules are sized from these figures."""
        sizes = {}
        for name in names:
            path = self.root / name
            if path.is_file():
                sizes[name] = _unpacked_size(path)
            elif path.is_dir():
                sizes[name] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return sizes

    def write_stage(
        self, name: str, document: dict, text: str, files: Mapping[str, str]
    ) -> tuple[WrittenStage, bool]:
        """Write a stage's files and makeflow document (`text`, `document` as JSON) and record it
        as started. Returns the WrittenStage, and whether its makeflow file changed."""
        for relative, content in files.items():
            _write_if_changed(self.root / relative, content)
        # Rewriting an identical file would still change its time, and makeflow reruns a rule
        # whose inputs look newer than its outputs: only write what changed.
        changed = _write_if_changed(self.root / self.dag(name), text)
        for folder in ("logs", "work", "outputs"):
            (self.root / folder).mkdir(exist_ok=True)
        stage = WrittenStage(
            name=name,
            dag=self.dag(name),
            width=parallel_width(document),
            outputs=declared_outputs(document),
        )
        self.mark_started(stage)
        return stage, changed

    def write_graph(self, stage: str, svg: bytes) -> None:
        target = self.graph(stage)
        target.parent.mkdir(exist_ok=True)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_bytes(svg)
        temporary.replace(target)


def _write_if_changed(path: Path, text: str) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def tail(path: Path, size: int = TAIL_BYTES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - size))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _unpacked_size(path: Path) -> int:
    """The file's size, or for a zip the larger of that and its members' unpacked sizes (the
    central directory's figures: inspection held them to LMWEB_MAX_ZIP_UNPACKED). An lmpy
    matrix is a zip whose data.npz is a zip again (numpy's savez_compressed): its arrays count
    unpacked too."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            return max(size, sum(_member_size(archive, info) for info in archive.infolist()))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return size


def _member_size(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    if not info.filename.endswith(".npz"):
        return info.file_size
    try:
        with archive.open(info) as member, zipfile.ZipFile(member) as arrays:
            return max(info.file_size, sum(inner.file_size for inner in arrays.infolist()))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return info.file_size
