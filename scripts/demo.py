"""The demo: make a seeded PAM and tree, run pam-stats through the REST API, check the package.

Usage: demo.py --url http://127.0.0.1:8000 --token-file FILE --out var/demo [--randomizations N]
The API token comes from --token-file (a JSON object with "token", or the bare token) or from
the LMWEB_DEMO_TOKEN environment variable: never from the command line, which every local user
can read in /proc.
Exit status 0 only when the job is COMPLETE and every packaged file matches its manifest sha256.
"""

import argparse
import hashlib
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import numpy as np


def make_pam(path: Path, *, species: int, side: int, seed: int) -> list[str]:
    """Species ranges as discs on a side x side grid of 1-degree cells; empty sites dropped."""
    from lmpy import Matrix

    rng = np.random.default_rng(seed)
    names = [f"Demo species {i:02d}" for i in range(1, species + 1)]
    xs, ys = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5)
    xs, ys = xs.ravel() - 110.0, ys.ravel() + 30.0
    columns = []
    for _ in names:
        cx, cy = rng.uniform(xs.min(), xs.max()), rng.uniform(ys.min(), ys.max())
        radius = rng.uniform(1.5, side / 3)
        present = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        # A little noise so that ranges are not perfect discs.
        flip = rng.random(present.size) < 0.03
        columns.append(np.where(flip, ~present, present))
    data = np.column_stack(columns).astype(float)
    keep = data.sum(axis=1) > 0
    sites = [[i, float(x), float(y)] for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    rows = [site for site, kept in zip(sites, keep, strict=True) if kept]
    matrix = Matrix(data[keep], headers={"0": rows, "1": names})
    matrix.write(str(path))
    return names


def make_tree(path: Path, names: list[str], *, seed: int) -> None:
    """A random ultrametric tree (coalescent merges) in Newick, tips with underscores."""
    rnd = random.Random(seed)  # noqa: S311 (a reproducible demo, not a secret)
    nodes = [(name.replace(" ", "_"), 0.0) for name in names]  # (newick text, height)
    height = 0.0
    while len(nodes) > 1:
        height += rnd.expovariate(len(nodes))
        a = nodes.pop(rnd.randrange(len(nodes)))
        b = nodes.pop(rnd.randrange(len(nodes)))
        text = f"({a[0]}:{height - a[1]:.6f},{b[0]}:{height - b[1]:.6f})"
        nodes.append((text, height))
    path.write_text(nodes[0][0] + ";\n")


class Client:
    def __init__(self, url: str, token: str):
        self.base = url.rstrip("/") + "/api/v1"
        self.headers = {"Authorization": f"Token {token}"}

    def _open(self, request: urllib.request.Request):
        for key, value in self.headers.items():
            request.add_header(key, value)
        return urllib.request.urlopen(request, timeout=60)

    def get_json(self, path: str) -> dict:
        with self._open(urllib.request.Request(self.base + path)) as response:
            return json.load(response)

    def post_json(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._open(request) as response:
            return json.load(response)

    def upload(self, path: Path, name: str) -> dict:
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\n".encode(),
                b'Content-Disposition: form-data; name="name"\r\n\r\n',
                name.encode() + b"\r\n",
                f"--{boundary}\r\n".encode(),
                f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'.encode(),
                b"Content-Type: application/octet-stream\r\n\r\n",
                path.read_bytes(),
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        request = urllib.request.Request(
            self.base + "/datasets/",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            method="POST",
        )
        with self._open(request) as response:
            return json.load(response)

    def download(self, path: str, target: Path) -> None:
        request = urllib.request.Request(self.base + path)
        with self._open(request) as response, target.open("wb") as handle:
            while chunk := response.read(1024 * 1024):
                handle.write(chunk)


def verify_package(package: Path) -> list[str]:
    """Problems found: each file listed in manifest.json must be there with its sha256."""
    problems = []
    with zipfile.ZipFile(package) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        listed = {entry["path"]: entry["sha256"] for entry in manifest["outputs"]}
        for name, digest in listed.items():
            try:
                actual = hashlib.sha256(archive.read(f"outputs/{name}")).hexdigest()
            except KeyError:
                problems.append(f"{name}: missing from the package")
                continue
            if actual != digest:
                problems.append(f"{name}: sha256 {actual} != manifest {digest}")
        if not listed:
            problems.append("the manifest lists no outputs")
    return problems


def wait_for_service(client: Client, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.get_json("/service-info/")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def read_token(path: Path | None) -> str:
    if path is None:
        return os.environ.get("LMWEB_DEMO_TOKEN", "").strip()
    text = path.read_text().strip()
    return str(json.loads(text)["token"]) if text.startswith("{") else text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token-file", type=Path, help="JSON with a 'token' key, or the token")
    parser.add_argument("--out", type=Path, default=Path("var/demo"))
    parser.add_argument("--randomizations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    token = read_token(args.token_file)
    if not token:
        parser.error("no token: pass --token-file or set LMWEB_DEMO_TOKEN")

    args.out.mkdir(parents=True, exist_ok=True)
    pam_path, tree_path = args.out / "demo-pam.lmm", args.out / "demo-tree.tre"
    names = make_pam(pam_path, species=30, side=20, seed=args.seed)
    make_tree(tree_path, names, seed=args.seed)
    print(f"demo: made {pam_path} and {tree_path} (seed {args.seed})", flush=True)

    client = Client(args.url, token)
    wait_for_service(client, 120)
    pam = client.upload(pam_path, "Demo PAM")
    tree = client.upload(tree_path, "Demo tree")
    job = client.post_json(
        "/jobs/",
        {
            "workflow": "pam-stats",
            "name": "lmweb demo",
            "inputs": {"pam": pam["id"], "tree": tree["id"]},
            "params": {"randomizations": args.randomizations, "p_value_method": "fdr"},
            "tags": {"source": "make demo"},
        },
    )
    print(f"demo: submitted {job['url']}", flush=True)
    deadline, last = time.monotonic() + args.timeout, None
    while True:
        job = client.get_json(f"/jobs/{job['id']}/")
        progress = job["progress"]
        line = f"{job['state']} {progress['done']}/{progress['total']} rules"
        if line != last:
            print(f"demo: {line}", flush=True)
            last = line
        if job["state"] in {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}:
            break
        if time.monotonic() > deadline:
            print("demo: timed out waiting for the job", file=sys.stderr)
            return 1
        time.sleep(2)
    if job["state"] != "COMPLETE":
        print(f"demo: the job ended {job['state']}: {job['error']}", file=sys.stderr)
        return 1
    package = args.out / f"lmweb-demo-{job['id']}.zip"
    client.download(f"/jobs/{job['id']}/package/", package)
    problems = verify_package(package)
    for problem in problems:
        print(f"demo: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"demo: COMPLETE; package verified against its manifest: {package.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
