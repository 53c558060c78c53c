"""B10: a continental study end to end: upload, inspection, pam-stats, package download."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from django.conf import settings

from jobs import inspection
from tests import synthetic

from . import direct
from .client import FINISHED, seconds_between
from .measures import Row, download_package

# The study: 7,033 species on the 0.5-degree grid of Australia (84 x 68 cells).
DENSITY = 0.022  # asked of the generator: edge-clipped ranges bring it to about 2 %
POLL = 0.05  # seconds between samples of the web's and the rules' memory
WEB_GROWTH_MB = 100
RULE_PEAK_MB = 2048
PAGE = os.sysconf("SC_PAGE_SIZE")


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident bytes), for every process, in one pass over /proc."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                text = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        try:
            found[int(name)] = (int(fields[1]), int(fields[21]) * PAGE)
        except (IndexError, ValueError):
            continue
    return found


def _descendants(root: int, table: dict[int, tuple[int, int]]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        kids.setdefault(parent, []).append(pid)
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        for child in kids.get(pid, []):
            found.append(child)
            pending.append(child)
    return found


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _rule_of(pid: int) -> str | None:
    """The rule a guard process runs (its LMWEB_RULE), None for any other process."""
    if b"guard.py" not in _read(f"/proc/{pid}/cmdline"):
        return None
    for item in _read(f"/proc/{pid}/environ").split(b"\0"):
        if item.startswith(b"LMWEB_RULE="):
            return item.partition(b"=")[2].decode(errors="replace")
    return "?"


class Memory:
    """Samples, every POLL seconds: the web's processes (gunicorn and its workers), the
    inspection subprocesses they start, and each rule's whole process tree (the guard on a
    worker of this stack and everything under it: the sum the guard holds to the rule's
    declared memory). Keeps each one's peak."""

    def __init__(self, web_pids: list[int], workers_pid: int):
        self.web_pids = web_pids
        self.workers_pid = workers_pid
        table = _processes()
        self.web_before = {pid: table.get(pid, (0, 0))[1] for pid in web_pids}
        self.web_peak = dict(self.web_before)
        self.inspection_peak = 0
        self.rule_peaks: dict[str, int] = {}
        self._guards: dict[int, str | None] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(POLL)

    def sample(self) -> None:
        table = _processes()
        for pid in self.web_pids:
            if pid in table:
                self.web_peak[pid] = max(self.web_peak[pid], table[pid][1])
        for pid in self.web_pids:
            for child in _descendants(pid, table):
                if b"jobs.inspect_worker" in _read(f"/proc/{child}/cmdline"):
                    self.inspection_peak = max(self.inspection_peak, table[child][1])
        for pid in _descendants(self.workers_pid, table):
            if pid not in self._guards:
                self._guards[pid] = _rule_of(pid)
            rule = self._guards[pid]
            if rule is None:
                continue
            held = table[pid][1] + sum(table[p][1] for p in _descendants(pid, table))
            self.rule_peaks[rule] = max(self.rule_peaks.get(rule, 0), held)

    @property
    def web_growth(self) -> int:
        return max(self.web_peak[pid] - self.web_before[pid] for pid in self.web_pids)


def _mb(count: int) -> float:
    return count / 1024**2


def b10_continental(bench) -> list:
    sizes, api, stack = bench.sizes, bench.api, bench.stack
    species, cells = sizes.b10_species, sizes.b10_columns * sizes.b10_rows
    data = stack.root / "b10"
    data.mkdir(exist_ok=True)
    started = time.monotonic()
    names = synthetic.continental_pam(
        data / "pam.lmm",
        species=species,
        columns=sizes.b10_columns,
        rows=sizes.b10_rows,
        density=DENSITY,
        seed=10,
    )
    (data / "tree.tre").write_bytes(synthetic.newick(names, seed=10))
    made = time.monotonic() - started
    presences = _presences(data / "pam.lmm")
    bench.say(
        f"B10: {species} species x {cells} sites, {presences:.2%} presences, made in {made:.1f} s"
        f" ({_mb((data / 'pam.lmm').stat().st_size):.1f} MB .lmm)"
    )
    figures: dict = {"species": species, "sites": cells, "presences": presences}
    # A first upload and read, so that the growth measured below is this study's, not the web
    # workers' first imports.
    (data / "warm-up.tre").write_bytes(synthetic.newick(names[:3]))
    api.upload(data / "warm-up.tre", "b10 warm-up")
    api.get("/workflows/")
    memory = Memory(stack.web_pids(), stack.processes["workers"].pid)
    with memory:
        start = time.monotonic()
        pam = api.upload(data / "pam.lmm", "b10 pam")
        tree = api.upload(data / "tree.tre", "b10 tree")
        figures["upload_s"] = time.monotonic() - start
        start = time.monotonic()
        job = api.submit(
            {
                "workflow": "pam-stats",
                "name": "b10 continental",
                "inputs": {"pam": pam["id"], "tree": tree["id"]},
                "params": {"randomizations": sizes.b10_randomizations},
            }
        )
        # Submission inspects both files (in the inspection subprocess) before it answers.
        figures["inspection_s"] = time.monotonic() - start
        job, figures["run_s"] = _follow(api, job["id"], sizes.b10_run_seconds, bench.say)
        complete = job["state"] == "COMPLETE"
        if complete:
            figures["download_s"], figures["package_bytes"] = download_package(bench, job["id"])
    figures.update(
        web_growth_mb=_mb(memory.web_growth),
        inspection_peak_mb=_mb(memory.inspection_peak),
        rule_peaks_mb={rule: round(_mb(held)) for rule, held in memory.rule_peaks.items()},
        state=job["state"],
        error=job.get("error"),
        rules=_rule_times(api, job["id"]),
        rule_declared_mb=_declared(bench.job_dir(job)),
    )
    worst = max(memory.rule_peaks.items(), key=lambda item: item[1], default=("none", 0))
    figures["peak_rule"], figures["peak_rule_mb"] = worst[0], _mb(worst[1])

    baseline = _baseline(bench, data, job if complete else None, figures)
    steps = f"upload {figures['upload_s']:.1f} s, inspection {figures['inspection_s']:.1f} s, " + (
        f"run {figures['run_s']:.0f} s, download {figures['download_s']:.1f} s"
        if complete
        else f"run not complete after {figures['run_s']:.0f} s ({_why(job)})"
    )
    lmweb = (
        f"{steps}; web +{figures['web_growth_mb']:.0f} MB; peak rule {worst[0]} "
        f"{figures['peak_rule_mb']:.0f} MB (declared "
        f"{figures['rule_declared_mb'].get(worst[0], '?')}); inspection "
        f"{figures['inspection_peak_mb']:.0f} MB"
    )
    met = (
        complete
        and figures["web_growth_mb"] <= WEB_GROWTH_MB
        and figures["peak_rule_mb"] <= RULE_PEAK_MB
    )
    if complete and figures.get("baseline_run_s"):
        ratio = f"{figures['run_s'] / figures['baseline_run_s']:.2f} (run)"
    else:
        ratio = "n/a"
    bench.say(f"B10: {lmweb}")
    bench.say(f"B10 baseline: {baseline}")
    return [
        Row(
            "B10",
            f"continental pam-stats: {species} species x {cells} sites ({presences:.1%} "
            f"presences), a {species}-tip tree, {sizes.b10_randomizations} randomizations; "
            "upload, inspection, run, package download",
            lmweb,
            baseline,
            ratio,
            f"completes; web growth <= {WEB_GROWTH_MB} MB; every rule <= {RULE_PEAK_MB} MB",
            bool(met),
            figures,
        )
    ]


def _presences(path: Path) -> float:
    from lmpy import Matrix

    return float(Matrix.load(str(path)).mean())


def _follow(api, job_id: str, seconds: float, say) -> tuple[dict, float]:
    """Poll the job until it finishes or `seconds` pass (then cancel it); the job and the
    seconds from submission to its end (or to the cancel)."""
    start = time.monotonic()
    deadline = start + seconds
    done = None
    while True:
        job = api.get(f"/jobs/{job_id}/")
        if job["state"] in FINISHED:
            if job.get("submitted_at") and job.get("finished_at"):
                return job, seconds_between(job["submitted_at"], job["finished_at"])
            return job, time.monotonic() - start
        if time.monotonic() > deadline and done is None:
            progress = job.get("progress") or {}
            say(f"B10: not finished in {seconds:.0f} s ({progress}): canceling")
            api.session.post(f"{api.base}/jobs/{job_id}/cancel/", timeout=60)
            done = time.monotonic() - start
        if done is not None and time.monotonic() > deadline + 300:
            return job, done
        # Under gunicorn's 2 s keep-alive: polling every 2 s raced the server closing the idle
        # connection ("Remote end closed connection without response").
        time.sleep(1 if seconds > 60 else 0.2)


def _why(job: dict) -> str:
    """The job's state and the first line of its error (the failed rule and its exit code)."""
    error = job.get("error") or {}
    message = str(error.get("message", "")).splitlines() if isinstance(error, dict) else []
    return f"{job['state']}: {message[0][:160]}" if message else job["state"]


def _rule_times(api, job_id: str) -> list[dict]:
    rows = []
    for task in api.tasks(job_id):
        seconds = None
        if task.get("started_at") and task.get("finished_at"):
            seconds = seconds_between(task["started_at"], task["finished_at"])
        rows.append(
            {
                "rule": task["rule"],
                "state": task["state"],
                "exit_code": task["exit_code"],
                "seconds": seconds,
            }
        )
    return rows


def _declared(job_dir: Path) -> dict[str, int]:
    """The memory (MB) each rule of the job declared: the limit its guard held it to."""
    declared = {}
    for stage in json.loads((job_dir / "stages.json").read_text())["started"]:
        document = json.loads((job_dir / f"{stage}.mf.json").read_text())
        categories = document.get("categories", {})
        for rule in document["rules"]:
            category = categories.get(rule.get("category", document.get("default_category")), {})
            resources = rule.get("resources") or category.get("resources") or {}
            name = (rule.get("environment") or {}).get("LMWEB_RULE")
            if name and "memory" in resources:
                declared[name] = resources["memory"]
    return declared


def _baseline(bench, data: Path, job: dict | None, figures: dict) -> str:
    """Each step without the service: the files read from disk, the same checks in this process,
    the job's own rule commands one after another by hand (when the job completed)."""
    start = time.monotonic()
    for name in ("pam.lmm", "tree.tre"):
        with (data / name).open("rb") as handle:
            while handle.read(1024**2):
                pass
    figures["baseline_read_s"] = time.monotonic() - start
    limits = inspection.Limits.from_settings(settings)
    start = time.monotonic()
    for content, name in (("pam", "pam.lmm"), ("tree", "tree.tre")):
        outcome = inspection.run_check(inspection.Check(content, str(data / name), {}), limits)
        if outcome.error:
            raise RuntimeError(f"B10 baseline: {name}: {outcome.error}")
    figures["baseline_checks_s"] = time.monotonic() - start
    text = (
        f"read {figures['baseline_read_s']:.2f} s, checks in one process "
        f"{figures['baseline_checks_s']:.1f} s"
    )
    if job is not None:
        figures["baseline_run_s"] = direct.serial(bench.job_dir(job), bench.folder("b10-serial"))
        text += f", rules serially by hand {figures['baseline_run_s']:.0f} s"
    return text
