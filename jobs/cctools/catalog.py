"""The catalog server: starting a private one, and reading the managers it advertises."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from .processes import StartupError, spawn
from .projects import is_width_variant

CATALOG_SERVER = "/usr/bin/catalog_server"
# Managers update the catalog every 60 s, and their records outlive them (catalog lifetime).
STALE_RECORD_SECONDS = 150
MANAGER_TYPES = ("wq_master", "wq_manager")


def start_catalog_server(
    *,
    port: int,
    host: str = "127.0.0.1",
    history_dir: Path,
    log_path: Path,
    lifetime: int = 1800,
) -> subprocess.Popen:
    """A private catalog server: it uses TCP `port`, UDP `port` and TCP `port` + 1.

    `-u` points at itself: by default it would report itself to the public catalog.
    """
    history_dir.mkdir(parents=True, exist_ok=True)
    args = [
        CATALOG_SERVER,
        "-p", str(port),
        "-I", host,
        "-u", f"{host}:{port}",
        "-H", str(history_dir),
        "-l", str(lifetime),
        "-o", str(log_path),
        "-O", "0",
    ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return spawn(args)  # it writes its own log (-o)


def query_catalog(catalog: str, *, timeout: float = 5.0) -> list[dict]:
    """All records of a catalog server ("host:port"), fresh (workers cache theirs for 60 s)."""
    url = f"http://{catalog}/query.json"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_for_catalog(catalog: str, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            query_catalog(catalog, timeout=1.0)
            return
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise StartupError(f"catalog server {catalog} does not answer: {exc}") from exc
            time.sleep(0.05)


def managers(catalog: str, project: str, *, timeout: float = 5.0) -> list[dict]:
    """The catalog's Work Queue manager records of one project."""
    return [
        record
        for record in query_catalog(catalog, timeout=timeout)
        if record.get("type") in MANAGER_TYPES
        and (record.get("project") == project or is_width_variant(record.get("project"), project))
    ]


def number(value: object) -> int:
    """A catalog figure; 0 when absent or not a number (records come from any datagram)."""
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
