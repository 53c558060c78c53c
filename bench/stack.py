"""The benchmarks' private stack: the tests' launcher (tests/support/stack.py, which runs the
Procfile's own lines) with the benchmark's database, settings and limits."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.parse
from pathlib import Path

import psycopg

from jobs.cctools.processes import children
from tests.support import stack as support
from tests.support.stack import ROOT


def recreate_database(url: str) -> None:
    """Drop and create the benchmark's own database (never the product's or the tests')."""
    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith("lmweb_bench"):
        raise ValueError(f"the benchmark database must be named lmweb_bench*, not {name!r}")
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


class Stack(support.Stack):
    def __init__(self, root: Path, *, database_url: str, broker_url: str, controllers: int):
        super().__init__(
            root,
            database_url=database_url,
            broker_url=broker_url,
            deployment=f"b{secrets.token_hex(3)}",
            controllers=controllers,
            env={
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "DEBUG": "0",
                "SECRET_KEY": "bench-" + secrets.token_hex(24),
                "LMWEB_HTTPS": "0",
                "LMWEB_STATIC_ROOT": str(root / "static"),
                "LMWEB_LOG_LEVEL": "WARNING",
                # One user drives the whole load test; the product's per-user rates would
                # refuse it.
                "LMWEB_THROTTLE_USER": "100000000/hour",
                "LMWEB_THROTTLE_SUBMIT": "100000000/hour",
                "LMWEB_USER_MAX_QUEUED": "100000000",
                "LMWEB_USER_MAX_RUNNING": "1000",
            },
        )

    def prepare(self) -> None:
        """A fresh database, migrated, and the static files; this process's environment is the
        stack's from here on, so that the ORM here sees the same database."""
        recreate_database(self.database_url)
        os.environ.update(self.environment)
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput")

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start_controller(self) -> None:
        # Celery's own lines at WARNING, as the rest of the benchmark's stack logs.
        self.start("controller", "--loglevel", "WARNING")

    def start_workers(self, *, max_workers: int, cores: int = 1) -> None:
        """The direct pool only: the factory's catalog workers would add slots mid-measure."""
        self.stop("workers")
        super().start_workers(
            "--no-factory", "--max-workers", str(max_workers), "--cores", str(cores)
        )

    def web_pids(self) -> list[int]:
        web = self.processes["web"]
        return [web.pid, *(child.pid for child in children(web.pid))]
