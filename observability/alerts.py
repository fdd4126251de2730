"""Alerts: the store's own failures, and each session's transitions, to Sentry and the webhook."""

from __future__ import annotations

import logging

from django.core.cache import caches
from django.utils import timezone

from observability import config, snapshot
from observability import sentry as sentry_reporting

logger = logging.getLogger(__name__)

#: Cache keys (in the cache shared by the web server and the worker).
STATUS_KEY = "observability:store-alert:status"
FAILING_CAUSES_KEY = "observability:store-alert:failing-causes"
COOLDOWN_KEY = "observability:store-alert:cooldown:{cause}"

#: Store causes made of sessions' own FAILs. Each such session's turn to FAIL is already one
#: Sentry event of the transition stream (:func:`dispatch_transitions`), so the store alert
#: does not report them again: one transition, one event.
SESSION_CAUSES = frozenset({"failing_sessions", "one_login_twice"})


def check_store_and_alert() -> dict:
    """
    Read the store's verdict from the stored snapshot; report each cause newly FAIL to Sentry.

    Only the store's own causes are reported (a stale snapshot): a failing session, and one
    login stored twice, are reported per session by :func:`dispatch_transitions`
    (:data:`SESSION_CAUSES`), so one transition is one Sentry event; they still count in the
    status and the failing causes returned. A cause is reported when it fails now and did not
    fail at the previous run (the previous
    status and failing causes are kept in the shared cache), and only when no report of the
    same cause was sent within ``store_alert_cooldown`` (30 minutes by default), so a flapping
    store does not page every five minutes. Each cause is its own Sentry issue (fingerprint)
    and carries the recommended action. With Sentry not initialised nothing is sent; the
    status is still recorded.

    Called every five minutes by ``observability.tasks.check_store_health``.

    Returns:
        ``{"status", "previous_status", "failing_causes", "reported", "suppressed"}``, which
        django-q2 stores as the task's result.

    A snapshot older than ``snapshot_stale_failure`` is a cause of its own
    (``stale_snapshot``).

    Raises:
        SnapshotMissing: no snapshot has been taken yet (the task wrapper reports it).

    """
    from observability.sessions import Status, StoreFinding

    store = snapshot.store_health()
    status = store.status
    failing = {f.cause: f for f in store.findings if f.status is Status.FAIL}
    fresh = snapshot.freshness()
    if fresh.status is Status.FAIL:
        # What pages show is that old: the refresh itself needs an operator.
        failing["stale_snapshot"] = StoreFinding(
            "stale_snapshot",
            Status.FAIL,
            fresh.message.rstrip("."),
            "check that the django-q2 worker runs and that the bot database is reachable.",
        )
        status = Status.FAIL

    cache = caches[config.store_alert_cache_alias()]
    previous_status = cache.get(STATUS_KEY)
    previous_failing = set(cache.get(FAILING_CAUSES_KEY) or ())
    cache.set_many({STATUS_KEY: str(status), FAILING_CAUSES_KEY: sorted(failing)}, timeout=None)

    reported: list[str] = []
    suppressed: list[str] = []
    newly_failing = [
        cause for cause in failing if cause not in previous_failing and cause not in SESSION_CAUSES
    ]
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


# --- The transition stream: each session's turn to FAIL and its recovery, once -----------------

#: Cooldown key of one session's cause (same cache and period as the store alert's causes).
SESSION_COOLDOWN_KEY = "observability:session-alert:cooldown:{session}:{cause}"
#: Transitions read per run (a backlog is worked off over the next runs).
TRANSITIONS_PER_RUN = 500


def dispatch_transitions(now=None) -> dict:
    """
    Send every session transition to FAIL, and every recovery from FAIL, once.

    Reads the stored snapshot's status changes (``SessionChange``) after the last one handled
    and records each as an :class:`~observability.models.AlertDelivery` (its ``change_id`` is
    unique, so a transition goes out once whichever process reads it first; the first run
    starts from the last few minutes, not the whole history). A turn to FAIL goes out unless
    the same session and cause went out within ``store_alert_cooldown`` (the store alert's
    per-cause cooldown); a recovery goes out when its FAIL did. A transition seen longer ago
    than ``snapshot_stale_failure`` (history written into the past, as the demo seeds it, or a
    backlog) is recorded as ``too_old`` and not sent: a page is for what happens now. Going
    out means: a Sentry
    message for a FAIL (one issue per cause, as the store alert), and the optional webhook
    (``observability.webhook``), queued on the django-q2 worker.

    Called after every snapshot refresh by ``observability.tasks.take_snapshot_task``.

    Returns:
        Counts of what was done: ``{"transitions", "sent", "suppressed", "too_old", "queued"}``.

    """
    from django.db import IntegrityError, transaction
    from django.db.models import Max, Q

    from observability.models import AlertDelivery, SessionChange, SessionState

    now = now or timezone.now()
    Outcome = AlertDelivery.Outcome
    last = AlertDelivery.objects.aggregate(last=Max("change_id"))["last"]
    changes = SessionChange.objects.filter(kind=SessionChange.Kind.STATUS).filter(
        Q(new_status="FAIL") | Q(old_status="FAIL")
    )
    if last is None:
        changes = changes.filter(at__gte=now - config.snapshot_stale_failure())
    else:
        changes = changes.filter(id__gt=last)
    changes = list(changes.order_by("id")[:TRANSITIONS_PER_RUN])
    states = SessionState.objects.in_bulk({c.session_id for c in changes})
    cache = caches[config.store_alert_cache_alias()]
    cooldown = int(config.store_alert_cooldown().total_seconds())
    oldest = now - config.snapshot_stale_failure()
    counts = {"transitions": len(changes), "sent": 0, "suppressed": 0, "too_old": 0, "queued": 0}
    queued: list[int] = []
    for change in changes:
        state = states.get(change.session_id)
        failing = change.new_status == "FAIL"
        too_old = change.at < oldest
        if failing:
            fired = (change.data or {}).get("rules") or []
            cause = fired[0] if fired else "unknown"
            goes_out = not too_old and cache.add(
                SESSION_COOLDOWN_KEY.format(session=change.session_id, cause=cause),
                now.isoformat(),
                cooldown,
            )
        else:
            failure = (
                AlertDelivery.objects.filter(session_id=change.session_id, new_status="FAIL")
                .order_by("-change_id")
                .first()
            )
            cause = failure.cause if failure else "unknown"
            goes_out = (
                not too_old
                and failure is not None
                and failure.outcome not in (Outcome.SUPPRESSED, Outcome.TOO_OLD)
            )
        if too_old:
            outcome = Outcome.TOO_OLD
        elif not goes_out:
            outcome = Outcome.SUPPRESSED
        elif config.alert_webhook_url():
            outcome = Outcome.PENDING
        else:
            outcome = Outcome.NO_WEBHOOK
        try:
            with transaction.atomic():
                delivery = AlertDelivery.objects.create(
                    change_id=change.pk,
                    session_id=change.session_id,
                    salon_id=state.salon_id if state else None,
                    old_status=change.old_status,
                    new_status=change.new_status,
                    cause=cause,
                    at=change.at,
                    payload=_payload(change, state, cause),
                    outcome=outcome,
                )
        except IntegrityError:
            continue  # another process handled this transition
        if not goes_out:
            counts["too_old" if too_old else "suppressed"] += 1
            continue
        counts["sent"] += 1
        if failing and sentry_reporting.is_enabled():
            sentry_reporting.capture_alert(
                f"WhatsApp session {change.session_id} FAIL: {cause}.",
                cause=f"session.{cause}",
                action=(change.reasons or ["See the session page."])[0],
                level="error",
                operation="alerts.session",
                session=change.session_id,
            )
            AlertDelivery.objects.filter(pk=delivery.pk).update(sentry=True)
        if outcome == Outcome.PENDING:
            queued.append(delivery.pk)
    queued += [pk for pk in _due_retries(now) if pk not in queued]
    for pk in queued:
        _queue_delivery(pk)
    counts["queued"] = len(queued)
    return counts


def _payload(change, state, cause: str) -> dict:
    """The webhook body of one transition (no secret; phones only masked, in the reasons)."""
    from urllib.parse import quote

    from django.urls import reverse

    link = reverse("admin:observability_sessionstate_change", args=[quote(change.session_id)])
    return {
        "event": "session.status",
        "id": change.pk,
        "timestamp": change.at.isoformat(),
        "session": change.session_id,
        "salon": {
            "id": state.salon_id if state else None,
            "title": (state.salon_title or None) if state else None,
        },
        "payload": {
            "status": change.new_status,
            "previous": change.old_status,
            "cause": cause,
            "reasons": list(change.reasons or []),
            "since": change.at.isoformat(),
        },
        "url": config.public_url() + link,
    }


def _due_retries(now) -> list[int]:
    from observability import webhook

    return webhook.due(now)


def _queue_delivery(delivery_id: int) -> None:
    """Deliver on the django-q2 worker (inline when the cluster runs tasks synchronously)."""
    from django_q.tasks import async_task

    from observability import tasks

    async_task(tasks.DELIVER_ALERT, delivery_id, task_name=f"alert-webhook-{delivery_id}")
