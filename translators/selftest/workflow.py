"""selftest: N independent sleeps and a gather, for health checks and benchmarks (no lmpy)."""

from __future__ import annotations

from translators.base import SCHEMA_DIALECT, Stage, Workflow
from translators.common.args import number_arg
from translators.common.chunks import groups
from translators.makeflow import Category, Command, Rule, render_makeflow
from translators.report import report_files, report_step

STAGE = "main"
OUTPUT = "outputs/selftest.txt"
# One `cat` of 10,000 paths would pass MAX_COMMAND_CHARS; above this many tasks the gather goes
# through groups of this size, so no command grows with the task count.
GATHER_FANIN = 100
CATEGORIES = {
    "selftest": Category(cores=1, memory=64, disk=64),
    "gather": Category(cores=1, memory=64, disk=256),
}


# A task that fills memory, then sleeps: python3 -c FILL MEGABYTES SECONDS.
FILL = "import sys, time; held = b'x' * (int(sys.argv[1]) << 20); time.sleep(float(sys.argv[2]))"

# A task that says how far it is on stderr, every second: python3 -c PROGRESS SECONDS (the
# live logs show it while it runs).
PROGRESS = """import sys, time
seconds = float(sys.argv[1])
start = time.monotonic()
while (done := time.monotonic() - start) < seconds:
    print(f"selftest: {done:.0f} of {seconds:g} s", file=sys.stderr, flush=True)
    time.sleep(min(1.0, seconds - done))
print(f"selftest: {seconds:g} s done", file=sys.stderr, flush=True)
"""

# A failing task says so on stderr, as a real tool would, then exits non-zero.
FAIL = Command(("sh", "-c", "echo 'selftest: this task fails on purpose' >&2; exit 3"))


def _seconds_arg(seconds: float) -> str:
    # Fixed-point text to the millisecond: `sleep` must never see an exponent such as 1e-05.
    return number_arg(round(float(seconds), 3))


class SelfTest(Workflow):
    name = "selftest"
    title = "Self test"
    description = (
        "Runs `tasks` independent tasks that each sleep `seconds` and write a small file, then "
        "gathers the files into outputs/selftest.txt. It uses no lmpy and no inputs: use it to "
        "check that workers are reachable and to measure scheduling overhead."
    )
    params_schema = {
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "properties": {
            "tasks": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10000,
                "default": 10,
                "description": "Number of independent tasks.",
            },
            "seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": 600,
                "default": 1,
                "description": "How long each task sleeps, in seconds (millisecond resolution).",
            },
            "memory_mb": {
                "type": "integer",
                "minimum": 0,
                "maximum": 4096,
                "default": 0,
                "description": (
                    "Memory (MB) each task fills while it sleeps. Tasks declare 64 MB, so a "
                    "larger value checks that workers hold rules to their declared memory: those "
                    "tasks are killed and the job fails naming the limit."
                ),
            },
            "progress": {
                "type": "boolean",
                "default": False,
                "description": (
                    "Each task says how far it is on stderr every second (see a running "
                    "task's log grow: GET /api/v1/jobs/{id}/tasks/{task}/log). No memory_mb."
                ),
            },
            "fail": {
                "type": "integer",
                "minimum": 0,
                "maximum": 10000,
                "default": 0,
                "description": (
                    "How many of the tasks (the last ones) exit with code 3 after sleeping, to "
                    "check that failures are reported. Capped at `tasks`."
                ),
            },
        },
        "additionalProperties": False,
    }
    dataset_inputs = {}
    example = {
        "workflow": "selftest",
        "name": "Ten one-second tasks",
        "params": {"tasks": 10, "seconds": 1, "fail": 0, "memory_mb": 0, "progress": False},
        "tags": {"purpose": "health-check"},
    }

    def next_stage(self, params, inputs, done, produced):
        if STAGE in done:
            return None
        tasks = params["tasks"]
        sleep = _seconds_arg(params["seconds"])
        memory = params.get("memory_mb", 0)
        work = ["python3", "-c", FILL, str(memory), sleep] if memory else ["sleep", sleep]
        if params.get("progress"):
            work = ["python3", "-c", PROGRESS, sleep]
        first_failing = tasks - min(params.get("fail", 0), tasks) + 1
        width = max(5, len(str(tasks)))
        rules = []
        parts = []
        for number in range(1, tasks + 1):
            rule_id = f"task-{number:0{width}d}"
            target = f"work/{rule_id}.txt"
            rules.append(
                Rule(
                    rule_id,
                    work,
                    inputs=[],
                    outputs=[target],
                    category="selftest",
                    then=[
                        *([FAIL] if number >= first_failing else []),
                        Command(("echo", rule_id, "ok"), stdout=target),
                    ],
                )
            )
            parts.append(target)
        if len(parts) > GATHER_FANIN:
            task_files, parts = parts, []
            for number, group in enumerate(groups(task_files, GATHER_FANIN), start=1):
                rule_id = f"gather-{number:03d}"
                target = f"work/{rule_id}.txt"
                rules.append(
                    Rule(rule_id, ["cat", "--", *group], group, [target], "gather", stdout=target)
                )
                parts.append(target)
        # The report (no figures: nothing here to draw) is the gather's second step, not a
        # rule of its own: one more dispatch would add to every benchmark of scheduling.
        report, report_inputs, report_outputs = report_step([], [])
        rules.append(
            Rule(
                "gather",
                ["cat", "--", *parts],
                [*parts, *report_inputs],
                [OUTPUT, *report_outputs],
                "gather",
                stdout=OUTPUT,
                then=[report],
            )
        )
        files = report_files(self.title, self.name, params, inputs, [], [OUTPUT])
        makeflow = render_makeflow(rules, CATEGORIES, "selftest", sources=list(files))
        return Stage(STAGE, makeflow, files)


WORKFLOW = SelfTest()
