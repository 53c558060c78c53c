"""A private lmweb stack for the benchmarks, as the Procfile runs it: gunicorn, a Celery
controller, a catalog server and the worker pool, on PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from jobs.cctools.catalog import start_catalog_server, wait_for_catalog
from jobs.cctools.processes import children, stop_process

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recreate_database(url: str) -> None:
    """Drop and create the benchmark's own database (never the product's or the tests')."""
    import psycopg

    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith("lmweb_bench"):
        raise ValueError(f"the benchmark database must be named lmweb_bench*, not {name!r}")
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


class Stack:
    def __init__(self, root: Path, *, database_url: str, broker_url: str, controllers: int):
        self.root = root
        self.database_url = database_url
        self.broker_url = broker_url
        self.controllers = controllers
        self.port = free_port()
        self.catalog_port = free_port()
        self.catalog = f"127.0.0.1:{self.catalog_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.deployment = f"b{secrets.token_hex(3)}"
        self.password_file = root / "secrets" / "wq.password"
        self.processes: dict[str, subprocess.Popen] = {}

    # The environment of every process, the benchmark's own included (os.environ is updated
    # before Django is set up, so the ORM here sees the same database).
    def env(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + secrets.token_hex(24),
            "LMWEB_HTTPS": "0",
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.broker_url,
            "LMWEB_DATA_DIR": str(self.root / "data"),
            "LMWEB_STATIC_ROOT": str(self.root / "static"),
            "LMWEB_SCRATCH_DIR": str(self.root / "wq-scratch"),
            "LMWEB_CATALOG": self.catalog,
            "LMWEB_WQ_PASSWORD_FILE": str(self.password_file),
            "LMWEB_DEPLOYMENT": self.deployment,
            "LMWEB_LOG_LEVEL": "WARNING",
            # One user drives the whole load test; the product's per-user rates would refuse it.
            "LMWEB_THROTTLE_USER": "100000000/hour",
            "LMWEB_THROTTLE_SUBMIT": "100000000/hour",
            "LMWEB_USER_MAX_QUEUED": "100000000",
            "LMWEB_USER_MAX_RUNNING": "1000",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }

    def prepare(self) -> None:
        for folder in ("data", "static", "wq-scratch", "secrets", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(secrets.token_hex(16) + "\n")
        self.password_file.chmod(0o600)
        recreate_database(self.database_url)
        os.environ.update(self.env())
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput")

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**os.environ, **self.env()},
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.root / "logs" / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **self.env()},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.processes[name] = popen
        return popen

    def stop(self, name: str) -> None:
        popen = self.processes.pop(name, None)
        if popen is not None:
            stop_process(popen, grace=10)

    def start_catalog(self) -> None:
        self.processes["catalog"] = start_catalog_server(
            port=self.catalog_port,
            history_dir=self.root / "catalog",
            log_path=self.root / "logs" / "catalog.log",
            lifetime=300,
        )
        wait_for_catalog(self.catalog, timeout=10)

    def start_web(self) -> None:
        # As the Procfile runs it.
        self.start(
            "web",
            [sys.executable, "-m", "gunicorn", "lmweb.wsgi", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "2", "--threads", "4", "--graceful-timeout", "10"],
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if time.monotonic() > deadline or self.processes["web"].poll() is not None:
                raise RuntimeError(f"gunicorn did not start: see {self.root}/logs/web.log")
            time.sleep(0.1)

    def start_controller(self) -> None:
        self.start(
            "controller",
            [sys.executable, "-m", "celery", "-A", "lmweb", "worker", "-Q", "lmweb-jobs",
             "-c", str(self.controllers), "-n", f"controller-{self.deployment}@%h", "-O", "fair",
             "-l", "WARNING", "--without-gossip", "--without-mingle"],
        )  # fmt: skip

    def start_workers(self, *, max_workers: int, cores: int = 1) -> None:
        """The direct pool only: the factory's catalog workers would add slots mid-measure."""
        self.stop("workers")
        log = self.root / "logs" / "workers.log"
        banners = log.read_text().count("workers: up to") if log.exists() else 0
        popen = self.start(
            "workers",
            [sys.executable, "manage.py", "lmweb_workers", "--no-factory",
             "--max-workers", str(max_workers), "--cores", str(cores)],
        )  # fmt: skip
        # Ready when it says so (Django takes seconds to start): a job submitted before would
        # wait for the pool, and the measure would count that start.
        deadline = time.monotonic() + 60
        while log.read_text().count("workers: up to") == banners:
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker pool did not start: see {log}")
            time.sleep(0.05)

    def web_pids(self) -> list[int]:
        web = self.processes["web"]
        return [web.pid, *(child.pid for child in children(web.pid))]

    def close(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)


def kill_session(popen: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
