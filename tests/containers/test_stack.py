"""The containers, built and run with README's "Containers" commands word for word: the images
(podman), the topology (podman-compose) with 3 worker containers, a pam-stats job submitted
through nginx, one worker container killed while it runs a rule, the job COMPLETE and its package
checked file by file against the manifest, everything taken down.

It runs in a copy of the repository (its own compose/.env and wq.password, its own project name),
so a deployment from this working tree is left alone.
"""

import base64
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = f"lmwebtest{os.getpid()}"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Containers\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def load_demo():
    spec = importlib.util.spec_from_file_location("lmweb_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(script: str, cwd: Path, env: dict, timeout: float) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    tail = f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{script}\n{tail}"
    return done.stdout


def podman(*args: str, env: dict) -> str:
    done = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def set_env_file(path: Path, values: dict[str, str]) -> None:
    text = path.read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert count == 1, name
    path.write_text(text)


def running_rule(container: str, env: dict) -> bool:
    """Whether a rule runs in the container: the guard's shell (in bubblewrap, or not)."""
    done = subprocess.run(
        ["podman", "top", container, "args"], env=env, capture_output=True, text=True, timeout=30
    )
    return done.returncode == 0 and any(
        "bwrap" in line or line.startswith("/bin/sh -c") for line in done.stdout.splitlines()[1:]
    )


@pytest.fixture(scope="module")
def tools():
    # Quick when everything is there; installs podman, podman-compose & co. on a fresh machine.
    subprocess.run(["scripts/setup-test.sh"], cwd=ROOT, check=True, timeout=1200)


def test_a_job_survives_a_killed_worker_container(tools, tmp_path):
    commands = readme_commands()
    up = next(i for i, line in enumerate(commands) if line.endswith(" up -d"))
    exports = [line for line in commands if line.startswith("export ")]
    assert commands[0] == "compose/build.sh" and len(exports) == 1
    tree = tmp_path / "lmweb"
    skipped = (".git", ".venv", "var", "__pycache__", ".*_cache", ".env", "wq.password")
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*skipped))
    (tree / ".venv").symlink_to(ROOT / ".venv")
    env = {**os.environ, "COMPOSE_PROJECT_NAME": PROJECT}
    port = free_port()
    flower_login = f"admin:{secrets.token_hex(12)}"
    started = time.monotonic()
    run("\n".join(commands[:up]).replace(exports[0], ""), tree, env, timeout=1800)
    built = time.monotonic() - started
    set_env_file(
        tree / "compose" / ".env",
        {
            "SECRET_KEY": secrets.token_urlsafe(50),
            "POSTGRES_PASSWORD": secrets.token_hex(24),
            "REDIS_PASSWORD": secrets.token_hex(24),
            "FLOWER_BASIC_AUTH": flower_login,
            # Plain HTTP on the loopback: no TLS certificate in a test.
            "LMWEB_HTTPS": "0",
            "LMWEB_HSTS_SECONDS": "0",
            "ALLOWED_HOSTS": "127.0.0.1",
            "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
            "LMWEB_HTTP_PORT": str(port),
        },
    )
    podman_env = {**env, "CONTAINERS_CONF": str(tree / "compose" / "containers.conf")}
    label = f"label=com.docker.compose.project={PROJECT}"
    try:
        run(f"{exports[0]}\n{commands[up]}", tree, env, timeout=600)
        workers = podman(
            "ps", "-q", "--filter", label, "--filter", "label=com.docker.compose.service=worker",
            "--format", "{{.Names}}", env=podman_env,
        ).split()  # fmt: skip
        assert len(workers) == 3, workers

        demo = load_demo()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
                    assert response.headers["Server"].startswith("nginx")
                    break
            except OSError:
                assert time.monotonic() < deadline, "nginx never answered /healthz"
                time.sleep(1)
        # Flower behind nginx asks for its login; the files nginx sends are not reachable as such.
        assert status(url + "/flower/") == 401
        login = base64.b64encode(flower_login.encode()).decode()
        assert status(url + "/flower/", {"Authorization": f"Basic {login}"}) == 200
        assert status(url + "/protected/secrets/wq.password") == 404
        assert status(url + "/static/rest_framework/css/bootstrap.min.css") == 200
        credentials = json.loads(run(f"{exports[0]}\n{commands[up + 1]}", tree, env, timeout=120))
        client = demo.Client(url, credentials["token"])

        names = demo.make_pam(tmp_path / "pam.lmm", species=30, side=20, seed=14)
        demo.make_tree(tmp_path / "tree.tre", names, seed=14)
        pam = client.upload(tmp_path / "pam.lmm", "PAM")
        tree_dataset = client.upload(tmp_path / "tree.tre", "Tree")
        job = client.post_json(
            "/jobs/",
            {
                "workflow": "pam-stats",
                "inputs": {"pam": pam["id"], "tree": tree_dataset["id"]},
                "params": {"randomizations": 40, "p_value_method": "fdr"},
            },
        )

        killed = None
        deadline = time.monotonic() + 600
        while True:
            job = client.get_json(f"/jobs/{job['id']}/")
            if job["state"] in {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}:
                break
            if killed is None and job["state"] == "RUNNING":
                for worker in workers:
                    if running_rule(worker, podman_env):
                        podman("kill", worker, env=podman_env)
                        killed = worker
                        break
            assert time.monotonic() < deadline, f"the job is still {job['state']}"
            time.sleep(0.2 if killed is None else 2)
        assert killed, "no worker container was seen running a rule"
        assert job["state"] == "COMPLETE", job["error"]
        assert job["progress"]["done"] == job["progress"]["total"] > 0

        # The package comes from nginx (X-Accel-Redirect), every file as the manifest says.
        package = tmp_path / "package.zip"
        request = urllib.request.Request(
            f"{url}/api/v1/jobs/{job['id']}/package/",
            headers={"Authorization": f"Token {credentials['token']}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.headers["Server"].startswith("nginx")
            assert "X-Accel-Redirect" not in response.headers
            package.write_bytes(response.read())
        assert demo.verify_package(package) == []
        print(f"containers: images built in {built:.0f} s; {killed} killed mid-rule; COMPLETE")
    finally:
        run(f"{exports[0]}\n{commands[-1]}", tree, env, timeout=300)
        for network in ("front", "back"):
            subprocess.run(
                ["podman", "network", "rm", f"{PROJECT}_{network}"],
                env=podman_env,
                capture_output=True,
                timeout=60,
            )
    left = podman("ps", "-aq", "--filter", label, env=podman_env).split()
    assert left == []
    assert podman("volume", "ls", "-q", "--filter", label, env=podman_env).split() == []
