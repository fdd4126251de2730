"""
Settings for the project hosting the observability app.

This module is the only reader of the environment (see README "Configuration"). With neither
``DATABASE_URL`` nor ``BOT_DATABASE_URL`` set, it starts an embedded PostgreSQL (pgserver) and
uses two databases on it, so a newcomer can run the demo and the tests with nothing installed.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE as CSP_NONE
from csp.constants import SELF as CSP_SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_number(name: str, default: str, kind: type = int):
    """A number from the environment; a malformed one names the variable (one line, exit 78)."""
    raw = os.environ.get(name, "") or default
    try:
        return kind(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be a {'whole number' if kind is int else 'number'}, not {raw!r}."
        ) from None


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Databases -------------------------------------------------------------------------------

DATABASE_URL = os.environ.get("DATABASE_URL", "")
BOT_DATABASE_URL = os.environ.get("BOT_DATABASE_URL", "")
#: True when the project runs on its own embedded PostgreSQL (demo, tests).
EMBEDDED_DATABASE = not DATABASE_URL and not BOT_DATABASE_URL
EMBEDDED_DATA_DIR = Path(os.environ.get("OBSERVABILITY_DATA_DIR", BASE_DIR / "var" / "pgdata"))

#: The name this service shows in pg_stat_activity; each alias adds its own suffix.
APPLICATION_NAME = os.environ.get("DB_APPLICATION_NAME", "observability")
#: Pooling is switched off for processes that fork after connecting (django-q2's qcluster).
DB_POOL_ENABLED = _env_bool("DB_POOL", True)
DB_POOL_MAX_SIZE = _env_number("DB_POOL_MAX_SIZE", "3")
DB_POOL_TIMEOUT = _env_number("DB_POOL_TIMEOUT", "5", float)
#: A ceiling on any single statement this project runs on the bot database: well below
#: gunicorn's worker timeout (README "Running each part": --timeout 30), so a slow page answers
#: 504 "query timed out" instead of its worker being killed. Cleanup batches set their own.
BOT_STATEMENT_TIMEOUT_MS = _env_number("BOT_STATEMENT_TIMEOUT_MS", "10000")
#: How long a statement on the bot database may wait for a lock (the bot's DDL, a VACUUM FULL,
#: an operator's LOCK TABLE): a page answers 504 after this instead of waiting the whole lock.
BOT_LOCK_TIMEOUT_MS = _env_number("BOT_LOCK_TIMEOUT_MS", "2000")
#: Seconds to wait for the bot database to accept a connection: an unreachable server then
#: fails fast ("bot database unavailable") instead of holding a worker (libpq connect_timeout;
#: values under 2 count as 2).
BOT_CONNECT_TIMEOUT = _env_number("BOT_CONNECT_TIMEOUT", "2")


def _database(config: dict, application_name: str, extra_options: dict | None = None) -> dict:
    """Add this project's pool, application name and options to one parsed database config."""
    options = dict(config.get("OPTIONS") or {})
    options.setdefault("application_name", application_name)
    options.update(extra_options or {})
    if DB_POOL_ENABLED:
        options["pool"] = {
            "min_size": 0,
            "max_size": DB_POOL_MAX_SIZE,
            "timeout": DB_POOL_TIMEOUT,
            "max_lifetime": 600,
            "max_idle": 300,
            "name": application_name,
        }
    return {
        **config,
        "OPTIONS": options,
        "CONN_MAX_AGE": 0,  # a pool requires 0; without one, close after each request
        "CONN_HEALTH_CHECKS": True,
    }


#: ``manage.py embedded_db status|stop`` looks at the server: starting it first would defeat it.
_INSPECTING_EMBEDDED = sys.argv[1:2] == ["embedded_db"]

if EMBEDDED_DATABASE:
    try:
        # The demo package and pgserver come with the demo extra (pip install -e '.[demo]');
        # a production install has neither.
        from observability_demo import embedded

        # pgserver puts the server's socket in its data folder.
        _socket_dir = (
            str(EMBEDDED_DATA_DIR) if _INSPECTING_EMBEDDED else embedded.start(EMBEDDED_DATA_DIR)
        )
    except ModuleNotFoundError as _missing:
        raise ImproperlyConfigured(
            f"No database URLs are set and the embedded PostgreSQL is not installed "
            f"({_missing}): set DATABASE_URL and BOT_DATABASE_URL, or install the demo with "
            "pip install -e '.[demo]'."
        ) from None
    _default_config = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": _socket_dir,
        "USER": "postgres",
        "PASSWORD": "",
        "NAME": embedded.DEFAULT_DATABASE_NAME,
    }
    _bot_config = {**_default_config, "NAME": embedded.BOT_DATABASE_NAME}
    _url_options: dict = {}
elif DATABASE_URL and BOT_DATABASE_URL:
    _default_config = dj_database_url.parse(DATABASE_URL)
    _bot_config = dj_database_url.parse(BOT_DATABASE_URL)
    # Production databases are managed PostgreSQL over TLS: require it unless the URL says
    # otherwise (e.g. ``?sslmode=verify-full`` or, for a local server, ``?sslmode=disable``).
    for _config in (_default_config, _bot_config):
        _config.setdefault("OPTIONS", {}).setdefault("sslmode", "require")
else:
    raise ImproperlyConfigured(
        "Set both DATABASE_URL and BOT_DATABASE_URL, or neither to use the embedded PostgreSQL."
    )

DATABASES = {
    "default": _database(_default_config, f"{APPLICATION_NAME}:default"),
    "bot": _database(
        # Django's PostgreSQL backend with a circuit breaker (observability/db_backend).
        {**_bot_config, "ENGINE": "observability.db_backend"},
        APPLICATION_NAME,
        {
            "options": (
                f"-c statement_timeout={BOT_STATEMENT_TIMEOUT_MS} "
                f"-c lock_timeout={BOT_LOCK_TIMEOUT_MS}"
            ),
            "connect_timeout": BOT_CONNECT_TIMEOUT,
            # A server that stops answering mid-query over TCP (a network partition) is given
            # up after ~20 s (keepalives) or 10 s of unacknowledged data, below the worker
            # timeout; libpq ignores both on a Unix socket.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 2,
            "tcp_user_timeout": 10000,
        },
    ),
}
# The bot's tables sit in their own alias and are never migrated (observability.routers).
DATABASE_ROUTERS = ["observability.routers.BotDatabaseRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Core ------------------------------------------------------------------------------------

DEBUG = _env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not EMBEDDED_DATABASE:
        raise ImproperlyConfigured("SECRET_KEY must be set when database URLs are configured.")
    # Only the embedded demo and the tests run without a configured key.
    SECRET_KEY = "django-insecure-embedded-demo-key-not-for-production"  # noqa: S105
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "health_check",
    "django_q",
    "axes",  # login throttling (README "Staff access"); its own tables in the default database
    "csp",  # Content-Security-Policy header (README "Staff access"); its system checks
    "observability",
]
#: The demo app (observability_demo: the ``demo``, ``seed_demo_data``, ``create_bot_schema`` and
#: ``embedded_db`` commands) is on with the embedded database; ``DEMO_APP=1`` turns it on with
#: configured URLs too (seeding a staging copy), ``DEMO_APP=0`` off. Production leaves it off.
DEMO_APP = _env_bool("DEMO_APP", EMBEDDED_DATABASE)
if DEMO_APP:
    INSTALLED_APPS.append("observability_demo")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Late, so it sees view errors first: the project's errors become one JSON/HTML answer.
    "observability.middleware.ObservabilityErrorMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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
# Dates Django formats itself read as the ops pages' moments (2026-11-30 19:40 UTC).
FORMAT_MODULE_PATH = ["project.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# One cache shared by the web server and the django-q2 worker (cluster heartbeats live here).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "observability_cache",
    },
}

# --- Security (production) -------------------------------------------------------------------

SESSION_COOKIE_SECURE = _env_bool("SECURE_COOKIES", not EMBEDDED_DATABASE)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", not EMBEDDED_DATABASE)
SECURE_HSTS_SECONDS = int(
    os.environ.get("SECURE_HSTS_SECONDS", "0" if EMBEDDED_DATABASE else "31536000")
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # Preloading commits the whole parent domain to HTTPS in browsers for months: that is the
    # domain owner's decision (SECURE_HSTS_PRELOAD=1), not this service's, so `check --deploy`
    # does not warn about it.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
if _env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Every page, the admin's included, loads scripts, styles, images and fonts from this site
# only, and nothing inline: an injected <script> or style attribute is refused by the browser.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [CSP_NONE],
        "script-src": [CSP_SELF],
        "style-src": [CSP_SELF],
        "img-src": [CSP_SELF, "data:"],
        "font-src": [CSP_SELF],
        "connect-src": [CSP_SELF],
        "form-action": [CSP_SELF],
        "frame-ancestors": [CSP_NONE],
        "base-uri": [CSP_NONE],
        "object-src": [CSP_NONE],
    },
}

# --- Logins (django-axes) and staff sessions -------------------------------------------------

#: A staff login lasts this long (seconds; default 12 h), then the staff user logs in again.
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", str(12 * 3600)))
# AxesStandaloneBackend first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
#: Wrong passwords in a row, for one username from one address, before the login is locked.
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "5"))
#: How long a locked login stays locked (the right password is refused meanwhile).
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a successful login forgets the earlier failures
# No "AXES: BEGIN ..." line at every start of every process and management command; lockouts
# and failed logins are logged all the same.
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "observability/login_locked.html"
# Failed logins are logged (and kept in the admin's "Access attempts") with the username and
# address, so ops see who is being tried from where; the password is always masked by axes.
AXES_SENSITIVE_PARAMETERS: list[str] = []
if _env_bool("BEHIND_TLS_PROXY", False):
    # Behind the proxy every request comes from the proxy's address: lock per client address.
    AXES_CLIENT_IP_CALLABLE = "project.client_ip.forwarded_client_ip"

# --- Health checks and metrics ---------------------------------------------------------------

#: Bearer token that shows health check messages and /metrics to monitors (empty: staff only).
OBSERVABILITY_HEALTH_TOKEN = os.environ.get("HEALTH_TOKEN", "")
#: Seconds the callers of one process share /health/'s results (0: every request runs the checks).
OBSERVABILITY_HEALTH_RESULT_TTL = timedelta(seconds=_env_number("HEALTH_RESULT_TTL", "1", float))
# The optional outgoing alert webhook (observability.webhook): each session's transition to
# FAIL and its recovery, as JSON signed with HMAC-SHA256 of the body. Empty URL: not sent.
OBSERVABILITY_ALERT_WEBHOOK_URL = os.environ.get("ALERT_WEBHOOK_URL", "")
OBSERVABILITY_ALERT_WEBHOOK_SECRET = os.environ.get("ALERT_WEBHOOK_SECRET", "")
# The admin's public address, for links in alerts (e.g. https://ops.example.com).
OBSERVABILITY_PUBLIC_URL = os.environ.get("PUBLIC_URL", "")

# --- django-q2 -------------------------------------------------------------------------------

# Read once by django-q2 at import: tests use project.settings_test to run tasks inline.
Q_CLUSTER = {
    "name": "observability",
    "orm": "default",
    "workers": _env_number("Q_WORKERS", "1"),
    "timeout": 1800,
    "retry": 1860,
    "max_attempts": 1,
    "catch_up": False,
    "cache": "default",
    "save_limit": 500,
    "ack_failures": True,
}

# --- Logging ---------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {
        "expected_failure_one_line": {"()": "observability.log_filters.ExpectedFailureOneLine"},
        "health_poll_once": {"()": "observability.log_filters.HealthPollOncePerChange"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["expected_failure_one_line"],
        },
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
        # A monitor's polls: each check's change of state is logged once, not every poll.
        "health_check": {"filters": ["health_poll_once"]},
        "django.server": {
            "handlers": ["console"],
            "level": "INFO",
            "propagate": False,
            "filters": ["health_poll_once"],
        },
        # A failed bot connection is logged once by observability.circuit_breaker; the pool
        # would add a warning per attempt and per thread of the pool it then discards.
        "psycopg.pool": {"level": "ERROR"},
    },
}

# --- Sentry (observability.sentry) -----------------------------------------------------------


def _env_rate(name: str) -> float:
    raw = os.environ.get(name, "") or "0"
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be a number between 0 and 1, not {raw!r}."
        ) from None


#: Off when empty. Events are scrubbed before sending (README "Sentry").
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
SENTRY_ENVIRONMENT = os.environ.get(
    "SENTRY_ENVIRONMENT", "embedded" if EMBEDDED_DATABASE else "production"
)
SENTRY_TRACES_SAMPLE_RATE = _env_rate("SENTRY_TRACES_SAMPLE_RATE")
SENTRY_PROFILES_SAMPLE_RATE = _env_rate("SENTRY_PROFILES_SAMPLE_RATE")

from observability import __version__ as _observability_version  # noqa: E402
from observability.sentry import init_sentry  # noqa: E402

SENTRY_ENABLED = init_sentry(
    dsn=SENTRY_DSN,
    environment=SENTRY_ENVIRONMENT,
    release=f"observability@{_observability_version}",
    traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
    profiles_sample_rate=SENTRY_PROFILES_SAMPLE_RATE,
)
