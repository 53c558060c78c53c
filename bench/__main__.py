"""make bench: start a private stack, run B1 to B12 each beside its baseline, print one table,
write the figures to var/bench/ (ignored by git: the README keeps the table).

Usage: python -m bench [--smoke] [--only B1,B3] [--out var/bench] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from .stack import ROOT, Stack

ORDER = ["B1", "B2", "B3", "B4", "B8", "B10", "B5", "B11", "B7", "B6", "B12", "B9"]


def table(rows) -> str:
    head = ["id", "measure", "lmweb", "baseline (same run)", "ratio", "goal", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.id, row.measure, row.lmweb, row.baseline, row.ratio, row.goal,
                 "yes" if row.met else "**no**"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict:
    def version(command):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"

    return {
        "commit": version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "makeflow": version(["/usr/bin/makeflow", "--version"]),
        "postgresql": version(["psql", "--version"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the code runs")
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. B1,B6")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/lmweb_bench"
        ),
    )
    parser.add_argument(
        "--broker-url", default=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
    )
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder")
    parser.add_argument(
        "--b9-randomizations", type=int, help="B9 at this many randomizations instead (10,000)"
    )
    args = parser.parse_args(argv)
    wanted = [i.strip().upper() for i in args.only.split(",") if i.strip()] or ORDER

    from . import continental, fairshare, heuchera, measures, remote

    sizes = measures.SMOKE if args.smoke else measures.FULL
    if args.b9_randomizations is not None:
        sizes = replace(sizes, b9_randomizations=args.b9_randomizations)
    root = Path(tempfile.mkdtemp(prefix="lmweb-bench-"))
    began = time.monotonic()

    def say(text: str) -> None:
        print(f"bench [{time.monotonic() - began:6.1f} s] {text}", flush=True)

    stack = Stack(root, database_url=args.database_url, broker_url=args.broker_url, controllers=8)
    rows = []
    try:
        say(f"stack in {root}")
        stack.prepare()
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        from .client import Api

        user = get_user_model().objects.create_user("bench", password=None)
        token = Token.objects.create(user=user).key
        api = Api(stack.url, token)
        stack.start_catalog()
        stack.start_web()
        bench = measures.Bench(stack, api, token, sizes, say)
        say("stack up")
        if "B1" in wanted:
            rows += bench.b1_api_load()
            bench.drop_queued_jobs()
        stack.start_controller()
        stack.start_workers(max_workers=measures.WORKERS)
        steps = {
            "B2": bench.b2_first_rule,
            "B3": bench.b3_overhead,
            "B4": bench.b4_rules_per_second,
            "B8": bench.b8_pam_stats,
            "B5": bench.b5_concurrent_jobs,
            "B11": lambda: fairshare.b11_fair_share(bench),
            "B7": bench.b7_scaling,
            "B6": bench.b6_download,
            "B10": lambda: continental.b10_continental(bench),
            "B12": lambda: remote.b12_worker_host(bench),
            "B9": lambda: heuchera.b9_heuchera(bench),
        }
        for key in ORDER[1:]:
            if key in wanted:
                rows += steps[key]()
    finally:
        stack.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows.sort(key=lambda row: int(row.id[1:]))
    text = table(rows)
    print(text, flush=True)
    elapsed = time.monotonic() - began
    say(f"done in {elapsed:.0f} s")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "smoke" if args.smoke else "full"
    record = {
        "when": stamp,
        "kind": kind,
        "seconds": elapsed,
        "machine": machine(),
        "sizes": asdict(sizes),
        "rows": [asdict(row) for row in rows],
    }
    (args.out / f"{stamp}-{kind}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (args.out / f"latest-{kind}.md").write_text(
        f"lmweb benchmarks, {stamp}, {elapsed:.0f} s, {record['machine']['cores']} cores\n\n"
        + text
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
