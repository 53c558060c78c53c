"""A client of lmweb's REST API (/api/v1/): upload once, submit, follow, download and verify."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

FINISHED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
DEFAULT_URL = "http://127.0.0.1:8000"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
CHUNK = 1024 * 1024


class ClientError(Exception):
    """What the service refused, or what went wrong on the way, said for a person."""


def default_config() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "lmweb" / "config.ini"


@dataclass
class Settings:
    """Where the service is and the token to use: from arguments, else the environment
    (LMWEB_URL, LMWEB_TOKEN), else the config file (LMWEB_CONFIG, or ~/.config/lmweb/config.ini,
    section [lmweb], keys url and token)."""

    url: str
    token: str

    @classmethod
    def load(
        cls,
        url: str | None = None,
        token: str | None = None,
        config: str | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Settings:
        path = Path(config or environ.get("LMWEB_CONFIG") or default_config())
        section: Mapping[str, str] = {}
        if path.is_file():
            parser = configparser.ConfigParser()
            parser.read(path)
            if parser.has_section("lmweb"):
                section = parser["lmweb"]
        url = url or environ.get("LMWEB_URL") or section.get("url") or DEFAULT_URL
        token = token or environ.get("LMWEB_TOKEN") or section.get("token")
        if not token:
            raise ClientError(
                f"no token: set LMWEB_TOKEN, or put `token = <your token>` under [lmweb] in {path}"
            )
        return cls(url.rstrip("/"), token.strip())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _explain(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if isinstance(body, dict) and "errors" in body:
        lines = [
            f"{field}: {' '.join(map(str, messages))}" for field, messages in body["errors"].items()
        ]
        return f"HTTP {response.status_code}: " + "; ".join(lines)
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"HTTP {response.status_code}: {detail or json.dumps(body)[:300]}"


class Client:
    def __init__(self, settings: Settings, session: requests.Session | None = None, timeout=60):
        self.settings = settings
        self.api = f"{settings.url}/api/v1"
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Token {settings.token}"
        # A server may close an idle kept-alive connection just as a poll reuses it (gunicorn
        # after 2 s): reads are tried again on a fresh one. Writes are not (not idempotent).
        retry = Retry(
            total=4,
            connect=4,
            read=2,
            status=0,
            backoff_factor=0.3,
            allowed_methods=frozenset({"GET", "HEAD"}),
            raise_on_status=False,
        )
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(max_retries=retry))

    def _call(self, method: str, url: str, **kwargs) -> requests.Response:
        if not url.startswith(("http://", "https://")):
            url = f"{self.api}/{url.lstrip('/')}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.settings.url}: {exc}") from None
        if response.status_code >= 400:
            raise ClientError(_explain(response))
        return response

    def _pages(self, path: str, params: dict | None = None, limit: int | None = None):
        url, query = path, {"page_size": 200, **(params or {})}
        count = 0
        while url:
            body = self._call("GET", url, params=query).json()
            for item in body["results"]:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            url, query = body.get("next"), None

    # Datasets.

    def find_dataset(self, sha256: str) -> dict | None:
        """One of the caller's datasets with this content, if any."""
        body = self._call("GET", "datasets/", params={"sha256": sha256, "page_size": 1}).json()
        return body["results"][0] if body["results"] else None

    def upload(self, path: Path, name: str | None = None) -> tuple[dict, bool]:
        """The dataset holding this file: one already uploaded with the same sha256 (True), or a
        new upload (False)."""
        path = Path(path)
        found = self.find_dataset(sha256_of(path))
        if found is not None:
            return found, True
        with path.open("rb") as handle:
            files = {"file": (path.name, handle)}
            data = {"name": name or path.name}
            return self._call("POST", "datasets/", files=files, data=data).json(), False

    # Workflows and jobs.

    def workflow(self, name: str) -> dict:
        return self._call("GET", f"workflows/{name}/").json()

    def submit(
        self,
        workflow: str,
        inputs: Mapping | None = None,
        params: Mapping | None = None,
        name: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> dict:
        body = {"workflow": workflow, "inputs": dict(inputs or {}), "params": dict(params or {})}
        if name:
            body["name"] = name
        if tags:
            body["tags"] = dict(tags)
        return self._call("POST", "jobs/", json=body).json()

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"jobs/{job_id}/").json()

    def jobs(self, state: str | None = None, limit: int = 50) -> list[dict]:
        params = {"state": state} if state else {}
        return list(self._pages("jobs/", params, limit=limit))

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"jobs/{job_id}/cancel/").json()

    def tasks(self, job_id: str) -> list[dict]:
        return list(self._pages(f"jobs/{job_id}/tasks/"))

    def log(self, job_id: str, task: str, stream: str = "stderr", offset: int = 0):
        """(bytes from `offset`, the log's size so far)."""
        response = self._call(
            "GET", f"jobs/{job_id}/tasks/{task}/log", params={"stream": stream, "offset": offset}
        )
        return response.content, int(response.headers.get("X-Log-Size", "0"))

    def wait(
        self,
        job_id: str,
        interval: float = 2.0,
        on_change: Callable[[dict], None] | None = None,
        timeout: float | None = None,
    ) -> dict:
        """Poll until the job has finished; `on_change` sees each new state or progress."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            job = self.job(job_id)
            seen = (job["state"], json.dumps(job.get("progress"), sort_keys=True))
            if on_change is not None and seen != last:
                on_change(job)
            last = seen
            if job["state"] in FINISHED:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"job {job_id} is still {job['state']} after {timeout} s")
            time.sleep(interval)

    def download(self, job: dict, folder: Path) -> Path:
        """The job's package into `folder`, verified (the zip's own checks, each output against
        the manifest's sha256, the manifest against the service's catalog), then unpacked into
        folder/<job id>/. Returns that folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"lmweb-{job['workflow']}-{job['id']}.zip"
        partial = target.with_suffix(".zip.part")
        response = self._call("GET", f"jobs/{job['id']}/package/", stream=True)
        with partial.open("wb") as handle:
            for chunk in response.iter_content(CHUNK):
                handle.write(chunk)
        partial.replace(target)
        catalog = {o["path"]: o["sha256"] for o in self._pages(f"jobs/{job['id']}/outputs/")}
        unpacked = folder / str(job["id"])
        verify_package(target, catalog, unpacked)
        return unpacked


def verify_package(package: Path, catalog: Mapping[str, str], into: Path) -> None:
    """ClientError unless every member reads back (CRC), every output's sha256 is the
    manifest's, and the manifest lists what the service cataloged; then unpacks it."""
    try:
        with zipfile.ZipFile(package) as archive:
            broken = archive.testzip()
            if broken is not None:
                raise ClientError(f"{package.name}: {broken} is damaged")
            manifest = json.loads(archive.read("manifest.json"))
            listed = {entry["path"]: entry["sha256"] for entry in manifest["outputs"]}
            if listed != dict(catalog):
                raise ClientError(f"{package.name}: its manifest does not match the job's outputs")
            for path, expected in listed.items():
                digest = hashlib.sha256()
                with archive.open(f"outputs/{path}") as member:
                    while chunk := member.read(CHUNK):
                        digest.update(chunk)
                if digest.hexdigest() != expected:
                    raise ClientError(f"{package.name}: outputs/{path} fails its sha256")
            for name in archive.namelist():
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts:
                    raise ClientError(f"{package.name}: unsafe member name {name!r}")
            archive.extractall(into)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ClientError(f"{package.name}: not a valid lmweb package ({exc})") from None


def looks_like_dataset_id(value: str) -> bool:
    return bool(_UUID.match(value))


def resolve_inputs(
    client: Client, given: Iterable[tuple[str, str]], say: Callable[[str], None] = print
) -> dict:
    """`given`: (input name, file path or dataset id) pairs, a name repeated for a list input.
    Files are uploaded once (by sha256)."""
    resolved: dict[str, list[str]] = {}
    for slot, value in given:
        path = Path(value)
        if path.is_file():
            dataset, reused = client.upload(path)
            say(
                f"{slot}: {path.name} -> dataset {dataset['id']}"
                + (" (already uploaded)" if reused else f" ({dataset['format']}, uploaded)")
            )
            resolved.setdefault(slot, []).append(dataset["id"])
        elif looks_like_dataset_id(value):
            resolved.setdefault(slot, []).append(value)
        else:
            raise ClientError(f"--{slot}: {value!r} is neither a file nor a dataset id")
    return resolved
