"""Makeflow's log and Work Queue's transaction log, read with one tokenizer."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# Makeflow's node states, as numbered in its log.
STATES = {0: "waiting", 1: "running", 2: "complete", 3: "failed", 4: "aborted"}
ENDINGS = ("COMPLETED", "ABORTED", "FAILED")
LOG_DIR = "logs"
TAIL_BYTES = 4096


@dataclass(frozen=True)
class LogPaths:
    """Where start_makeflow tells makeflow to write, for one DAG file in one job folder."""

    workdir: Path
    dag: str

    @property
    def makeflowlog(self) -> Path:
        return self.workdir / f"{self.dag}.makeflowlog"

    @property
    def wqlog(self) -> Path:
        return self.workdir / f"{self.dag}.wqlog"

    @property
    def transactions(self) -> Path:
        # Work Queue writes its transaction log beside the -L file, with ".tr" appended.
        return self.workdir / f"{self.dag}.wqlog.tr"

    @property
    def stdout(self) -> Path:
        return self.workdir / f"{self.dag}.stdout"

    @property
    def stderr(self) -> Path:
        return self.workdir / f"{self.dag}.stderr"

    @property
    def port_file(self) -> Path:
        return self.workdir / f"{self.dag}.port"

    def failed_dir(self, node_id: int) -> Path:
        # Named by node id (not by attempt): each failed attempt replaces the previous one's files.
        return self.workdir / f"makeflow.failed.{node_id}"


@dataclass(frozen=True)
class Progress:
    total: int = 0
    waiting: int = 0
    running: int = 0
    complete: int = 0
    failed: int = 0
    aborted: int = 0
    started: bool = False
    ended: str | None = None
    runs: int = 0  # how many times makeflow started on this log (resumes add one each)

    @property
    def stuck(self) -> bool:
        """Nothing in flight yet rules wait: makeflow under -T wq spins forever in this state.

        It happens when a rule failed for good and others depend on it (makeflow only leaves its
        loop once no remote rule is waiting). Any other waiting rule would be submitted at once,
        so the state is only meaningful when it persists (see LogFollower.stuck_for).
        """
        return self.started and self.ended is None and self.running == 0 and self.waiting > 0


def outcome(progress: Progress) -> str:
    """success, failed, aborted or incomplete; makeflow's exit code and end marker cannot tell."""
    if progress.total == 0:
        return "success" if progress.ended == "COMPLETED" else "incomplete"
    if progress.complete == progress.total and progress.failed == 0 and progress.aborted == 0:
        return "success"
    if progress.failed > 0 or progress.ended == "FAILED":
        return "failed"
    if progress.aborted > 0 or progress.ended == "ABORTED":
        return "aborted"
    return "incomplete"


# ---------------------------------------------------------------------------------------------
# The one tokenizer: makeflow's log and Work Queue's transaction log share a line syntax.


@dataclass(frozen=True)
class Marker:
    """'# WORD rest': STARTED, COMPLETED, ABORTED, FAILED, or the verbose header (NODE...)."""

    word: str
    rest: str  # after the word: a time stamp, or the node id and values, tab-separated


@dataclass(frozen=True)
class Record:
    """A time-stamped line: a node's change in makeflow's log, an event in Work Queue's."""

    time_us: int
    fields: tuple[str, ...]  # the whitespace-separated fields after the time stamp


Token = Marker | Record


def tokenize(line: str) -> Token | None:
    """One line of either log; None for anything else (comments, partial or foreign lines)."""
    if line.startswith("# "):
        # '# STARTED 123', but '# NODE\t1\tcmd with spaces': the word ends at a tab if one
        # comes before the first space.
        word, _, rest = line[2:].partition(" ")
        if "\t" in word:
            word, _, rest = line[2:].partition("\t")
        return Marker(word, rest)
    if line[:1].isdigit():
        parts = line.split()
        try:
            return Record(int(parts[0]), tuple(parts[1:]))
        except ValueError:
            return None
    return None


def tokens(text: str) -> Iterator[Token]:
    for line in text.splitlines():
        token = tokenize(line)
        if token is not None:
            yield token


@dataclass(frozen=True)
class NodeChange:
    """A makeflow log record: a node's new state, and the counts of all nodes after it."""

    time_us: int
    node: int
    state: int
    job: int
    counts: tuple[int, int, int, int, int, int]  # waiting running complete failed aborted total


def node_change(token: Token | None) -> NodeChange | None:
    if not isinstance(token, Record) or len(token.fields) != 9:
        return None
    try:
        node, state, job, w, r, c, f, a, t = (int(value) for value in token.fields)
    except ValueError:
        return None
    return NodeChange(token.time_us, node, state, job, (w, r, c, f, a, t))


class LogFollower:
    """Reads a makeflow log incrementally: each update() reads only what was appended since."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._reset()
        self._stuck_since: float | None = None
        self._stuck_lines = -1

    def _reset(self) -> None:
        self._offset = 0
        self._identity: tuple[int, int] | None = None
        self._partial = b""
        self._nodes: set[int] = set()
        self._states: dict[int, int] = {}
        self._counts: tuple[int, ...] | None = None
        self._started = False
        self._ended: str | None = None
        self._runs = 0
        self._lines = 0

    def update(self) -> Progress:
        try:
            with self.path.open("rb") as handle:
                info = os.fstat(handle.fileno())
                identity = (info.st_dev, info.st_ino)
                # A new file (log removed for a fresh start) or a shorter one: read it again whole.
                if identity != self._identity or info.st_size < self._offset:
                    self._reset()
                    self._identity = identity
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            self._reset()
            chunk = b""
        if chunk:
            self._offset += len(chunk)
            data = self._partial + chunk
            *lines, self._partial = data.split(b"\n")
            for raw in lines:
                self._consume(raw.decode("utf-8", errors="replace"))
        progress = self.progress()
        self._track_stuck(progress)
        return progress

    def _consume(self, line: str) -> None:
        token = tokenize(line)
        change = node_change(token)
        if change is not None:
            self._states[change.node] = change.state
            self._counts = change.counts
            self._lines += 1
        if not isinstance(token, Marker):
            return
        if token.word == "STARTED":
            self._started = True
            self._ended = None
            self._runs += 1
            self._lines += 1
        elif token.word in ENDINGS:
            self._ended = token.word
            self._lines += 1
        elif token.word == "NODE":
            node, _, _ = token.rest.partition("\t")
            if node.isdigit():
                self._nodes.add(int(node))

    def progress(self) -> Progress:
        if self._counts is None:
            # No rule changed state yet: --log-verbose's header still tells how many rules exist.
            total = len(self._nodes)
            return Progress(
                total=total,
                waiting=total,
                started=self._started,
                ended=self._ended,
                runs=self._runs,
            )
        waiting, running, complete, failed, aborted, total = self._counts
        return Progress(
            total=total,
            waiting=waiting,
            running=running,
            complete=complete,
            failed=failed,
            aborted=aborted,
            started=self._started,
            ended=self._ended,
            runs=self._runs,
        )

    def _track_stuck(self, progress: Progress) -> None:
        if not progress.stuck:
            self._stuck_since = None
        elif self._stuck_since is None or self._lines != self._stuck_lines:
            self._stuck_since = time.monotonic()
        self._stuck_lines = self._lines

    def stuck_for(self) -> float:
        """Seconds the log has shown Progress.stuck with no new event (0.0 when not stuck)."""
        if self._stuck_since is None:
            return 0.0
        return time.monotonic() - self._stuck_since

    @property
    def states(self) -> dict[int, str]:
        """The last state of every node seen so far."""
        return {node: STATES.get(state, str(state)) for node, state in self._states.items()}


def read_progress(log_path: Path | str) -> Progress:
    """One-shot progress of a makeflow log; a missing file reads as not started."""
    return LogFollower(log_path).update()


# ---------------------------------------------------------------------------------------------
# Rules: the verbose header, every state change, and Work Queue's view of each task.


@dataclass
class RuleRecord:
    node_id: int
    rule: str  # the translator's rule id (from logs/<id>.stderr), else "node-<node_id>"
    command: str | None = None
    category: str | None = None
    parents: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    state: str = "waiting"
    attempts: int = 0  # times it ran on a worker, over all runs (resumes included)
    task_id: int | None = None  # Work Queue task id of the last submission (ids restart per run)
    host: str | None = None  # worker address (host:port) of the last submission
    result: str | None = None  # Work Queue result of the last submission: SUCCESS, OUTPUT_MISS...
    exit_code: int | None = None
    submitted_at: datetime | None = None  # handed to Work Queue
    started_at: datetime | None = None  # running on a worker
    finished_at: datetime | None = None


@dataclass
class _Task:
    host: str | None = None
    running_at: datetime | None = None
    done_at: datetime | None = None
    result: str | None = None
    exit_code: int | None = None


@dataclass
class _TrRun:
    started_us: int
    tasks: dict[int, _Task] = field(default_factory=dict)


_LOG_RULE = re.compile(rf"^{LOG_DIR}/(.+)\.stderr$")


def _when(time_us: int) -> datetime:
    return datetime.fromtimestamp(time_us / 1e6, tz=UTC)


def _rule_id(node_id: int, targets: list[str]) -> str:
    for target in targets:
        match = _LOG_RULE.match(target)
        if match:
            return match.group(1)
    return f"node-{node_id}"


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _read_transactions(path: Path) -> list[_TrRun]:
    """Work Queue's transaction log, split by manager start (one per makeflow run)."""
    runs: list[_TrRun] = []
    for token in tokens(_read_text(path)):
        if not isinstance(token, Record) or len(token.fields) < 3:
            continue
        # time manager_pid MANAGER START, time manager_pid TASK id EVENT ...
        subject = token.fields[1:]
        if subject[:2] == ("MANAGER", "START"):
            runs.append(_TrRun(token.time_us))
            continue
        if subject[0] != "TASK" or not runs or len(subject) < 3:
            continue
        try:
            task_id = int(subject[1])
        except ValueError:
            continue
        task = runs[-1].tasks.setdefault(task_id, _Task())
        event = subject[2]
        if event == "RUNNING" and len(subject) > 3:
            task.host = subject[3]
            task.running_at = _when(token.time_us)
        elif event == "DONE" and len(subject) > 4:
            # TASK id DONE result exit_code {limits} {measured}
            task.done_at = _when(token.time_us)
            task.result = subject[3]
            try:
                task.exit_code = int(subject[4])
            except ValueError:
                task.exit_code = None
    return runs


def _match_runs(log_starts: list[int], tr_runs: list[_TrRun]) -> dict[int, _TrRun]:
    """Pair each makeflow run (its # STARTED time) with the Work Queue manager it created.

    Both are stamped within milliseconds of each other; a run that died before # STARTED may
    have left a manager without a partner, so pair by time rather than by position.
    """
    pairs: dict[int, _TrRun] = {}
    for index, started in enumerate(log_starts):
        best = min(tr_runs, key=lambda run: abs(run.started_us - started), default=None)
        if best is not None and abs(best.started_us - started) < 30_000_000:
            pairs[index] = best
    return pairs


def read_rules(workdir: Path | str, dag_name: str) -> list[RuleRecord]:
    """One record per makeflow node (needs --log-verbose for commands), ordered by node id."""
    paths = LogPaths(Path(workdir), dag_name)
    rules: dict[int, RuleRecord] = {}
    starts: list[int] = []
    # (run index, node) -> task id of that node's latest submission in that run
    submissions: list[tuple[int, int, int]] = []

    def rule(node: int) -> RuleRecord:
        return rules.setdefault(node, RuleRecord(node_id=node, rule=f"node-{node}"))

    for token in tokens(_read_text(paths.makeflowlog)):
        change = node_change(token)
        if change is not None:
            record = rule(change.node)
            record.state = STATES.get(change.state, str(change.state))
            when = _when(change.time_us)
            if change.state == 1 and starts:
                record.task_id = change.job
                record.submitted_at = when
                record.started_at = None
                record.finished_at = None
                record.host = record.result = record.exit_code = None
                submissions.append((len(starts) - 1, change.node, change.job))
            elif change.state in (2, 3, 4):
                record.finished_at = when
            continue
        if not isinstance(token, Marker):
            continue
        word, rest = token.word, token.rest
        if word == "STARTED":
            try:
                starts.append(int(rest.split()[0]))
            except (ValueError, IndexError):
                starts.append(0)
            continue
        fields = rest.split("\t")
        if word not in {"NODE", "CATEGORY", "PARENTS", "SOURCES", "TARGETS", "COMMAND"}:
            continue
        if not fields or not fields[0].isdigit():
            continue
        record = rule(int(fields[0]))
        values = [value for value in fields[1:] if value != ""]
        if word in {"NODE", "COMMAND"}:
            # The command may itself hold tabs: keep everything after the node id.
            record.command = rest.split("\t", 1)[1] if "\t" in rest else ""
        elif word == "CATEGORY":
            record.category = values[0] if values else None
        elif word == "PARENTS":
            record.parents = [int(value) for value in values if value.isdigit()]
        elif word == "SOURCES":
            record.sources = values
        elif word == "TARGETS":
            record.targets = values
            record.rule = _rule_id(record.node_id, values)

    pairs = _match_runs(starts, _read_transactions(paths.transactions))
    ran: dict[int, int] = {}
    latest: dict[int, tuple[int, int]] = {}
    for run, node, task_id in submissions:
        latest[node] = (run, task_id)
        tr_run = pairs.get(run)
        task = tr_run.tasks.get(task_id) if tr_run else None
        if tr_run is None or (task is not None and task.running_at is not None):
            ran[node] = ran.get(node, 0) + 1
    for node, record in rules.items():
        # Submissions that never reached a worker (makeflow stopped first) are not attempts.
        record.attempts = ran.get(node, 0)
    for node, (run, task_id) in latest.items():
        tr_run = pairs.get(run)
        task = tr_run.tasks.get(task_id) if tr_run else None
        if task is None:
            continue
        record = rules[node]
        record.host = task.host
        record.started_at = task.running_at
        record.result = task.result
        record.exit_code = task.exit_code
    return [rules[node] for node in sorted(rules)]


# ---------------------------------------------------------------------------------------------
# Failures


@dataclass(frozen=True)
class FailureDetail:
    node_id: int
    rule: str
    command: str | None
    exit_code: int | None
    stderr_tail: str
    attempts: int
    host: str | None


def tail_text(path: Path, limit: int = TAIL_BYTES) -> str | None:
    """The last `limit` bytes of a file as text, or None if it does not exist."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - limit))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def _info_exit_code(info_path: Path) -> int | None:
    # makeflow writes INFO.json with \' escapes (not JSON) when the command holds quotes.
    text = _read_text(info_path)
    if not text:
        return None
    try:
        value = json.loads(text.replace("\\'", "'")).get("exit_code")
        return int(value) if value is not None else None
    except (ValueError, AttributeError, TypeError):
        match = re.search(r'"exit_code"\s*:\s*(-?\d+)', text)
        return int(match.group(1)) if match else None


_STATUS_LINE = re.compile(
    r"^(submitting job: |submitted job \d+$|job \d+ completed$|deleted makeflow\.failed\.\d+$"
    r"|listening for workers|starting workflow|nothing left to do|aborting |got abort signal"
    r"|checking |parsing |local resources|max running|recovering from log|creating new log"
    r"|will retry failed rule|.+ has \d+ rules\.$|found \d+ errors)"
)


def _task_output(stdout_path: Path, task_id: int) -> str | None:
    """What Work Queue captured of a task (makeflow prints it just before 'job N completed').

    Only the last run is searched: task ids restart at 1 each time makeflow starts.
    """
    text = _read_text(stdout_path)
    if not text:
        return None
    lines = text.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("starting workflow"):
            lines = lines[index:]
            break
    collected: list[str] = []
    found = None
    for line in lines:
        if line == f"job {task_id} completed":
            found = collected
        if _STATUS_LINE.match(line):
            collected = []
        else:
            collected.append(line)
    if not found:
        return None
    return "\n".join(found)[-TAIL_BYTES:]


def failure_detail(workdir: Path | str, dag_name: str) -> FailureDetail | None:
    """The first rule that failed for good: its command, exit code and the tail of its stderr.

    Makeflow moves a failed rule's outputs (logs included) to makeflow.failed.<node id>/; its
    exit code is in Work Queue's transaction log and in that folder's INFO.json.
    """
    paths = LogPaths(Path(workdir), dag_name)
    failed = [record for record in read_rules(workdir, dag_name) if record.state == "failed"]
    if not failed:
        return None
    record = min(failed, key=lambda item: (item.finished_at or _when(0), item.node_id))
    failed_dir = paths.failed_dir(record.node_id)
    exit_code = record.exit_code
    if exit_code is None:
        exit_code = _info_exit_code(failed_dir / "INFO.json")
    stderr = None
    for target in record.targets:
        if _LOG_RULE.match(target):
            stderr = tail_text(failed_dir / target) or tail_text(paths.workdir / target)
            break
    if not stderr and record.task_id is not None:
        # No stderr file (the rule died before its redirection, or has none): fall back on the
        # task's own output that makeflow printed.
        stderr = _task_output(paths.stdout, record.task_id)
    return FailureDetail(
        node_id=record.node_id,
        rule=record.rule,
        command=record.command,
        exit_code=exit_code,
        stderr_tail=stderr or "",
        attempts=record.attempts,
        host=record.host,
    )
