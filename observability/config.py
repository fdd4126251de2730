"""
Every setting and threshold of the observability app, with its default.

This module is the only reader of ``settings.OBSERVABILITY_*``. Each value is read once and
remembered until Django announces a change of that setting (``setting_changed``, which
``override_settings`` and the pytest ``settings`` fixture send), so tests may change any of
them, and the rules, called tens of thousands of times by a snapshot refresh, do not pay for
Django's settings lookup each time (a missing setting costs a raised AttributeError). Only
``del settings.X`` of pytest-django's fixture sends no signal: set a value in tests instead.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

_UNSET = object()
#: The settings read so far, by name without the prefix (``_UNSET``: not set, use the default).
_read: dict[str, object] = {}


def _get(name: str, default):
    value = _read.get(name, _UNSET)
    if value is _UNSET and name not in _read:
        value = _read[name] = getattr(settings, f"OBSERVABILITY_{name}", _UNSET)
    return default if value is _UNSET else value


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs) -> None:
    """Read a changed setting again at its next use."""
    if setting.startswith("OBSERVABILITY_"):
        _read.pop(setting.removeprefix("OBSERVABILITY_"), None)


def bot_database_alias() -> str:
    """The Django database alias that holds the bot's tables."""
    return _get("BOT_DATABASE", "bot")


# --- Session health ---------------------------------------------------------------------------


def stale_warning_after() -> timedelta:
    """No write to a session's creds or keys for this long makes it WARN (or it is quiet)."""
    return _get("STALE_WARNING_AFTER", timedelta(hours=24))


def stale_failure_after() -> timedelta:
    """No write to a session's creds or keys for this long makes it FAIL (or it is quiet)."""
    return _get("STALE_FAILURE_AFTER", timedelta(hours=48))


def min_prekey_count() -> int:
    """
    A paired session with fewer stored pre-keys than this WARNs (none at all FAILs).

    Baileys' ``MIN_PREKEY_COUNT`` (``src/Defaults/index.ts``): at that many or fewer on the
    server it uploads more, at login.
    """
    return _get("MIN_PREKEY_COUNT", 5)


# --- Connections ------------------------------------------------------------------------------


def connections_per_service() -> int:
    """Connection budget of each service (application_name) on the bot's server."""
    return _get("CONNECTIONS_PER_SERVICE", 3)


def bot_breaker_cooloff() -> timedelta:
    """
    After a failed bot-database connection, how long this process fails at once (503).

    Then one request tries again (observability.circuit_breaker). Short: a bot database that
    comes back is used again within this long.
    """
    return _get("BOT_BREAKER_COOLOFF", timedelta(seconds=5))


# --- Cleanup (observability.cleanup) --------------------------------------------------------


def cleanup_retention() -> dict:
    """
    Retentions that differ from the policy's defaults (``observability.cleanup.policy``).

    ``{key type: timedelta | days | None}``: how long since its last write a key of that type
    is kept before age may delete it; None: never for its age. Pre-keys and app-state sync
    keys cannot be given one.
    """
    return dict(_get("CLEANUP_RETENTION", {}))


def cleanup_batch_size() -> int:
    """Rows deleted per batch; each batch is its own short transaction."""
    return _get("CLEANUP_BATCH_SIZE", 5000)


def cleanup_lock_timeout() -> timedelta:
    """How long one cleanup statement may wait for a lock before the batch gives up."""
    return _get("CLEANUP_LOCK_TIMEOUT", timedelta(seconds=1))


def cleanup_statement_timeout() -> timedelta:
    """How long one cleanup statement may run: bounds how long the bot can wait on a batch."""
    return _get("CLEANUP_STATEMENT_TIMEOUT", timedelta(seconds=10))


def cleanup_orphan_age() -> timedelta:
    """Keys of a session without a ``whatsapp_auth`` row are deleted when unwritten this long."""
    return _get("CLEANUP_ORPHAN_AGE", timedelta(days=7))


def cleanup_duplicate_min_idle() -> timedelta:
    """The stale spelling of a duplicated session must be unwritten this long to be removed."""
    return _get("CLEANUP_DUPLICATE_MIN_IDLE", timedelta(hours=24))


def cleanup_backup_dir():
    """Folder for the gzip JSON-lines backups written before duplicate sessions are removed."""
    from pathlib import Path

    default = Path(settings.BASE_DIR) / "var" / "cleanup-backups"
    return Path(_get("CLEANUP_BACKUP_DIR", default))


def cleanup_schedule_hour() -> int:
    """Hour of the day (UTC) at which the queued expired-key cleanup runs."""
    return _get("CLEANUP_SCHEDULE_HOUR", 3)


# --- Health checks, metrics and the store alert (observability.health_checks, .activity) ----


def health_database_aliases() -> tuple[str, ...]:
    """The database aliases the Database and ConnectionPool checks look at."""
    return tuple(_get("HEALTH_DATABASE_ALIASES", ("default", bot_database_alias())))


def health_statement_timeout() -> timedelta:
    """Statement timeout of the Database check's trivial query (and of activity queries)."""
    return _get("HEALTH_STATEMENT_TIMEOUT", timedelta(seconds=2))


def health_connect_timeout() -> timedelta:
    """How long a health check waits for a connection (pooled or new) before it fails."""
    return _get("HEALTH_CONNECT_TIMEOUT", timedelta(seconds=2))


def health_latency_warning() -> timedelta:
    """A Database check answered slower than this is a warning."""
    return _get("HEALTH_LATENCY_WARNING", timedelta(milliseconds=250))


def health_result_ttl() -> timedelta:
    """
    How long one process reuses the service checks' results for ``/health/`` and its groups.

    Callers within this time of a computation's start (and those arriving while it runs) share
    it; 0 runs the checks for every request. ``/health/whatsapp/`` is never reused.
    """
    return _get("HEALTH_RESULT_TTL", timedelta(seconds=1))


def activity_database_alias() -> str:
    """The alias whose server's ``pg_stat_activity`` the connection budget reads."""
    return _get("ACTIVITY_DATABASE", bot_database_alias())


def activity_statement_timeout() -> timedelta:
    """Statement timeout of each ``pg_stat_activity`` query."""
    return _get("ACTIVITY_STATEMENT_TIMEOUT", timedelta(seconds=2))


def connection_budget_overrides() -> dict[str, int]:
    """Per-``application_name`` budgets that differ from :func:`connections_per_service`."""
    return dict(_get("CONNECTION_BUDGET_OVERRIDES", {}))


def connections_total_warning() -> float:
    """Share of ``max_connections`` in use at or above which the budget check warns."""
    return _get("CONNECTIONS_TOTAL_WARNING", 0.80)


def connections_total_failure() -> float:
    """Share of ``max_connections`` in use at or above which the budget check fails."""
    return _get("CONNECTIONS_TOTAL_FAILURE", 0.95)


def idle_in_transaction_warning() -> timedelta:
    """A session idle in a transaction for longer than this is a warning (holds locks)."""
    return _get("IDLE_IN_TRANSACTION_WARNING", timedelta(seconds=60))


def long_query_warning() -> timedelta:
    """A query running longer than this is a warning."""
    return _get("LONG_QUERY_WARNING", timedelta(seconds=60))


def queue_heartbeat_max_age() -> timedelta:
    """A django-q2 cluster whose last heartbeat is older than this counts as dead."""
    return _get("QUEUE_HEARTBEAT_MAX_AGE", timedelta(seconds=30))


def cleanup_task_func() -> str:
    """Dotted path of the scheduled cleanup task the queue check watches."""
    return _get("CLEANUP_TASK_FUNC", "observability.tasks.cleanup_expired_keys_task")


def cleanup_overdue_margin() -> timedelta:
    """The scheduled cleanup may be this late past its period before the queue check warns."""
    return _get("CLEANUP_OVERDUE_MARGIN", timedelta(hours=1))


def task_failure_window() -> timedelta:
    """Failed django-q2 tasks within this window make the queue check warn."""
    return _get("TASK_FAILURE_WINDOW", timedelta(hours=24))


def health_token() -> str:
    """Bearer token that shows check messages and /metrics (empty: staff only)."""
    return _get("HEALTH_TOKEN", "") or ""


def metrics_max_application_labels() -> int:
    """Distinct ``application_name`` labels in /metrics; the rest are summed as ``other``."""
    return _get("METRICS_MAX_APPLICATION_LABELS", 20)


def store_alert_cooldown() -> timedelta:
    """The store alert reports the same cause to Sentry at most once in this period."""
    return _get("STORE_ALERT_COOLDOWN", timedelta(minutes=30))


def store_alert_cache_alias() -> str:
    """The cache (shared between processes) that keeps the alert's last status and cooldowns."""
    return _get("STORE_ALERT_CACHE", "default")


# --- The stored snapshot of session health (observability.snapshot) ---------------------------


def snapshot_full_interval() -> timedelta:
    """
    A refresh recounts every session when the last full one is older than this.

    Incremental refreshes cannot see rows the bot deleted (nothing of a deleted row remains to
    find); the full recount corrects that drift.
    """
    return _get("SNAPSHOT_FULL_INTERVAL", timedelta(hours=1))


def snapshot_overlap() -> timedelta:
    """
    How far back an open bot transaction may move the incremental refresh's starting point.

    Each refresh records where the next one starts reading changed rows: the bot database's
    clock, or the start of its oldest writing transaction still open then (whose rows commit
    later, stamped earlier), at most this much before it. Rows of a transaction open longer
    wait for the full recount.
    """
    return _get("SNAPSHOT_OVERLAP", timedelta(minutes=1))


def snapshot_history_retention() -> timedelta:
    """Session changes older than this are pruned (the latest state is always kept)."""
    return _get("SNAPSHOT_HISTORY_RETENTION", timedelta(days=90))


def snapshot_log_retention() -> timedelta:
    """Refresh records (one a minute) older than this are pruned; the newest is always kept."""
    return _get("SNAPSHOT_LOG_RETENTION", timedelta(days=2))


def snapshot_stale_warning() -> timedelta:
    """A snapshot older than this makes pages and /health/ warn (the worker may be down)."""
    return _get("SNAPSHOT_STALE_WARNING", timedelta(minutes=3))


def snapshot_stale_failure() -> timedelta:
    """A snapshot older than this fails /health/ (what pages show is that old)."""
    return _get("SNAPSHOT_STALE_FAILURE", timedelta(minutes=10))


def flapping_window() -> timedelta:
    """The window over which status changes are counted to call a session flapping."""
    return _get("FLAPPING_WINDOW", timedelta(hours=24))


def flapping_min_changes() -> int:
    """A session whose status changed at least this often within the window is flapping."""
    return _get("FLAPPING_MIN_CHANGES", 4)


# --- History detectors (observability.rules.HISTORY_RULES) ------------------------------------


def reconnect_window() -> timedelta:
    """The window in which creds rewritten in many separate minutes are a reconnect loop."""
    return _get("RECONNECT_WINDOW", timedelta(minutes=10))


def reconnect_min_minutes() -> int:
    """Separate minutes with a creds rewrite, within the window, that make a reconnect loop."""
    return _get("RECONNECT_MIN_MINUTES", 3)


def reconnect_again_within() -> timedelta:
    """A login this soon after the bot's previous connection is a reconnect loop at once."""
    return _get("RECONNECT_AGAIN_WITHIN", timedelta(minutes=2))


def decrypt_window() -> timedelta:
    """The window in which pre-keys created one at a time are counted as decryption failures."""
    return _get("DECRYPT_WINDOW", timedelta(minutes=10))


def decrypt_warning_count() -> int:
    """Pre-keys created one at a time within the window that make a WARN."""
    return _get("DECRYPT_WARNING_COUNT", 2)


def decrypt_failure_count() -> int:
    """Pre-keys created one at a time within the window that make a FAIL."""
    return _get("DECRYPT_FAILURE_COUNT", 10)


def rows_lost_window() -> timedelta:
    """The window in which a fall of a session's ``session`` rows is summed."""
    return _get("ROWS_LOST_WINDOW", timedelta(hours=1))


def rows_lost_min_rows() -> int:
    """At least this many ``session`` rows must be lost within the window to warn."""
    return _get("ROWS_LOST_MIN_ROWS", 10)


def rows_lost_min_share() -> float:
    """At least this share of the ``session`` rows must be lost within the window to warn."""
    return _get("ROWS_LOST_MIN_SHARE", 0.5)


def paired_again_window() -> timedelta:
    """A pairing is shown as a WARN this long when unexpected; two within it are a repeat."""
    return _get("PAIRED_AGAIN_WINDOW", timedelta(days=1))


def rhythm_min_history() -> timedelta:
    """A session's rhythm replaces the flat silence rule once it was observed this long."""
    return _get("RHYTHM_MIN_HISTORY", timedelta(days=7))


def rhythm_min_writes() -> int:
    """... and once at least this many minutes with a write were counted."""
    return _get("RHYTHM_MIN_WRITES", 50)


def silence_warning_probability() -> float:
    """
    WARN when the session's rhythm gives its silence a probability below this.

    Each write starts a new silence, and a busy salon has a couple of hundred a day, so the
    chance of one of them looking this unlikely is that many times larger; the WARN is shown,
    not sent (``bench/DETECTION.md`` counts both).
    """
    return _get("SILENCE_WARNING_PROBABILITY", 1e-3)


def silence_failure_probability() -> float:
    """FAIL when the session's rhythm gives its silence a probability below this (it alerts)."""
    return _get("SILENCE_FAILURE_PROBABILITY", 1e-6)


def silence_day_prior() -> float:
    """
    How firmly a silence's odds hold to the session's usual pace, in minutes with a write.

    A day runs busier or calmer than the rhythm (in the simulator by a log-normal factor of
    sigma 0.35, about what 8 minutes with a write pin down). The minutes counted before the
    silence move the belief about today's pace; this prior is added to both sides, so a few
    minutes decide little and a quiet stretch on a calm day is not taken for a dead session.
    """
    return _get("SILENCE_DAY_PRIOR", 8.0)


def silence_pace_cap() -> float:
    """A busy morning counts for at most this many times the usual pace in a silence's odds."""
    return _get("SILENCE_PACE_CAP", 1.0)


# --- Alerts: the transition stream and its webhook (observability.alerts, .webhook) ----------


def alert_webhook_url() -> str:
    """Where each transition is POSTed as JSON (empty: no webhook)."""
    return _get("ALERT_WEBHOOK_URL", "") or ""


def alert_webhook_secret() -> str:
    """The HMAC-SHA256 key that signs each webhook body (never sent, logged or shown)."""
    return _get("ALERT_WEBHOOK_SECRET", "") or ""


def alert_webhook_timeout() -> timedelta:
    """How long one webhook delivery may take (connect and answer)."""
    return _get("ALERT_WEBHOOK_TIMEOUT", timedelta(seconds=5))


def alert_webhook_max_attempts() -> int:
    """Deliveries are tried this many times before they are given up as failed."""
    return _get("ALERT_WEBHOOK_MAX_ATTEMPTS", 6)


def alert_webhook_backoff() -> timedelta:
    """The wait before the first retry; each later retry waits twice as long."""
    return _get("ALERT_WEBHOOK_BACKOFF", timedelta(minutes=1))


def public_url() -> str:
    """The admin's public address for links in alerts (empty: links are paths only)."""
    return (_get("PUBLIC_URL", "") or "").rstrip("/")


# --- Insights into the bot's database (observability.insights) --------------------------------


def insights_statement_timeout() -> timedelta:
    """Each insights panel's queries are cancelled after this long (the page stays fast)."""
    return _get("INSIGHTS_STATEMENT_TIMEOUT", timedelta(seconds=2))


def insights_long_transaction_after() -> timedelta:
    """A transaction open longer than this is listed as long (it holds back vacuum)."""
    return _get("INSIGHTS_LONG_TRANSACTION_AFTER", timedelta(seconds=60))


def insights_size_retention() -> timedelta:
    """Table and index size samples older than this are deleted when new ones are taken."""
    return _get("INSIGHTS_SIZE_RETENTION", timedelta(days=90))
