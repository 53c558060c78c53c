"""The compose file, checked against the settings: no engine runs here, so we read it."""

import re
import shlex
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
        "nginx", "web", "controller", "scheduler", "flower", "db", "redis", "catalog", "worker"
    }  # fmt: skip


def test_web_controller_scheduler_and_flower_share_one_image():
    app = ("nginx", "web", "controller", "scheduler", "flower", "catalog")
    assert {SERVICES[name]["image"] for name in app} == {"lmweb/app"}
    assert SERVICES["worker"]["image"] == "lmweb/worker"
    # No registry needed: Debian's PostgreSQL and Redis, built from compose/ like the others.
    for name in ("worker", "db", "redis"):
        dockerfile = SERVICES[name]["build"]["dockerfile"]
        assert (ROOT / dockerfile).read_text().startswith("#"), name
        assert "\nFROM debian:bookworm-slim\n" in (ROOT / dockerfile).read_text(), name
    assert SERVICES["db"]["image"] == "lmweb/postgres"
    assert SERVICES["redis"]["image"] == "lmweb/redis"


def test_each_service_runs_the_right_program():
    assert "gunicorn lmweb.wsgi" in SERVICES["web"]["command"]
    assert "celery -A lmweb worker -Q lmweb-jobs" in SERVICES["controller"]["command"]
    assert "celery -A lmweb beat" in SERVICES["scheduler"]["command"]
    assert "-Q lmweb " in SERVICES["scheduler"]["command"]  # recovery runs beside beat
    assert "flower" in SERVICES["flower"]["command"]
    assert SERVICES["catalog"]["command"].startswith("catalog_server -p 9097")
    assert "--appendonly yes" in SERVICES["redis"]["command"]


def test_the_app_points_at_the_other_containers():
    env = SERVICES["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert env["CELERY_BROKER_URL"].endswith("}@redis:6379/0")
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
    assert "/healthz" in str(SERVICES["nginx"]["healthcheck"]["test"])
    assert "data:/data:ro" in SERVICES["nginx"]["volumes"]
    assert "volumes" not in SERVICES["worker"]


SECRETS = ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH")
TEXT = (ROOT / "compose" / "docker-compose.yml").read_text()


def test_every_secret_is_required_and_has_no_default():
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(?P<op>[^}A-Za-z_]*)", TEXT)
        assert uses, name
        # ${NAME:?message} everywhere: compose stops with the message when it is unset or empty.
        assert all(op == ":?" for op in uses), (name, uses)
    assert "change-me" not in TEXT and "changeme" not in TEXT


def test_an_empty_secret_stops_the_service_that_needs_it():
    # podman-compose 1.0.3 substitutes an empty value for ${NAME:?...}: each service checks.
    assert 'test -n "$$FLOWER_BASIC_AUTH" ||' in SERVICES["flower"]["command"]
    assert 'test -n "$$REDIS_PASSWORD" ||' in SERVICES["redis"]["command"]
    entrypoint = (ROOT / "compose" / "postgres-entrypoint.sh").read_text()
    assert ': "${POSTGRES_PASSWORD:?' in entrypoint
    settings = (ROOT / "lmweb" / "settings.py").read_text()
    assert 'raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")' in settings


def test_the_env_example_leaves_every_secret_empty():
    example = (ROOT / "compose" / ".env.example").read_text()
    values = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.M))
    for name in SECRETS:
        assert values[name] == "", name


def test_a_placeholder_secret_key_stops_the_web_before_it_serves():
    command = SERVICES["web"]["command"]
    assert command.index("check --deploy --fail-level ERROR") < command.index("gunicorn")


def test_only_nginx_is_published():
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == {"nginx"}
    assert SERVICES["nginx"]["ports"] == ["${LMWEB_HTTP_PORT:-8080}:8080"]
    assert SERVICES["web"]["environment"]["LMWEB_X_ACCEL_REDIRECT"] == "/protected/"
    nginx = (ROOT / "compose" / "nginx.conf").read_text()
    assert "location /protected/ {\n            internal;\n            alias /data/;" in nginx
    assert "proxy_pass http://flower:5555;" in nginx
    assert "--url_prefix=flower" in SERVICES["flower"]["command"]


def test_the_catalog_and_the_data_stores_live_on_the_internal_network_only():
    assert COMPOSE["networks"]["back"]["internal"] is True
    assert set(SERVICES["catalog"]["expose"]) == {"9097", "9097/udp", "9098"}
    for name, service in SERVICES.items():
        expected = {"front", "back"} if name == "nginx" else {"back"}
        assert set(service["networks"]) == expected, name


def test_redis_asks_for_a_password_and_every_redis_url_carries_it():
    redis_service = SERVICES["redis"]
    assert "requirepass $$REDIS_PASSWORD" in redis_service["command"]
    # Given on standard input: an argument would show in /proc/<pid>/cmdline.
    assert "--requirepass" not in redis_service["command"]
    assert redis_service["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    urls = re.findall(r"rediss?://[^\s\"']+", TEXT)
    assert urls
    for url in urls:
        assert url.startswith(("redis://:${REDIS_PASSWORD:?", "rediss://:${REDIS_PASSWORD:?")), url


def test_flower_reads_its_login_from_the_environment():
    assert "--basic-auth" not in SERVICES["flower"]["command"]
    assert SERVICES["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith(
        "${FLOWER_BASIC_AUTH:?"
    )


def celery_options(command: str) -> list[str]:
    """The options of the `celery -A lmweb worker|beat ...` in a command, concurrency and log
    locations left out (each place sizes and places them its own way)."""
    # Compose wraps some in `sh -c "..."`: the closing quote is not part of the options.
    text = command.split("celery -A lmweb ", 1)[1].split("&")[0].strip()
    if text.count('"') % 2:
        text = text.removesuffix('"')
    words = shlex.split(text)
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in {"-c", "-s", "-l", "--port"} or word.startswith("--port="):
            skip = not word.startswith("--port=")
        else:
            kept.append(word)
    return kept


PROCFILE = {
    name: line.split(": ", 1)[1]
    for name, line in (
        (text.split(":", 1)[0], text)
        for text in (ROOT / "Procfile").read_text().splitlines()
        if text and not text.startswith("#")
    )
}


def test_compose_runs_the_controller_and_the_housekeeper_as_the_procfile_does():
    assert celery_options(SERVICES["controller"]["command"]) == celery_options(
        PROCFILE["controller"]
    )
    housekeeper = SERVICES["scheduler"]["command"].split("& exec ", 1)[1]
    assert celery_options(housekeeper) == celery_options(PROCFILE["housekeeper"])
    assert celery_options(SERVICES["scheduler"]["command"]) == celery_options(PROCFILE["scheduler"])


def test_the_drift_check_sees_a_queue_that_differs():
    changed = PROCFILE["controller"].replace("-Q lmweb-jobs", "-Q lmweb")
    assert celery_options(changed) != celery_options(SERVICES["controller"]["command"])
