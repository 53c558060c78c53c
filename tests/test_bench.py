"""The benchmark code keeps working: `python -m bench --smoke` runs every measure at a tiny
size on its own stack (real gunicorn, Celery, makeflow, workers, PostgreSQL and Redis) and
writes its table. No figure is judged here: timing belongs to make bench, not to the suite."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import ORDER

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def test_the_bench_smoke_run_measures_everything(tmp_path):
    from django.conf import settings

    database = settings.DATABASES["default"]
    # Named after this run's test database: two runs on one server do not drop each other's.
    name = f"lmweb_bench_smoke_{database['NAME']}"
    url = f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{name}"
    # Its own Redis database (queue names are the product's): BENCH_BROKER_URL, as make bench
    # reads it, where several runs share one Redis.
    broker = os.environ.get("BENCH_BROKER_URL") or (
        settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/13"
    )
    env = {**os.environ, "BENCH_DATABASE_URL": url, "BENCH_BROKER_URL": broker}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*-smoke.json")]
    ids = [row["id"] for row in record["rows"]]
    assert sorted(set(ids)) == sorted(ORDER), ids
    for row in record["rows"]:
        assert row["lmweb"] and row["baseline"], row
        assert isinstance(row["met"], bool)
    table = (tmp_path / "latest-smoke.md").read_text()
    assert "| B1 |" in table and "| B8 |" in table
    assert "| id | measure |" in done.stdout
