"""Work Queue project names: one per job, with the running stage's width as a hint."""

from __future__ import annotations

import re


def deployment_prefix(deployment: str) -> str:
    """What every project name of one deployment starts with."""
    return f"lmweb-{deployment}-"


def project_name(deployment: str, job_id: str, width: int | None = None) -> str:
    """Unique per job: old workers of an earlier job can never serve this one by mistake.

    `width`, how many rules of the running stage can run at once, rides along as a `-wN`
    suffix: the manager's own catalog figures are up to 60 s old, and a stage that starts with
    one rule and then fans out would otherwise keep its first worker alone for a minute.
    """
    name = f"{deployment_prefix(deployment)}{job_id}"
    return name if width is None else f"{name}-w{width}"


_WIDTH_HINT = re.compile(r"-w([0-9]{1,6})$")


def width_hint(project: str) -> int | None:
    match = _WIDTH_HINT.search(project)
    return int(match.group(1)) if match else None


def is_width_variant(name: object, project: str) -> bool:
    """Whether `name` is `project` with a width hint."""
    return (
        isinstance(name, str)
        and name.startswith(project + "-w")
        and width_hint(name) is not None
        and len(name) == len(project) + 2 + len(str(width_hint(name)))
    )


def project_regex(deployment: str) -> str:
    # Work Queue matches -M against the whole name already; the anchors document the intent.
    return f"^{deployment_prefix(deployment)}.*$"
