"""The report every job ends with: figures drawn on a worker and one self-contained report.html.

A workflow lists its figures (`Figure`) and appends `report_rule` to its last stage: the rule
draws each figure into outputs/figures/ with the drawing modules of scripts/ and writes
outputs/report.html with every figure inline. The controller fills in what only it knows once
the job has ended (the whole request, the tool versions, every rule's timing) when it packages
the job (jobs/execution/report.py): the report leaves a marked place for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

from translators.base import canonical_json
from translators.common.lmpy import PYTHON
from translators.common.scripts import script_text
from translators.makeflow import Category, Rule

REPORT = "outputs/report.html"
FIGURES = "outputs/figures"
CONFIG = "work/config/report/report.json"
SCRIPTS = "work/config/report"
# report.py loads the drawing module a figure's kind names ("pam.site_map" -> draw_pam.py).
CATEGORY = "report"
# matplotlib with one job's tables loaded (measured: tests/translators/test_report.py).
REPORT_CATEGORY = Category(cores=1, memory=1024, disk=1024)
# The place the controller fills in (jobs/execution/report.py).
JOB_MARK = "<!-- lmweb:job -->"


def _script(name: str):
    return resources.files(f"{__package__}.scripts").joinpath(name)


def figure_path(name: str) -> str:
    """outputs/figures/NAME.png, NAME made of lower-case letters, digits, '-' and '_'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{FIGURES}/{slug}.png"


@dataclass(frozen=True)
class Figure:
    """One figure: drawn by `kind` ("module.function" of scripts/draw_MODULE.py) from `inputs`
    (files of the job folder) with `args`, into `path`; `caption` says what it shows and how it
    was computed (the drawing may add a line with what it found, e.g. the highest value)."""

    path: str
    kind: str
    caption: str
    inputs: tuple[str, ...]
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not self.path.startswith(FIGURES + "/"):
            raise ValueError(f"a figure belongs in {FIGURES}/: {self.path}")
        module, _, function = self.kind.partition(".")
        if not _script(f"draw_{module}.py").is_file() or not function.isidentifier():
            raise ValueError(f"unknown figure kind: {self.kind}")

    def render(self) -> dict:
        return {"path": self.path, "kind": self.kind, "caption": self.caption, "args": self.args}


def _modules(figures: list[Figure]) -> list[str]:
    """The scripts a report with these figures runs: report.py, and the drawing modules."""
    drawn = sorted({f"draw_{f.kind.partition('.')[0]}.py" for f in figures})
    return ["report.py", *(["drawing.py", *drawn] if drawn else [])]


def report_files(
    title: str, workflow: str, params: dict, inputs: dict, figures: list[Figure], outputs: list[str]
) -> dict[str, str]:
    """The stage files the report rule reads: its configuration and the scripts."""
    paths = [f.path for f in figures]
    if len(set(paths)) != len(paths):
        raise ValueError("two figures share a file name")
    config = {
        "title": title,
        "workflow": workflow,
        "params": params,
        "inputs": inputs,
        "figures": [f.render() for f in figures],
        "outputs": sorted(outputs),
        "report": REPORT,
        "job_mark": JOB_MARK,
    }
    files = {CONFIG: canonical_json(config)}
    for name in _modules(figures):
        files[f"{SCRIPTS}/{name}"] = script_text(__package__, name)
    return files


def report_step(figures: list[Figure], after: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(command, inputs, outputs) of drawing the figures and writing the report, for a workflow
    that folds it into its last rule. `after` lists files it waits for (and lists in the
    report) besides what the figures read."""
    read = list(dict.fromkeys([p for f in figures for p in f.inputs] + list(after)))
    return (
        [PYTHON, f"{SCRIPTS}/report.py", CONFIG],
        [CONFIG, *(f"{SCRIPTS}/{name}" for name in _modules(figures)), *read],
        [REPORT, *(f.path for f in figures)],
    )


def report_rule(figures: list[Figure], after: list[str]) -> Rule:
    """The job's last rule: every figure and the report."""
    command, inputs, outputs = report_step(figures, after)
    return Rule("report", command, inputs=inputs, outputs=outputs, category=CATEGORY)
