"""The compose file, checked against the settings: no engine runs here, so we read it."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def settings_variables() -> set[str]:
    text = (ROOT / "lmweb" / "settings.py").read_text()
    pattern = r'env_(?:str|int|bool|list|url|size|database)\(\s*"([A-Z_]+)"'
    return set(re.findall(pattern, text))


def test_it_has_the_seed_containers():
    assert set(SERVICES) == {
        "web", "controller", "scheduler", "flower", "db", "redis", "catalog", "worker"
    }  # fmt: skip


def test_web_controller_scheduler_and_flower_share_one_image():
    images = {SERVICES[name]["image"] for name in ("web", "controller", "scheduler", "flower")}
    assert images == {"lmweb/app"}
    assert SERVICES["worker"]["image"] == "lmweb/worker"
    assert SERVICES["db"]["image"].startswith("postgres:")
    assert SERVICES["redis"]["image"].startswith("redis:")


def test_each_service_runs_the_right_program():
    assert "gunicorn lmweb.wsgi" in SERVICES["web"]["command"]
    assert "celery -A lmweb worker -Q lmweb-jobs" in SERVICES["controller"]["command"]
    assert "celery -A lmweb beat" in SERVICES["scheduler"]["command"]
    assert "-Q lmweb " in SERVICES["scheduler"]["command"]  # recovery runs beside beat
    assert "flower" in SERVICES["flower"]["command"]
    assert "--basic-auth" in SERVICES["flower"]["command"]
    assert SERVICES["catalog"]["command"].startswith("catalog_server -p 9097")
    assert "--appendonly yes" in SERVICES["redis"]["command"]


def test_the_app_points_at_the_other_containers():
    env = SERVICES["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert env["LMWEB_CATALOG"] == "catalog:9097"
    assert env["LMWEB_WQ_PASSWORD_FILE"] == "/run/secrets/wq_password"
    assert SERVICES["worker"]["environment"]["LMWEB_CATALOG"] == "catalog:9097"
    assert "wq_password" in SERVICES["worker"]["secrets"]


def test_every_setting_is_listed_in_the_env_example():
    example = (ROOT / "compose" / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", example, re.M))
    assert settings_variables() - listed == set()
    assert "SECRET_KEY" in settings_variables()


def test_data_is_kept_in_volumes_and_health_is_checked():
    assert "data:/data" in SERVICES["web"]["volumes"]
    assert set(COMPOSE["volumes"]) >= {"data", "db", "redis"}
    for name in ("web", "db", "redis", "catalog"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "/healthz" in str(SERVICES["web"]["healthcheck"]["test"])
    assert "8000:8000" in SERVICES["web"]["ports"]
    assert "9097:9097" in SERVICES["catalog"]["ports"]
