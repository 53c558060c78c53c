"""A REST client as a user drives lmweb: submit, poll the status URL, read rules, download."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import requests

FINISHED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


class Api:
    def __init__(self, url: str, token: str):
        self.base = url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, path: str, **params) -> dict:
        response = self.session.get(self.base + path, params=params, timeout=60)
        response.raise_for_status()
        return response.json()

    def submit(self, request: dict) -> dict:
        response = self.session.post(self.base + "/jobs/", json=request, timeout=60)
        if response.status_code != 201:
            raise RuntimeError(f"submit refused ({response.status_code}): {response.text[:500]}")
        return response.json()

    def selftest(self, tasks: int, seconds: float, name: str = "bench") -> dict:
        return self.submit(
            {"workflow": "selftest", "name": name, "params": {"tasks": tasks, "seconds": seconds}}
        )

    def wait(self, job_id: str, timeout: float, interval: float = 0.1) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(f"/jobs/{job_id}/")
            if job["state"] in FINISHED:
                if job["state"] != "COMPLETE":
                    raise RuntimeError(f"job {job_id} ended {job['state']}: {job['error']}")
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished in {timeout} s: {job['state']}")
            time.sleep(interval)

    def tasks(self, job_id: str) -> list[dict]:
        return self.get(f"/jobs/{job_id}/tasks/", page_size=1000)["results"]

    def upload(self, path: Path, name: str) -> dict:
        with path.open("rb") as handle:
            response = self.session.post(
                self.base + "/datasets/", data={"name": name}, files={"file": handle}, timeout=300
            )
        if response.status_code != 201:
            raise RuntimeError(f"upload refused ({response.status_code}): {response.text[:500]}")
        return response.json()


def service_seconds(job: dict) -> float:
    """Submission to finish, by the service's own clock (no client polling in it)."""
    return seconds_between(job["submitted_at"], job["finished_at"])


def running_seconds(job: dict) -> float:
    """Claimed by a controller to finished: staging, makeflow, cataloging, packaging."""
    return seconds_between(job["started_at"], job["finished_at"])
