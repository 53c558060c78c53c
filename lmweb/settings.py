"""The one settings module: what varies between deployments comes from the environment."""

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ImproperlyConfigured(f"{name}={value!r} must be {bounds}")
    return number


def env_str(name: str, default: str) -> str:
    value = _raw(name)
    return default if value is None else value


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_url(name: str, default: str, schemes: set[str]) -> str:
    value = env_str(name, default)
    try:
        scheme = urlsplit(value).scheme
    except ValueError:
        scheme = ""
    if scheme not in schemes:
        expected = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name}={value!r} is not a URL with a scheme among: {expected}")
    return value


def env_size(name: str, default: int) -> int:
    """A byte count, with an optional K/M/G suffix (powers of 1024)."""
    value = _raw(name)
    if value is None:
        return default
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    number, factor = value.upper().rstrip("B"), 1
    if number and number[-1] in units:
        number, factor = number[:-1], units[number[-1]]
    try:
        size = int(number) * factor
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a size (e.g. 500M, 2G)") from None
    if size <= 0:
        raise ImproperlyConfigured(f"{name}={value!r} must be positive")
    return size


def env_database(name: str, default_sqlite: Path) -> dict:
    value = _raw(name)
    if value is None:
        # The embedded default: its folder is made here, or SQLite cannot open the file.
        default_sqlite.parent.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(default_sqlite),
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    try:
        config = environ.Env.db_url_config(value)
    except Exception as exc:
        raise ImproperlyConfigured(f"{name} is not a database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
        raise ImproperlyConfigured(f"{name}: only postgres:// and sqlite:// URLs are supported")
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name}={value!r} names no database")
    if engine == "django.db.backends.postgresql":
        config.setdefault("CONN_MAX_AGE", 60)
        config["CONN_HEALTH_CHECKS"] = True
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    return config


def read_env_file(name: str, default: Path) -> None:
    """Fill the variables the environment leaves unset from a file of KEY=VALUE lines (what
    `make run` writes to var/lmweb.env): the environment wins. NAME names another file."""
    value = _raw(name)
    path = Path(value) if value is not None else default
    if value is None and not path.exists():
        return
    try:
        text = path.read_text()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}={str(path)!r}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, item = line.partition("=")
        if not equals or not key.isidentifier():
            raise ImproperlyConfigured(f"{path}, line {number}: not KEY=VALUE")
        if len(item) >= 2 and item[0] == item[-1] == "'":
            item = item[1:-1]
        # Into the environment, not a private table: the processes started from here (workers,
        # makeflow, Celery) see the same settings as under `make run`.
        if _raw(key) is None:
            os.environ[key] = item


# Not LMWEB_*: tests start processes without the LMWEB_ variables and must still read no file.
read_env_file("DJANGO_ENV_FILE", BASE_DIR / "var" / "lmweb.env")

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"  # noqa: S105
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

DATA_DIR = Path(env_str("LMWEB_DATA_DIR", str(BASE_DIR / "var" / "data"))).resolve()
if DATA_DIR.exists() and not DATA_DIR.is_dir():
    raise ImproperlyConfigured(f"LMWEB_DATA_DIR={DATA_DIR} exists and is not a directory")

UPLOAD_MAX_BYTES = env_size("LMWEB_UPLOAD_MAX_BYTES", 1024**3)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "lmweb.urls"
WSGI_APPLICATION = "lmweb.wsgi.application"
ASGI_APPLICATION = "lmweb.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", DATA_DIR / "lmweb.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("LMWEB_STATIC_ROOT", str(BASE_DIR / "var" / "static")))
# gunicorn serves the admin's and the API viewer's assets itself, from the app folders in DEBUG.
WHITENOISE_USE_FINDERS = DEBUG

# Request bodies other than file uploads (JSON job requests) stay small.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_size("LMWEB_REQUEST_MAX_BYTES", 1024**2)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024**2
FILE_UPLOAD_TEMP_DIR = None

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes anonymous requests 401, not 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "jobs.api.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "jobs.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["jobs.api.filters.QueryFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("LMWEB_THROTTLE_ANON", "60/minute"),
        "user": env_str("LMWEB_THROTTLE_USER", "50000/hour"),
        "submit": env_str("LMWEB_THROTTLE_SUBMIT", "3000/hour"),
    },
    "EXCEPTION_HANDLER": "jobs.api.errors.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "lmweb API",
    "DESCRIPTION": "Submit lmpy biodiversity computations, follow them, download their results.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Celery: JSON only, one job per worker process at a time, acknowledged after the work so a
# controller that dies hands its job back to the broker.
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL", "redis://127.0.0.1:6379/0", {"redis", "rediss", "redis+socket"}
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "lmweb"
CELERY_TASK_ROUTES = {"jobs.run_job": {"queue": "lmweb-jobs"}}
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
JOB_MAX_SECONDS = env_int("LMWEB_JOB_MAX_SECONDS", 7 * 24 * 3600, minimum=60)
# Redis redelivers an unacknowledged message after this long: it must outlast the longest job.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": JOB_MAX_SECONDS + 3600}
# A web request must not hang on a dead broker: publish fails fast and recovery re-sends.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 3
RECOVER_SECONDS = env_int("LMWEB_RECOVER_SECONDS", 15, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "recover-jobs": {
        "task": "jobs.recover",
        "schedule": float(RECOVER_SECONDS),
        "options": {"expires": max(1, RECOVER_SECONDS - 1)},
    },
    # Callbacks whose message was lost (a broker or worker crash) are sent again from the table.
    "sweep-callbacks": {
        "task": "jobs.sweep_callbacks",
        "schedule": float(RECOVER_SECONDS),
        "options": {"expires": max(1, RECOVER_SECONDS - 1)},
    },
}

# Downloads (outputs, packages): empty, Django streams the file itself (`make run`); a path such
# as /protected/, the views answer with X-Accel-Redirect to it plus the file's path under
# DATA_DIR, and nginx (an `internal` location aliased to DATA_DIR) sends the file once Django has
# checked the permission (compose/nginx.conf).
LMWEB_X_ACCEL_REDIRECT = env_str("LMWEB_X_ACCEL_REDIRECT", "")
if LMWEB_X_ACCEL_REDIRECT and not (
    LMWEB_X_ACCEL_REDIRECT.startswith("/") and LMWEB_X_ACCEL_REDIRECT.endswith("/")
):
    raise ImproperlyConfigured("LMWEB_X_ACCEL_REDIRECT must be a path like /protected/")

# Execution: makeflow managers advertise to a private catalog server; workers need the password.
LMWEB_CATALOG = env_str("LMWEB_CATALOG", "127.0.0.1:9097")
if ":" not in LMWEB_CATALOG or not LMWEB_CATALOG.rsplit(":", 1)[1].isdigit():
    raise ImproperlyConfigured(f"LMWEB_CATALOG={LMWEB_CATALOG!r} is not HOST:PORT")
LMWEB_WQ_PASSWORD_FILE = Path(
    env_str("LMWEB_WQ_PASSWORD_FILE", str(DATA_DIR / "secrets" / "wq.password"))
)
# Project names are lmweb-<deployment>-<job id>; workers serve every ^lmweb-<deployment>-.*$.
LMWEB_DEPLOYMENT = env_str("LMWEB_DEPLOYMENT", "local")
if not LMWEB_DEPLOYMENT.replace("-", "").isalnum():
    raise ImproperlyConfigured("LMWEB_DEPLOYMENT may hold only letters, digits and '-'")
LMWEB_MAX_WORKERS = env_int("LMWEB_MAX_WORKERS", os.cpu_count() or 1, minimum=0)
LMWEB_WORKER_CORES = env_int("LMWEB_WORKER_CORES", 1, minimum=1)
LMWEB_WORKER_IDLE_SECONDS = env_int("LMWEB_WORKER_IDLE_SECONDS", 120, minimum=5)
LMWEB_SCRATCH_DIR = Path(env_str("LMWEB_SCRATCH_DIR", str(DATA_DIR.parent / "wq-scratch")))
# Rules are deterministic: a failure usually repeats, so retry once (worker loss is not a
# failure: Work Queue resubmits those tasks by itself).
LMWEB_RULE_RETRIES = env_int("LMWEB_RULE_RETRIES", 1, maximum=10)
LMWEB_MAX_REMOTE = env_int("LMWEB_MAX_REMOTE", 100, minimum=1)
LMWEB_POLL_SECONDS = float(env_int("LMWEB_POLL_MILLISECONDS", 1000, minimum=50)) / 1000
LMWEB_HEARTBEAT_SECONDS = env_int("LMWEB_HEARTBEAT_SECONDS", 5, minimum=1)
LMWEB_STALE_SECONDS = env_int("LMWEB_STALE_SECONDS", 60, minimum=5)
LMWEB_MAKEFLOW_STARTS = env_int("LMWEB_MAKEFLOW_STARTS", 3, minimum=1)
# Makeflow can spin forever once a rule that others need has failed (see docs/decisions.md):
# a failed, unchanging log for this long means it will not finish.
LMWEB_STUCK_SECONDS = env_int("LMWEB_STUCK_SECONDS", 3, minimum=1)
LMWEB_MAX_ATTEMPTS = env_int("LMWEB_MAX_ATTEMPTS", 3, minimum=1)

# --- Fair limits per user, shared throttles, trusted proxies (issue 11, items 7 and 8).
# Throttle counts live in Redis, so every web process counts the same requests: the broker's
# Redis unless LMWEB_CACHE_URL names another (redis://, rediss:// or unix:// URLs).
_broker = urlsplit(CELERY_BROKER_URL)
_cache_default = f"unix://{_broker.path}" if _broker.scheme == "redis+socket" else CELERY_BROKER_URL
LMWEB_CACHE_URL = env_url("LMWEB_CACHE_URL", _cache_default, {"redis", "rediss", "unix"})
CACHES = {
    "default": {
        "BACKEND": "lmweb.cache.RedisCache",
        "LOCATION": LMWEB_CACHE_URL,
        "KEY_PREFIX": "lmweb-cache",
        # A slow or lost Redis must not hold a request: throttles then let requests through.
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}
# X-Forwarded-For is believed only when the request comes from one of these addresses or
# networks (the reverse proxies in front of the web); empty: REMOTE_ADDR only.
LMWEB_TRUSTED_PROXIES = env_list("LMWEB_TRUSTED_PROXIES", [])
try:
    TRUSTED_PROXY_NETWORKS = [
        ipaddress.ip_network(item, strict=False) for item in LMWEB_TRUSTED_PROXIES
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"LMWEB_TRUSTED_PROXIES: {exc}") from None
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "jobs.api.throttles.AnonRateThrottle",
    "jobs.api.throttles.UserRateThrottle",
]
# A user's jobs waiting (QUEUED) and running at once (INITIALIZING, RUNNING, CANCELING): over
# the first a submission is 429; over the second a job waits in the queue and is looked at
# again every LMWEB_USER_RETRY_SECONDS.
LMWEB_USER_MAX_QUEUED = env_int("LMWEB_USER_MAX_QUEUED", 100, minimum=1)
LMWEB_USER_MAX_RUNNING = env_int("LMWEB_USER_MAX_RUNNING", 4, minimum=1)
LMWEB_USER_RETRY_SECONDS = env_int("LMWEB_USER_RETRY_SECONDS", 10, minimum=1, maximum=3600)
# selftest work (tasks x seconds) a non-staff user may request; staff may request up to the
# workflow's own maximum.
LMWEB_SELFTEST_MAX_WORK = env_int("LMWEB_SELFTEST_MAX_WORK", 600)

# --- Input inspection (issue 11, items 1, 2 and 7; jobs/inspection.py). Uploads and job inputs
# are looked at in a subprocess with this memory cap (address space) and this wall-clock budget
# for all of a request's inputs together; an input over any limit is a 400 naming it. Every
# limit shows in GET /api/v1/workflows/ (each workflow's `limits`).
INSPECT_MEMORY_BYTES = env_size("LMWEB_INSPECT_MEMORY", 1024**3)
if INSPECT_MEMORY_BYTES < 256 * 1024**2:
    # Python with numpy and GDAL loaded maps ~300 MB before it reads a byte.
    raise ImproperlyConfigured("LMWEB_INSPECT_MEMORY must be at least 256M")
INSPECT_SECONDS = env_int("LMWEB_INSPECT_SECONDS", 8, minimum=1, maximum=600)
MAX_PAM_CELLS = env_int("LMWEB_MAX_PAM_CELLS", 50_000_000, minimum=1)
MAX_TREE_TIPS = env_int("LMWEB_MAX_TREE_TIPS", 50_000, minimum=2)
MAX_RASTER_PIXELS = env_int("LMWEB_MAX_RASTER_PIXELS", 100_000_000, minimum=1)
MAX_RASTER_BANDS = env_int("LMWEB_MAX_RASTER_BANDS", 16, minimum=1)
MAX_CSV_ROWS = env_int("LMWEB_MAX_CSV_ROWS", 5_000_000, minimum=2)
MAX_ZIP_MEMBERS = env_int("LMWEB_MAX_ZIP_MEMBERS", 10_000, minimum=1)
MAX_ZIP_UNPACKED = env_size("LMWEB_MAX_ZIP_UNPACKED", 4 * 1024**3)
MAX_INPUT_DATASETS = env_int("LMWEB_MAX_INPUT_DATASETS", 100, minimum=1)
# Randomizations (pam-stats) or permutations (mcpa) x PAM cells. A production run, 2,114 sites
# x 55 species x 10,000 randomizations, is 1.16e9; a continental one, 5,712 sites x 7,033
# species x 100 randomizations (B10), 4.0e9.
MAX_RANDOMIZED_CELLS = env_int("LMWEB_MAX_RANDOMIZED_CELLS", 5_000_000_000, minimum=1)

# occurrence-cleaning's `name_resolver: gbif` (issue 15): off unless the deployment's workers
# may reach the name service; its rule alone gets the network (the guard, LMWEB_RULE_NETWORK).
GBIF_NAMES = env_bool("LMWEB_GBIF_NAMES", False)
GBIF_API_URL = env_url("LMWEB_GBIF_API_URL", "https://api.gbif.org/v1", {"http", "https"})

# The GA4GH faces (issue 17): who runs this service, and where a client reads how to get a token
# (empty: this service's own README, served at /readme).
LMWEB_WES_SERVICE_ID = env_str("LMWEB_SERVICE_ID", f"org.lifemapper.lmweb.{LMWEB_DEPLOYMENT}")
LMWEB_WES_ORGANIZATION = env_str("LMWEB_ORGANIZATION", "Lifemapper")
LMWEB_WES_ORGANIZATION_URL = env_url(
    "LMWEB_ORGANIZATION_URL", "https://lifemapper.org", {"http", "https"}
)
LMWEB_WES_AUTH_INSTRUCTIONS_URL = env_str("LMWEB_AUTH_INSTRUCTIONS_URL", "")

# Completion callbacks (issue 17): a POST to the job's callback_url when it finishes, signed with
# the owner's secret, retried with back-off (RETRY_SECONDS, doubling, at most an hour) up to
# ATTEMPTS times. Private, loopback and link-local addresses are refused unless allowed here.
CALLBACK_ALLOW_PRIVATE = env_bool("LMWEB_CALLBACK_ALLOW_PRIVATE", False)
CALLBACK_ATTEMPTS = env_int("LMWEB_CALLBACK_ATTEMPTS", 8, minimum=1, maximum=100)
CALLBACK_RETRY_SECONDS = env_int("LMWEB_CALLBACK_RETRY_SECONDS", 10, minimum=1, maximum=3600)
CALLBACK_TIMEOUT_SECONDS = env_int("LMWEB_CALLBACK_TIMEOUT", 10, minimum=1, maximum=300)

# Live logs (issue 17): the web service as the workers reach it; each rule's guard sends its
# output there while it runs. Empty: no live logs (a rule's output is read once it has ended).
# `make run` and the tests' stacks serve the web on LMWEB_PORT of this machine.
_WEB_PORT = env_str("LMWEB_PORT", "")
_LOCAL_WEB = f"http://127.0.0.1:{_WEB_PORT}" if _WEB_PORT.isdigit() else ""
LIVE_LOG_URL = env_str("LMWEB_LOG_URL", _LOCAL_WEB).rstrip("/")
LIVE_LOG_MAX_BYTES = env_size("LMWEB_LIVE_LOG_MAX_BYTES", 16 * 1024**2)

# --- Contain makeflow (issue 11, item 5). Each makeflow runs in bubblewrap, where only its job
# folder can be written: CCTools 9.9's manager writes a returned output wherever the worker's
# reply names it. On by default when /usr/bin/bwrap (Debian's bubblewrap, the one
# jobs.cctools.makeflow starts) exists; LMWEB_CONFINE_MAKEFLOW=1 makes it required, =0 turns it off.
_BWRAP = Path("/usr/bin/bwrap")
LMWEB_CONFINE_MAKEFLOW = env_bool("LMWEB_CONFINE_MAKEFLOW", os.access(_BWRAP, os.X_OK))
if LMWEB_CONFINE_MAKEFLOW and not os.access(_BWRAP, os.X_OK):
    raise ImproperlyConfigured(
        f"LMWEB_CONFINE_MAKEFLOW is on but {_BWRAP} is missing: install bubblewrap "
        "(apt-get install bubblewrap) or set LMWEB_CONFINE_MAKEFLOW=0"
    )

# --- Rules on workers (issue 11, items 1, 3 and 4; jobs/sandbox/guard.py). Every rule runs under
# the guard: its declared memory and disk (grown with its inputs, capped here) and the job's time
# are enforced, GDAL is fenced, and (bubblewrap) it sees no network, no other process and none of
# the paths below. LMWEB_RULE_SANDBOX: required (a rule fails where bubblewrap is missing), auto
# (sandbox where bubblewrap works), off (the worker is already isolated, e.g. its own container).
LMWEB_RULE_SANDBOX = env_str("LMWEB_RULE_SANDBOX", "required")
if LMWEB_RULE_SANDBOX not in {"required", "auto", "off"}:
    raise ImproperlyConfigured(
        f"LMWEB_RULE_SANDBOX={LMWEB_RULE_SANDBOX!r} must be required, auto or off"
    )
LMWEB_RULE_MAX_MEMORY_MB = env_int("LMWEB_RULE_MAX_MEMORY_MB", 16384, minimum=64)
LMWEB_RULE_MAX_DISK_MB = env_int("LMWEB_RULE_MAX_DISK_MB", 32768, minimum=64)
# Hidden from every rule on this host's workers, besides the data folder, var/, the scratch
# folder, the Work Queue password and /run (sockets): e.g. other secrets of the host.
_SQLITE = DATABASES["default"]["ENGINE"].endswith("sqlite3")
LMWEB_RULE_HIDE = list(
    dict.fromkeys(
        str(Path(p))
        for p in [
            DATA_DIR,
            BASE_DIR / "var",
            LMWEB_SCRATCH_DIR,
            LMWEB_WQ_PASSWORD_FILE,
            *([Path(DATABASES["default"]["NAME"]).parent] if _SQLITE else []),
            *env_list("LMWEB_RULE_HIDE", []),
        ]
    )
)

LOG_FORMAT = env_str("LMWEB_LOG_FORMAT", "json")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LMWEB_LOG_FORMAT={LOG_FORMAT!r} must be json or plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"job": {"()": "lmweb.logs.JobFilter"}},
    "formatters": {
        "json": {"()": "lmweb.logs.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(job_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["job"]}
    },
    "root": {"handlers": ["console"], "level": env_str("LMWEB_LOG_LEVEL", "INFO")},
}
# Celery logs through the same handler, so its lines are structured too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Production (DEBUG off) speaks HTTPS only; LMWEB_HTTPS=0 turns that off for a plain-HTTP
# deployment behind a trusted network (then `check --deploy` says so).
HTTPS = env_bool("LMWEB_HTTPS", not DEBUG)
if HTTPS:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
    SECURE_HSTS_SECONDS = env_int("LMWEB_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
if env_bool("LMWEB_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
