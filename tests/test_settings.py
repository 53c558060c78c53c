"""A bad environment stops the start with a message that names the variable."""

import json
import os
import sqlite3
import stat
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


# --- var/lmweb.env: `make run` writes its settings there; settings.py reads it (issue 12, item 4).


def _bare_env(**extra: str) -> dict[str, str]:
    """The environment of a shell with none of lmweb's settings in it."""
    names = {*GOOD, "DJANGO_ENV_FILE"}
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("LMWEB_")}
    env.update(extra)
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_py_commands_read_the_settings_file_that_make_run_writes(tmp_path):
    var = tmp_path / "var"
    script = f"source {ROOT / 'scripts' / 'stack-env.sh'}"
    subprocess.run(["bash", "-c", script], env=_bare_env(LMWEB_VAR=str(var)), check=True)
    written = var / "lmweb.env"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600  # it holds SECRET_KEY
    assert f"LMWEB_DATA_DIR='{var / 'data'}'" in written.read_text().splitlines()

    without = _manage(_bare_env(DJANGO_ENV_FILE=os.devnull), "check")
    assert without.returncode != 0
    assert "SECRET_KEY must be set" in without.stderr

    env = _bare_env(DJANGO_ENV_FILE=str(written))
    for args in (["migrate", "--noinput"], ["createsuperuser", "--noinput", "--username", "alice",
                 "--email", "alice@example.org"], ["drf_create_token", "alice"]):  # fmt: skip
        done = _manage(env, *args)
        assert done.returncode == 0, done.stderr
    key = done.stdout.split()[2]
    # The token is in the SQLite database of the data folder that the file names.
    with sqlite3.connect(var / "data" / "lmweb.sqlite3") as db:
        stored = db.execute(
            "SELECT t.key FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id "
            "WHERE u.username = 'alice'"
        ).fetchall()
    assert stored == [(key,)]


def test_the_environment_wins_over_the_settings_file(tmp_path):
    file = tmp_path / "lmweb.env"
    file.write_text(
        "# a comment\n"
        f"SECRET_KEY='{'f' * 50}'\n"
        "DEBUG=maybe\n"
        f"LMWEB_DATA_DIR={tmp_path / 'from-file'}\n"
        "CELERY_BROKER_URL='redis://127.0.0.1:6379/15'\n"
    )
    show = "from django.conf import settings; print(settings.DATA_DIR, settings.SECRET_KEY)"
    env = _bare_env(DJANGO_ENV_FILE=str(file))
    refused = _manage(env, "shell", "-c", show)
    assert refused.returncode != 0
    assert "DEBUG='maybe'" in refused.stderr.strip().splitlines()[-1]

    env.update(DEBUG="0", LMWEB_DATA_DIR=str(tmp_path / "from-env"))
    shown = _manage(env, "shell", "-c", show)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[-1].split() == [str(tmp_path / "from-env"), "f" * 50]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "DJANGO_ENV_FILE="), ("SECRET_KEY\n", "line 1: not KEY=VALUE")],
)
def test_a_bad_settings_file_stops_the_start_saying_why(tmp_path, content, message):
    file = tmp_path / "lmweb.env"
    if content is not None:
        file.write_text(content)
    result = _manage(_bare_env(DJANGO_ENV_FILE=str(file), DEBUG="1"), "check")
    assert result.returncode != 0
    assert message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_the_suite_reads_no_settings_file_that_make_run_left():
    """The default file, var/lmweb.env, as `make run` leaves it: processes the tests start
    inherit DJANGO_ENV_FILE from pytest (pyproject.toml) and do not read it."""
    default = ROOT / "var" / "lmweb.env"
    default.parent.mkdir(exist_ok=True)
    made = False
    try:
        with default.open("x") as handle:  # leave a real one alone
            handle.write(f"SECRET_KEY='{'m' * 50}'\nDEBUG='1'\n")
        made = True
    except FileExistsError:
        pass
    try:
        env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
        result = _manage(env, "check")
    finally:
        if made:
            default.unlink()
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
