"""The store alert: report the store turning FAIL to Sentry, once per cause per cooldown."""

from __future__ import annotations

import logging

from django.core.cache import caches
from django.utils import timezone

from observability import config, health_checks
from observability import sentry as sentry_reporting

logger = logging.getLogger(__name__)

#: Cache keys (in the cache shared by the web server and the worker).
STATUS_KEY = "observability:store-alert:status"
FAILING_CAUSES_KEY = "observability:store-alert:failing-causes"
COOLDOWN_KEY = "observability:store-alert:cooldown:{cause}"


def check_store_and_alert() -> dict:
    """
    Judge the store now and report each cause that has just turned FAIL to Sentry.

    A cause is reported when it fails now and did not fail at the previous run (the previous
    status and failing causes are kept in the shared cache), and only when no report of the
    same cause was sent within ``store_alert_cooldown`` (30 minutes by default), so a flapping
    store does not page every five minutes. Each cause is its own Sentry issue (fingerprint)
    and carries the recommended action. With Sentry not initialised nothing is sent; the
    status is still recorded.

    Called every five minutes by ``observability.tasks.check_store_health``.

    Returns:
        ``{"status", "previous_status", "failing_causes", "reported", "suppressed"}``, which
        django-q2 stores as the task's result.

    Raises:
        BotDatabaseUnavailable, QueryTimedOut: the store could not be read (the task wrapper
            reports those to Sentry itself).

    """
    from observability.sessions import Status

    store = health_checks.store_health_fresh()
    status = store.status
    failing = {f.cause: f for f in store.findings if f.status is Status.FAIL}

    cache = caches[config.store_alert_cache_alias()]
    previous_status = cache.get(STATUS_KEY)
    previous_failing = set(cache.get(FAILING_CAUSES_KEY) or ())
    cache.set_many({STATUS_KEY: str(status), FAILING_CAUSES_KEY: sorted(failing)}, timeout=None)

    reported: list[str] = []
    suppressed: list[str] = []
    newly_failing = [cause for cause in failing if cause not in previous_failing]
    if newly_failing and sentry_reporting.is_enabled():
        cooldown = int(config.store_alert_cooldown().total_seconds())
        for cause in newly_failing:
            finding = failing[cause]
            # add() only succeeds when no cooldown entry exists: one report per cause per period,
            # whichever process (web or worker) gets there first.
            if not cache.add(
                COOLDOWN_KEY.format(cause=cause), timezone.now().isoformat(), cooldown
            ):
                suppressed.append(cause)
                continue
            sentry_reporting.capture_alert(
                f"WhatsApp store FAIL: {finding.message}.",
                cause=f"store.{cause}",
                action=finding.action,
                level="error",
                operation="health.store",
                total_sessions=store.total_sessions,
                failing_sessions=store.sessions_by_status.get(Status.FAIL, 0),
                expired_keys=store.total_expired_keys,
                duplicate_salons=len(store.duplicate_salon_ids),
            )
            reported.append(cause)
    if reported:
        logger.warning("store alert sent for %s", ", ".join(reported))
    return {
        "status": str(status),
        "previous_status": previous_status,
        "failing_causes": sorted(failing),
        "reported": reported,
        "suppressed": suppressed,
    }
