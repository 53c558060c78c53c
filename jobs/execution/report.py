"""The job's part of its report: what only the controller knows once the job has ended (the
whole request, the versions it ran with, every rule's timing), put in the place the worker's
report.html leaves for it (translators/report)."""

import html
import json
import shutil
from datetime import datetime

from translators.report import JOB_MARK, REPORT

from .folder import JobFolder

# The mark sits near the top, before any figure: only the head of the file is searched.
HEAD_BYTES = 64 * 1024
# A job of 10,000 rules gets a summary and its longest rules, not a table of every one.
MAX_RULE_ROWS = 100


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _clock(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def job_section(job: dict, request: dict, versions: dict, rules: list[dict]) -> str:
    """The HTML fragment: every user value escaped."""
    e = html.escape
    rows = [
        ("job", job["id"]),
        ("name", job.get("name") or "-"),
        ("owner", job.get("owner") or "-"),
        ("submitted", _clock(job.get("submitted_at"))),
        ("started", _clock(job.get("started_at"))),
        ("finished", _clock(job.get("finished_at"))),
    ]
    waited = _seconds(job.get("submitted_at"), job.get("started_at"))
    ran = _seconds(job.get("started_at"), job.get("finished_at"))
    if waited is not None:
        rows.append(("queued for", f"{waited:.1f} s"))
    if ran is not None:
        rows.append(("ran for", f"{ran:.1f} s (start to package)"))
    parts = ["<h2>Job</h2><table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows]
    parts.append("</table><h2>Request</h2>")
    parts.append(f"<pre>{e(json.dumps(request, indent=2, sort_keys=True))}</pre>")
    parts.append("<h2>Versions</h2><table>")
    parts += [f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in versions.items()]
    parts.append("</table>")
    parts.append(_timings(rules))
    return "\n".join(parts)


def _timings(rules: list[dict]) -> str:
    e = html.escape
    timed = [(rule, _seconds(rule.get("started_at"), rule.get("finished_at"))) for rule in rules]
    total = sum(s for _, s in timed if s is not None)
    parts = [
        "<h2>Timings</h2>",
        f"<p>{len(rules):,} rule(s); {total:.1f} s of rule time in all.</p>",
    ]
    shown = timed
    if len(timed) > MAX_RULE_ROWS:
        shown = sorted(timed, key=lambda item: -(item[1] or 0))[:MAX_RULE_ROWS]
        parts.append(f"<p>The {MAX_RULE_ROWS} longest rules:</p>")
    parts.append(
        "<table><tr><th>stage</th><th>rule</th><th>host</th><th>started</th>"
        "<th>seconds</th><th>state</th></tr>"
    )
    for rule, seconds in shown:
        parts.append(
            f"<tr><td>{e(rule.get('stage', ''))}</td><td>{e(rule.get('rule', ''))}</td>"
            f"<td>{e(rule.get('host') or '-')}</td><td>{e(_clock(rule.get('started_at')))}</td>"
            f"<td>{'-' if seconds is None else f'{seconds:.1f}'}</td>"
            f"<td>{e(rule.get('state', ''))}</td></tr>"
        )
    parts.append("</table>")
    return "\n".join(parts)


def complete_report(folder: JobFolder, fragment: str) -> bool:
    """Put `fragment` in the report's marked place; False when there is no report to fill
    (a job packaged before reports existed) or it was filled already."""
    path = folder.root / REPORT
    if not path.is_file() or path.is_symlink():
        return False
    mark = JOB_MARK.encode()
    with path.open("rb") as source:
        head = source.read(HEAD_BYTES)
        at = head.find(mark)
        if at < 0:
            return False
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as target:
            target.write(head[:at])
            target.write(fragment.encode("utf-8"))
            target.write(head[at + len(mark) :])
            shutil.copyfileobj(source, target, 1024 * 1024)
    temporary.replace(path)
    return True
