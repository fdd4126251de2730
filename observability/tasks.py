"""django-q2 entry points: thin wrappers over the services, monitored by Sentry."""

from __future__ import annotations

import contextlib
import logging

import sentry_sdk

from observability import config

logger = logging.getLogger(__name__)

#: Dotted paths django-q2 schedules and ``async_task`` refer to.
CLEANUP_EXPIRED_KEYS = "observability.tasks.cleanup_expired_keys_task"
CHECK_STORE_HEALTH = "observability.tasks.check_store_health"
TAKE_SNAPSHOT = "observability.tasks.take_snapshot_task"

#: Sentry cron monitor slugs.
CLEANUP_MONITOR = "observability-cleanup-expired-keys"
HEALTH_MONITOR = "observability-store-health"
SNAPSHOT_MONITOR = "observability-session-snapshot"

#: The store health check runs every five minutes.
HEALTH_CRON = "*/5 * * * *"

#: The session health snapshot is refreshed every minute.
SNAPSHOT_CRON = "* * * * *"


def cleanup_cron() -> str:
    """
    The daily expired-key cleanup's crontab (UTC), at the configured hour.

    Raises:
        ImproperlyConfigured: the hour is not a whole number from 0 to 23.

    """
    from django.core.exceptions import ImproperlyConfigured

    hour = config.cleanup_schedule_hour()
    if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
        raise ImproperlyConfigured(
            f"OBSERVABILITY_CLEANUP_SCHEDULE_HOUR must be a whole hour from 0 to 23, not {hour!r}."
        )
    return f"0 {hour} * * *"


def _monitor(slug: str, cron: str):
    """A Sentry cron monitor: check-ins at start and end, missed or late runs alert."""
    return sentry_sdk.monitor(
        monitor_slug=slug,
        monitor_config={
            "schedule": {"type": "crontab", "value": cron},
            "timezone": "UTC",
            "checkin_margin": 5,
            "max_runtime": 30,
        },
    )


def _reported(error: BaseException) -> None:
    """django-q2 reports task failures nowhere: send them to Sentry before re-raising."""
    sentry_sdk.capture_exception(error)
    logger.warning("task failed: %s", type(error).__name__)  # an error log would report twice


def cleanup_expired_keys_task(
    *,
    salons: list[str] | None = None,
    sessions: list[str] | None = None,
    key_types: list[str] | None = None,
    batch_size: int | None = None,
    started_by: str = "task",
) -> dict:
    """
    Delete keys past their retention (applied): the daily schedule and the admin's action.

    Only the scheduled run (``started_by="task"``) checks in with the Sentry cron monitor;
    runs queued from the admin would otherwise look like off-schedule runs.

    Args:
        salons: salon ids in either spelling; None: every session.
        sessions: exact session ids (the admin's selection).
        key_types: restrict to these key types.
        batch_size: rows per batch (default: the setting).
        started_by: ``task`` for the schedule, ``admin:<username>`` from the admin.

    Returns:
        The run's report as JSON-ready data (django-q2 stores it as the task's result).

    """
    from observability import cleanup

    scheduled = started_by == "task"
    monitor = _monitor(CLEANUP_MONITOR, cleanup_cron()) if scheduled else contextlib.nullcontext()
    with monitor:
        try:
            report = cleanup.cleanup_expired_keys(
                salons=salons,
                sessions=sessions,
                key_types=key_types,
                batch_size=batch_size,
                apply=True,
                started_by=started_by,
            )
        except Exception as error:
            _reported(error)
            raise
    return report.as_dict()


def check_store_health():
    """Check the WhatsApp store's health and alert on it (every five minutes)."""
    from observability.alerts import check_store_and_alert

    with _monitor(HEALTH_MONITOR, HEALTH_CRON):
        try:
            return check_store_and_alert()
        except Exception as error:
            _reported(error)
            raise


def take_snapshot_task() -> dict:
    """
    Refresh the stored session health (every minute): incremental, full once an hour.

    A refresh that finds another one running returns ``skipped`` without waiting. A failed
    refresh (bot database down) is recorded, reported to Sentry and re-raised; pages keep
    showing the previous snapshot with its age.
    """
    from dataclasses import asdict

    from observability import snapshot

    with _monitor(SNAPSHOT_MONITOR, SNAPSHOT_CRON):
        try:
            result = snapshot.refresh()
        except Exception as error:
            _reported(error)
            raise
    data = asdict(result)
    data["taken_at"] = result.taken_at.isoformat()
    return data
