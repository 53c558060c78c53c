"""`lmweb`: submit lmweb jobs from a terminal.

    lmweb submit pam-stats --pam heuchera.lmm --tree heuchera.nex -p randomizations=1000 \\
        --wait --download out/
    lmweb jobs [--state RUNNING]
    lmweb wait JOB [--download DIR]
    lmweb cancel JOB
    lmweb logs JOB [TASK] [--stream stdout|stderr] [-f]

The service and the token: --url/--token, else LMWEB_URL/LMWEB_TOKEN, else the config file
(LMWEB_CONFIG, or ~/.config/lmweb/config.ini: [lmweb] url = ..., token = ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .api import FINISHED, Client, ClientError, Settings, resolve_inputs


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _value(text: str):
    """A parameter's value: JSON where it reads as JSON (numbers, true, lists), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items, what: str) -> dict:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClientError(f"{what} {item!r}: expected NAME=VALUE")
        pairs[key] = value
    return pairs


def _input_options(extra: list[str], inputs: dict) -> list[tuple[str, str]]:
    """`--pam a.lmm --layers x.tif --layers y.tif` (or --name=value) as (input, value) pairs,
    each name matched to one of the workflow's inputs (a dash may stand for an underscore)."""
    names = {name.replace("_", "-"): name for name in inputs}
    pairs, rest = [], list(extra)
    while rest:
        option = rest.pop(0)
        if not option.startswith("--"):
            raise ClientError(f"unexpected argument {option!r}")
        key, sep, value = option[2:].partition("=")
        if not sep:
            if not rest:
                raise ClientError(f"--{key}: a file or a dataset id must follow")
            value = rest.pop(0)
        slot = names.get(key.replace("_", "-"))
        if slot is None:
            known = ", ".join(f"--{n}" for n in names) or "none"
            raise ClientError(f"--{key}: not an input of this workflow (its inputs: {known})")
        pairs.append((slot, value))
    return pairs


class Progress:
    """A progress bar of the job's rules (tqdm, on stderr) that also says the state."""

    def __init__(self, job_id: str):
        from tqdm import tqdm

        self.bar = tqdm(total=1, unit="rule", desc=f"{job_id[:8]} QUEUED", file=sys.stderr)

    def __call__(self, job: dict) -> None:
        progress = job.get("progress") or {}
        self.bar.total = max(progress.get("total") or 0, 1)
        self.bar.n = progress.get("done") or 0
        self.bar.set_description(f"{job['id'][:8]} {job['state']}")
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _wait_and_download(client: Client, job: dict, args) -> int:
    progress = Progress(job["id"])
    try:
        job = client.wait(job["id"], interval=args.interval, on_change=progress)
    finally:
        progress.close()
    _say(f"job {job['id']}: {job['state']}")
    if job["state"] != "COMPLETE":
        error = job.get("error") or {}
        _say(f"  {error.get('code', '')}: {error.get('message', '')}".rstrip(": "))
        return 1
    if args.download:
        folder = client.download(job, Path(args.download))
        _say(f"package verified and unpacked in {folder}")
    return 0


def cmd_submit(client: Client, args, extra: list[str]) -> int:
    workflow = client.workflow(args.workflow)
    given = _input_options(extra, workflow.get("inputs") or {})
    resolved = resolve_inputs(client, given, say=_say)
    inputs = {
        slot: ids if (workflow["inputs"][slot].get("many")) else ids[-1]
        for slot, ids in resolved.items()
    }
    params = {key: _value(value) for key, value in _pairs(args.param, "-p").items()}
    job = client.submit(
        args.workflow, inputs, params, name=args.name, tags=_pairs(args.tag, "--tag")
    )
    print(job["id"])
    _say(f"submitted: {job['url']}")
    if args.wait or args.download:
        return _wait_and_download(client, job, args)
    return 0


def cmd_wait(client: Client, args, extra) -> int:
    return _wait_and_download(client, client.job(args.job), args)


def cmd_jobs(client: Client, args, extra) -> int:
    jobs = client.jobs(state=args.state, limit=args.limit)
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    for job in jobs:
        progress = job.get("progress") or {}
        print(
            f"{job['id']}  {job['state']:<14} {job['workflow']:<20} "
            f"{progress.get('done', 0)}/{progress.get('total', 0)} rules  "
            f"{job['submitted_at']}  {job.get('name') or ''}".rstrip()
        )
    return 0


def cmd_cancel(client: Client, args, extra) -> int:
    job = client.cancel(args.job)
    print(f"{job['id']}: {job['state']}")
    return 0


def _task_key(task: dict) -> str:
    return f"{task['stage']}:{task['rule']}"


def cmd_logs(client: Client, args, extra) -> int:
    if not args.task:
        for task in client.tasks(args.job):
            print(
                f"{_task_key(task):<32} {task['state']:<9} exit {task['exit_code']!s:<5} "
                f"{task['host'] or '-':<22} {task['started_at'] or ''}"
            )
        return 0
    offset = 0
    out = sys.stdout.buffer
    while True:
        data, size = client.log(args.job, args.task, args.stream, offset)
        if data:
            out.write(data)
            out.flush()
            offset += len(data)
        if not args.follow:
            return 0
        if offset >= size and _finished(client, args.job, args.task):
            # The rule's output comes back when it ends: read once more after that.
            data, _ = client.log(args.job, args.task, args.stream, offset)
            out.write(data)
            out.flush()
            return 0
        time.sleep(args.interval)


def _finished(client: Client, job_id: str, task: str) -> bool:
    if client.job(job_id)["state"] in FINISHED:
        return True
    for item in client.tasks(job_id):
        if task in (_task_key(item), item["rule"]):
            return item["state"] in {"complete", "failed", "aborted"}
    return False


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="lmweb", description="Submit and follow lmweb jobs.", allow_abbrev=False
    )
    main.add_argument("--url", help="the service (default: LMWEB_URL, the config file)")
    main.add_argument("--token", help="an API token (default: LMWEB_TOKEN, the config file)")
    main.add_argument("--config", help="the config file (default ~/.config/lmweb/config.ini)")
    commands = main.add_subparsers(dest="command", required=True)

    submit = commands.add_parser(
        "submit",
        help="upload inputs (once each) and submit a job",
        description="Inputs are options named after the workflow's inputs (--pam FILE); a "
        "dataset id stands for a file uploaded before.",
        allow_abbrev=False,
    )
    submit.add_argument("workflow")
    submit.add_argument("-p", "--param", action="append", metavar="NAME=VALUE")
    submit.add_argument("--name", default="")
    submit.add_argument("--tag", action="append", metavar="KEY=VALUE")
    submit.add_argument("--wait", action="store_true", help="follow it with a progress bar")
    submit.add_argument("--download", metavar="DIR", help="then download and verify the package")
    submit.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    submit.set_defaults(run=cmd_submit)

    wait = commands.add_parser("wait", help="follow a job until it ends")
    wait.add_argument("job")
    wait.add_argument("--download", metavar="DIR")
    wait.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    wait.set_defaults(run=cmd_wait)

    jobs = commands.add_parser("jobs", help="your jobs, newest first")
    jobs.add_argument("--state")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(run=cmd_jobs)

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job")
    cancel.set_defaults(run=cmd_cancel)

    logs = commands.add_parser("logs", help="a job's rules, or one rule's output")
    logs.add_argument("job")
    logs.add_argument("task", nargs="?", help="<stage>:<rule>, or the rule's id")
    logs.add_argument("--stream", choices=["stdout", "stderr"], default="stderr")
    logs.add_argument("-f", "--follow", action="store_true", help="until the rule ends")
    logs.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    logs.set_defaults(run=cmd_logs)
    return main


def main(argv: list[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    if extra and args.command != "submit":
        parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        client = Client(Settings.load(args.url, args.token, args.config))
        return args.run(client, args, extra)
    except ClientError as exc:
        _say(f"lmweb: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
