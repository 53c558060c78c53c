"""The hand-back protocol: a Celery worker that starts to shut down raises a flag, and its pool
processes, which poll for it, stop their makeflows and give their jobs back to the queue."""

import os
import socket
from pathlib import Path

from django.conf import settings


class HandBack(Exception):
    """This controller is shutting down: give the job back to the queue, unfailed."""


def _flag(parent_pid: int) -> Path:
    return settings.DATA_DIR / "run" / f"handback-{socket.gethostname()}-{parent_pid}"


def request_handback(worker_pid: int) -> None:
    """Called in a Celery worker's main process when it starts to shut down (SIGTERM)."""
    flag = _flag(worker_pid)
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()


def clear_handback(worker_pid: int) -> None:
    """Called when a worker is ready: a flag left by an earlier process of that pid is stale."""
    _flag(worker_pid).unlink(missing_ok=True)


def handback_requested() -> bool:
    """In a pool process: has the worker that forked it started to shut down?"""
    return _flag(os.getppid()).exists()
