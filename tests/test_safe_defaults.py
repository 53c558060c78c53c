"""Safe defaults: no placeholder SECRET_KEY passes check --deploy; make run keeps its secrets in
var/secrets and off every command line."""

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from jobs.checks import check_secret_key

ROOT = Path(__file__).resolve().parents[1]
GOOD_KEY = "k3y-" + "".join(chr(97 + (i * 7) % 26) for i in range(60))
PLACEHOLDERS = [
    "insecure-development-key-only-used-with-DEBUG-on",  # our own DEBUG fallback
    "django-insecure-" + "q8w7e6r5t4y3u2i1o0p9a8s7d6f5g4h3j2k1l0z9x8c7v6b5n4m3",
    "change-me-to-a-long-random-string-of-at-least-fifty-characters",
    "CHANGEME" + "0123456789" * 5,
    "my-Secret-" + "0123456789" * 5,
    "placeholder" + "0123456789" * 5,
    "example" + "0123456789" * 5,
    "s8Fk2-short-but-random",  # under 50 characters
    "ab" * 40,  # two distinct characters
]


@pytest.mark.parametrize("key", PLACEHOLDERS)
def test_the_deploy_check_refuses_a_placeholder_secret_key(settings, key):
    settings.SECRET_KEY = key
    errors = check_secret_key()
    assert [error.id for error in errors] == ["lmweb.E001"]
    assert "SECRET_KEY" in errors[0].msg


def test_the_deploy_check_accepts_a_generated_secret_key(settings):
    settings.SECRET_KEY = GOOD_KEY
    assert check_secret_key() == []


def test_the_check_runs_only_with_deploy(settings):
    settings.SECRET_KEY = PLACEHOLDERS[0]
    call_command("check", "jobs")  # a development start is not refused
    with pytest.raises(SystemCheckError, match=r"lmweb\.E001"):
        call_command("check", "--deploy", "--fail-level", "ERROR")


def _manage_check_deploy(tmp_path, key: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMWEB_")}
    env.update(
        SECRET_KEY=key,
        DEBUG="0",
        LMWEB_DATA_DIR=str(tmp_path / "data"),
        ALLOWED_HOSTS="lmweb.example.org",
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_check_deploy_fails_on_a_placeholder_and_passes_on_a_real_key(tmp_path):
    refused = _manage_check_deploy(tmp_path, "django-insecure-" + "abcdefghij" * 5)
    assert refused.returncode != 0
    assert "lmweb.E001" in refused.stdout + refused.stderr
    accepted = _manage_check_deploy(tmp_path, GOOD_KEY)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def _stack_env(var: Path, **extra: str) -> dict[str, str]:
    """The environment scripts/stack-env.sh gives the Procfile's processes."""
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "FLOWER_BASIC_AUTH"}}
    env = {k: v for k, v in env.items() if not k.startswith("LMWEB_")}
    env.pop("CELERY_BROKER_URL", None)
    env.update(LMWEB_VAR=str(var), **extra)
    script = f"source {shlex.quote(str(ROOT / 'scripts' / 'stack-env.sh'))} && env -0"
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, check=True, timeout=60
    )
    pairs = (item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


def test_make_run_generates_its_secret_key_once_into_var_secrets(tmp_path):
    first = _stack_env(tmp_path / "var")
    key_file = tmp_path / "var" / "secrets" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first["SECRET_KEY"] == key_file.read_text().strip()
    assert len(first["SECRET_KEY"]) >= 50
    second = _stack_env(tmp_path / "var")
    assert second["SECRET_KEY"] == first["SECRET_KEY"]  # kept, so sessions survive a restart
    assert _stack_env(tmp_path / "other")["SECRET_KEY"] != first["SECRET_KEY"]


def _rendered_procfile(env: dict[str, str]) -> dict[str, str]:
    """Each Procfile command with its variables expanded, as its process's cmdline shows."""
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, command = line.split(":", 1)
        commands[name] = re.sub(
            r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), command
        )
    return commands


def test_no_secret_is_on_a_command_line_of_the_stack(tmp_path):
    sentinel = "demo-token-0f9e8d7c6b5a"
    env = _stack_env(tmp_path / "var", LMWEB_DEMO_TOKEN=sentinel)
    secrets = {
        "SECRET_KEY": env["SECRET_KEY"],
        "Flower's password": env["FLOWER_BASIC_AUTH"].split(":", 1)[1],
        "the Work Queue password": Path(env["LMWEB_WQ_PASSWORD_FILE"]).read_text().strip(),
        "the demo token": sentinel,
    }
    commands = _rendered_procfile(env)
    assert {"web", "flower", "demo", "controller"} <= set(commands)
    assert "demo-credentials.json" in commands["demo"]  # the token is read from a 0600 file
    for name, command in commands.items():
        for what, secret in secrets.items():
            assert secret not in command, f"{what} is on the command line of {name}"
    for script in ("run.sh", "demo.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "--token " not in text and "--basic-auth" not in text, script


def test_the_demo_reads_its_token_from_a_file_or_the_environment(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lmweb_demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    credentials = tmp_path / "demo-credentials.json"
    credentials.write_text('{"username": "demo", "token": "abc123"}')
    assert demo.read_token(credentials) == "abc123"
    monkeypatch.setenv("LMWEB_DEMO_TOKEN", "from-env")
    assert demo.read_token(None) == "from-env"
