"""
Every setting and threshold of the observability app, with its default.

This module is the only reader of ``settings.OBSERVABILITY_*``. Each value is read at call
time so ``override_settings`` and the pytest ``settings`` fixture work.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings


def _get(name: str, default):
    return getattr(settings, f"OBSERVABILITY_{name}", default)


def bot_database_alias() -> str:
    """The Django database alias that holds the bot's tables."""
    return _get("BOT_DATABASE", "bot")


# --- Session health ---------------------------------------------------------------------------


def stale_warning_after() -> timedelta:
    """No key written for this long makes a session WARN."""
    return _get("STALE_WARNING_AFTER", timedelta(hours=24))


def stale_failure_after() -> timedelta:
    """No key written for this long makes a session FAIL (the bot is likely disconnected)."""
    return _get("STALE_FAILURE_AFTER", timedelta(hours=48))


def min_session_keys() -> int:
    """Fewer ``session`` keys than this is suspicious (50-100 is normal)."""
    return _get("MIN_SESSION_KEYS", 10)


def max_expired_share() -> float:
    """More than this share of a session's keys expired makes it FAIL."""
    return _get("MAX_EXPIRED_SHARE", 0.5)


def expired_keys_warning() -> int:
    """Total expired keys in the store at or above this is a warning."""
    return _get("EXPIRED_KEYS_WARNING", 100)


def expired_keys_failure() -> int:
    """Total expired keys in the store above this is critical."""
    return _get("EXPIRED_KEYS_FAILURE", 500)


# --- Connections ------------------------------------------------------------------------------


def connections_per_service() -> int:
    """Connection budget of each service (application_name) on the bot's server."""
    return _get("CONNECTIONS_PER_SERVICE", 3)


# --- Cleanup (observability.cleanup) --------------------------------------------------------


def cleanup_grace_period() -> timedelta:
    """Expired keys are deleted only this long after ``expires_at`` (a quiet contact's key)."""
    return _get("CLEANUP_GRACE_PERIOD", timedelta(days=7))


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
