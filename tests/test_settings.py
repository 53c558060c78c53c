"""A bad environment stops the start with a message that names the variable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "SECRET_KEY": "x" * 50,
    "DEBUG": "0",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/lmweb",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/15",
}


def start(tmp_path, **overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in GOOD and not k.startswith("LMWEB_")}
    env.update(GOOD, LMWEB_DATA_DIR=str(tmp_path / "data"))
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_starts_with_a_good_environment(tmp_path):
    result = start(tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://root@localhost/lmweb"),
        ("DATABASE_URL", "not a url"),
        ("CELERY_BROKER_URL", "http://127.0.0.1:6379/0"),
        ("LMWEB_UPLOAD_MAX_BYTES", "lots"),
        ("LMWEB_UPLOAD_MAX_BYTES", "-5"),
        ("LMWEB_JOB_MAX_SECONDS", "ten"),
        ("LMWEB_CONFINE_MAKEFLOW", "maybe"),
        ("LMWEB_RULE_SANDBOX", "sometimes"),
        ("LMWEB_RULE_MAX_MEMORY_MB", "10"),
        ("LMWEB_RULE_MAX_DISK_MB", "lots"),
    ],
)
def test_it_refuses_a_bad_value_naming_the_variable(tmp_path, variable, value):
    result = start(tmp_path, **{variable: value})
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert variable in last_line
    assert "Traceback" not in result.stderr


def test_it_requires_a_secret_key_when_debug_is_off(tmp_path):
    result = start(tmp_path, SECRET_KEY=None, DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_it_runs_without_a_secret_key_in_debug(tmp_path):
    result = start(tmp_path, SECRET_KEY=None, DEBUG="1")
    assert result.returncode == 0, result.stderr


def test_it_uses_sqlite_in_the_data_dir_when_database_url_is_unset(tmp_path):
    env_script = "from django.conf import settings; print(settings.DATABASES['default']['NAME'])"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(GOOD, LMWEB_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="lmweb.settings")
    env.pop("DATABASE_URL")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + env_script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "data" / "lmweb.sqlite3")


def test_check_deploy_reports_nothing_with_production_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in GOOD and not k.startswith("LMWEB_")}
    env.update(GOOD, LMWEB_DATA_DIR=str(tmp_path / "data"), ALLOWED_HOSTS="lmweb.example.org")
    env["SECRET_KEY"] = "k3y-" + "".join(chr(97 + (i * 7) % 26) for i in range(60))
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_complains_about_debug(tmp_path):
    result = start(tmp_path, DEBUG="1")
    assert result.returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in GOOD and not k.startswith("LMWEB_")}
    env.update(GOOD, LMWEB_DATA_DIR=str(tmp_path / "data"), DEBUG="1")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DEBUG" in result.stderr + result.stdout


def test_the_workers_hide_the_service_from_every_rule(tmp_path):
    """What lmweb_workers hands its workers' tasks (jobs/sandbox/guard.py reads it): the data
    folder (datasets, jobs, secrets), var/, the password, the scratch and the SQLite database."""
    script = (
        "import json; from jobs.management.commands.lmweb_workers import rule_environment; "
        "print(json.dumps(rule_environment()))"
    )
    env = {k: v for k, v in os.environ.items() if k not in GOOD and not k.startswith("LMWEB_")}
    env.update(
        GOOD,
        DJANGO_SETTINGS_MODULE="lmweb.settings",
        LMWEB_DATA_DIR=str(tmp_path / "data"),
        LMWEB_WQ_PASSWORD_FILE=str(tmp_path / "secret" / "wq.password"),
        LMWEB_SCRATCH_DIR=str(tmp_path / "scratch"),
        LMWEB_RULE_HIDE="/srv/keys,/etc/lmweb",
    )
    env.pop("DATABASE_URL")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rules = json.loads(result.stdout)
    assert rules["LMWEB_RULE_SANDBOX"] == "required"
    hidden = set(rules["LMWEB_RULE_HIDE"].split(os.pathsep))
    assert {
        str(tmp_path / "data"),
        str(ROOT / "var"),
        str(tmp_path / "secret" / "wq.password"),
        str(tmp_path / "scratch"),
        "/srv/keys",
        "/etc/lmweb",
    } <= hidden
