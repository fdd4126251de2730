"""
django-q2 entry points: thin wrappers over the services, monitored by Sentry.

Every task reports its failure through ``observability.sentry.report_task_failures`` (django-q2
itself tells nobody) and every scheduled run checks in with ``observability.sentry.cron_monitor``.
"""

from __future__ import annotations

import contextlib

from observability import config
from observability.sentry import cron_monitor, report_task_failures

#: Dotted paths django-q2 schedules and ``async_task`` refer to.
CLEANUP_EXPIRED_KEYS = "observability.tasks.cleanup_expired_keys_task"
CLEANUP_ORPHAN_KEYS = "observability.tasks.cleanup_orphan_keys_task"
CLEANUP_DUPLICATES = "observability.tasks.cleanup_duplicates_task"
CHECK_STORE_HEALTH = "observability.tasks.check_store_health"
CAPTURE_TABLE_SIZES = "observability.tasks.capture_table_sizes"
TAKE_SNAPSHOT = "observability.tasks.take_snapshot_task"
DELIVER_ALERT = "observability.tasks.deliver_alert_webhook_task"

#: Sentry cron monitor slugs.
CLEANUP_MONITOR = "observability-cleanup-expired-keys"
HEALTH_MONITOR = "observability-store-health"
SNAPSHOT_MONITOR = "observability-session-snapshot"

#: The bot tables' sizes are stored every hour (the insights page's growth charts).
TABLE_SIZES_CRON = "7 * * * *"

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


@report_task_failures(operation="task:cleanup_expired_keys_task")
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
    monitor = (
        cron_monitor(CLEANUP_MONITOR, cleanup_cron()) if scheduled else contextlib.nullcontext()
    )
    with monitor:
        report = cleanup.cleanup_expired_keys(
            salons=salons,
            sessions=sessions,
            key_types=key_types,
            batch_size=batch_size,
            apply=True,
            started_by=started_by,
        )
    return report.as_dict()


@report_task_failures(operation="task:cleanup_orphan_keys_task")
def cleanup_orphan_keys_task(*, sessions: list[str], now: str, started_by: str) -> dict:
    """
    Delete (applied) the orphan keys of sessions a person confirmed in the admin.

    Args:
        sessions: exact session ids (the admin's selection).
        now: the moment of the confirmed dry run (ISO): the grace period counts back from
            it, so the run deletes what the dry run showed, not keys whose grace ended since.
        started_by: ``admin:<username>``.

    Returns:
        The run's report as JSON-ready data.

    """
    from datetime import datetime

    from observability import cleanup

    report = cleanup.cleanup_orphan_keys(
        sessions=sessions, now=datetime.fromisoformat(now), apply=True, started_by=started_by
    )
    return report.as_dict()


@report_task_failures(operation="task:cleanup_duplicates_task")
def cleanup_duplicates_task(
    *, salons: list[int], confirmed_stale: list[str], started_by: str
) -> dict:
    """
    Remove (applied, with backups) the stale spellings a person confirmed in the admin.

    Args:
        salons: the salons of the admin's selection.
        confirmed_stale: the stale session ids its dry run named; a pair decided
            otherwise by now is refused, not removed.
        started_by: ``admin:<username>``.

    Returns:
        The run's report as JSON-ready data.

    """
    from observability import cleanup

    report = cleanup.cleanup_duplicates(
        salons=salons, confirmed_stale=confirmed_stale, apply=True, started_by=started_by
    )
    return report.as_dict()


@report_task_failures(operation="task:check_store_health")
def check_store_health():
    """Check the WhatsApp store's health and alert on it (every five minutes)."""
    from observability.alerts import check_store_and_alert

    with cron_monitor(HEALTH_MONITOR, HEALTH_CRON):
        return check_store_and_alert()


@report_task_failures(operation="task:take_snapshot_task")
def take_snapshot_task() -> dict:
    """
    Refresh the stored session health (every minute): incremental, full once an hour.

    A refresh that finds another one running returns ``skipped`` without waiting. A failed
    refresh (bot database down) is recorded, reported to Sentry and re-raised; pages keep
    showing the previous snapshot with its age.
    """
    from dataclasses import asdict

    from observability import snapshot

    with cron_monitor(SNAPSHOT_MONITOR, SNAPSHOT_CRON):
        result = snapshot.refresh()
    data = asdict(result)
    data["taken_at"] = result.taken_at.isoformat()
    data["alerts"] = _dispatch_alerts()
    return data


def _dispatch_alerts() -> dict | None:
    """Send the snapshot's new transitions (a failure is reported, the snapshot still counts)."""
    import logging

    from observability import alerts
    from observability.sentry import capture_error

    try:
        return alerts.dispatch_transitions()
    except Exception as error:  # noqa: BLE001 - reported; the next run retries
        capture_error(error, operation="alerts.dispatch")
        logging.getLogger(__name__).warning("alert dispatch failed: %s", type(error).__name__)
        return None


@report_task_failures()
def deliver_alert_webhook_task(delivery_id: int) -> str:
    """Deliver one alert to the webhook (a failed attempt is retried later with backoff)."""
    from observability import webhook

    return webhook.deliver(delivery_id)


@report_task_failures(operation="task:capture_table_sizes")
def capture_table_sizes() -> int:
    """Store the size of every bot table and index (hourly, for the insights page's charts)."""
    from observability import insights

    return insights.capture_sizes()
