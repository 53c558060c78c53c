"""The one launcher of a private lmweb stack, for the integration tests and the benchmarks.

Every process runs its own line of the Procfile (as honcho runs it for `make run`: `/bin/sh -c`),
so the Procfile, the tests and the benchmarks cannot drift apart. Only the environment differs:
ports, folders, database and broker of the stack's own. Arguments a caller adds are appended to
the Procfile's command.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from honcho.environ import parse_procfile

from jobs.cctools.catalog import query_catalog
from jobs.cctools.processes import stop_process

from .ports import free_port, listening

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile"

# What `manage.py lmweb_workers` prints once its pool is up.
BANNER = "workers: up to"

# Heartbeats, polls and recovery within seconds, for tests that kill processes and wait for
# the stack to notice.
QUICK_RECOVERY = {
    "LMWEB_POLL_MILLISECONDS": "250",
    "LMWEB_HEARTBEAT_SECONDS": "1",
    "LMWEB_STALE_SECONDS": "8",
    "LMWEB_RECOVER_SECONDS": "2",
}


def procfile_commands() -> dict[str, str]:
    """The Procfile's processes by name: catalog, web, controller, housekeeper, scheduler..."""
    return dict(parse_procfile(PROCFILE.read_text()).processes)


class Stack:
    """Processes named as in the Procfile, on a folder, ports, database and broker of their own.

    The caller picks which processes to start; each one's output goes to `logs/<name>.log`.
    """

    def __init__(
        self,
        root: Path,
        *,
        database_url: str,
        broker_url: str | None,
        deployment: str,
        controllers: int = 3,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.password_file = root / "secrets" / "wq.password"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.catalog_port = free_port()
        self.catalog = f"127.0.0.1:{self.catalog_port}"
        self.redis_socket = root / "run" / "redis.sock"
        self.deployment = deployment
        self.database_url = database_url
        # None: the Procfile's private Redis on its socket, as `make run` without a broker.
        self.broker_url = broker_url or f"redis+socket://{self.redis_socket}"
        self.commands = procfile_commands()
        self.processes: dict[str, subprocess.Popen] = {}
        self._started: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
        # The variables the Procfile's lines and lmweb/settings.py read, as
        # scripts/stack-env.sh sets them for `make run`.
        self.environment = {
            "LMWEB_VAR": str(root),
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": self.broker_url,
            "LMWEB_REDIS_SOCKET": str(self.redis_socket),
            "LMWEB_DATA_DIR": str(self.data_dir),
            "LMWEB_SCRATCH_DIR": str(root / "scratch"),
            "LMWEB_PORT": str(self.port),
            "LMWEB_CATALOG_PORT": str(self.catalog_port),
            "LMWEB_CATALOG_BIND": "127.0.0.1",
            "LMWEB_CATALOG": self.catalog,
            "LMWEB_WQ_PASSWORD_FILE": str(self.password_file),
            "LMWEB_DEPLOYMENT": deployment,
            "LMWEB_CONTROLLERS": str(controllers),
            "PYTHONUNBUFFERED": "1",
            # This interpreter's celery, gunicorn and python, whichever virtualenv it is.
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            **(env or {}),
        }
        for folder in ("data", "scratch", "logs", "run", "catalog", "redis", "secrets"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "secrets").chmod(0o700)
        if not self.password_file.exists():
            self.password_file.write_text(os.urandom(16).hex() + "\n")
            self.password_file.chmod(0o600)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of the stack's processes: this one's, with the stack's on top."""
        return {**os.environ, **self.environment, **(extra or {})}

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def start(
        self, name: str, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Start the Procfile's `name` line, `args` appended, in a session of its own."""
        command = " ".join([self.commands[name], *map(shlex.quote, args)])
        environment = self.env(env)
        with self.log_path(name).open("ab") as log:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.processes[name] = popen
        self._started[name] = (args, dict(env or {}))
        return popen

    def restart(self, name: str) -> subprocess.Popen:
        """Start `name` again as it was last started."""
        args, env = self._started[name]
        return self.start(name, *args, env=env)

    def stop(self, name: str, grace: float = 15) -> None:
        """SIGTERM, then SIGKILL of its whole session after `grace` seconds."""
        popen = self.processes.pop(name, None)
        if popen is not None:
            stop_process(popen, grace=grace)

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything in its session, as a crash would."""
        popen = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=10)

    def close(self, grace: float = 15) -> None:
        """Stop everything, the last started first (the catalog and the broker outlive their
        users)."""
        for name in reversed(list(self.processes)):
            self.stop(name, grace=grace)

    # Start and wait until ready.

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        popen = self.processes[name]
        while not ready():
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: see {self.log_path(name)}")
            time.sleep(0.05)

    def start_catalog(self, timeout: float = 10) -> None:
        self.start("catalog")
        self._wait("catalog", lambda: _answers(self.catalog), timeout)

    def start_redis(self, timeout: float = 10) -> None:
        """The Procfile's private Redis on its socket (the broker when `broker_url` is None)."""
        self.start("redis")
        self._wait("redis", lambda: _redis_answers(self.redis_socket), timeout)

    def start_web(self, *args: str, timeout: float = 60) -> None:
        self.start("web", *args)
        self._wait("web", lambda: listening(self.port), timeout)

    def start_workers(self, *args: str, timeout: float = 60) -> None:
        """The worker pool, ready when it says so (Django takes seconds to start: a job
        submitted before would wait for the pool)."""
        banners = self.log("workers").count(BANNER)
        self.start("workers", *args)
        self._wait("workers", lambda: self.log("workers").count(BANNER) > banners, timeout)


def _answers(catalog: str) -> bool:
    try:
        query_catalog(catalog, timeout=1.0)
    except (OSError, ValueError):
        return False
    return True


def _redis_answers(path: Path) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.5)
        sock.connect(str(path))
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False
