"""
The outgoing alert webhook: each session transition as signed JSON, delivered with retries.

In the spirit of WAHA's ``session.status`` event: the session, its salon, the old and new
status, the reasons, since when, and a link to the session page. The body is signed with
HMAC-SHA256 under ``ALERT_WEBHOOK_SECRET``; the receiver recomputes it over the raw body and
compares it with the ``X-Observability-Signature`` header (``sha256=<hex>``). Deliveries run on
the django-q2 worker (:func:`deliver`), with a timeout, and are retried with exponential
backoff (:func:`retry_due`, every minute after the snapshot) until ``alert_webhook_max_attempts``.
Every attempt's outcome is stored on its :class:`AlertDelivery` and shown in the admin.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta

from django.db.models import F, Q
from django.utils import timezone

from observability import config
from observability.models import AlertDelivery

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Observability-Signature"
EVENT = "session.status"

Outcome = AlertDelivery.Outcome


def body(delivery: AlertDelivery) -> bytes:
    """The exact bytes sent (and signed) for a delivery."""
    return json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()


def sign(raw: bytes, secret: str) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``raw``."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def stuck_after() -> timedelta:
    """
    How long a delivery may stay ``sending`` before its worker counts as gone.

    A send takes at most ``alert_webhook_timeout`` to connect and as long to answer, so a
    delivery still ``sending`` after twice that plus a minute was left by a worker that died
    mid-send (killed, restarted, out of memory): it is due again.
    """
    return 2 * config.alert_webhook_timeout() + timedelta(minutes=1)


def _pending(now: datetime) -> Q:
    """Pending deliveries whose (next) attempt is due."""
    return Q(outcome=Outcome.PENDING) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def _stuck(now: datetime) -> Q:
    """Deliveries left ``sending`` by a worker that died mid-send (:func:`stuck_after`)."""
    return Q(outcome=Outcome.SENDING, last_attempt_at__lte=now - stuck_after())


def _claim(delivery_id: int, now: datetime) -> str:
    """
    Take a due delivery for this process (no other process sends it meanwhile).

    Returns ``sending`` when this process now holds it, ``failed`` when it was given up,
    ``""`` when it was not due.

    A delivery taken over from a dead worker counts that worker's attempt (it may have
    reached the receiver, or it may be what kills the worker): a delivery that keeps killing
    workers is given up after ``alert_webhook_max_attempts`` like any other.
    """
    rows = AlertDelivery.objects.filter(pk=delivery_id)
    if rows.filter(_pending(now)).update(outcome=Outcome.SENDING, last_attempt_at=now):
        return Outcome.SENDING
    lost = "the worker sending this attempt stopped before it ended"
    if not rows.filter(_stuck(now)).update(
        outcome=Outcome.SENDING,
        last_attempt_at=now,
        attempts=F("attempts") + 1,
        response_status=None,
        error=lost,
    ):
        return ""
    logger.warning("alert webhook delivery %s: %s; taken over", delivery_id, lost)
    if rows.filter(attempts__gte=config.alert_webhook_max_attempts()).update(
        outcome=Outcome.FAILED, next_attempt_at=None
    ):
        return Outcome.FAILED
    return Outcome.SENDING


def deliver(delivery_id: int, *, now: datetime | None = None) -> str:
    """
    POST one delivery once, if it is pending and due (or stuck, :func:`_claim`); record it.

    A 2xx answer delivers it. Anything else (an error status, a timeout, a refused
    connection) schedules the next attempt ``alert_webhook_backoff`` × 2^(attempts - 1)
    later, and gives up as ``failed`` after ``alert_webhook_max_attempts``.

    Returns:
        The delivery's outcome afterwards (``skipped`` when it was not pending or not due).

    """
    now = now or timezone.now()
    claimed = _claim(delivery_id, now)
    if claimed != Outcome.SENDING:
        return claimed or "skipped"
    delivery = AlertDelivery.objects.get(pk=delivery_id)
    url, secret = config.alert_webhook_url(), config.alert_webhook_secret()
    raw = body(delivery)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "observability-alerts",
        "X-Observability-Event": EVENT,
        "X-Observability-Delivery": str(delivery.pk),
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(raw, secret)
    status, error = None, ""
    try:
        request = urllib.request.Request(url, data=raw, headers=headers, method="POST")  # noqa: S310
        timeout = config.alert_webhook_timeout().total_seconds()
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as failure:
        status, error = failure.code, f"HTTP {failure.code}"
    except (ValueError, http.client.InvalidURL) as failure:
        # urllib quotes the URL it refuses, and a webhook URL often carries its token in
        # the path (https://hooks.example.com/services/T0/B0/<token>): name the setting only.
        # (InvalidURL is no ValueError: uncaught, it left the delivery "sending" for good.)
        error = (
            f"{type(failure).__name__}: the alert webhook URL (ALERT_WEBHOOK_URL) is not a "
            "valid http(s) URL."
        )
    except (urllib.error.URLError, TimeoutError, OSError) as failure:
        reason = getattr(failure, "reason", failure)
        error = f"{type(failure).__name__}: {str(reason)[:200]}"
    except http.client.HTTPException as failure:  # a malformed answer (BadStatusLine, ...)
        error = f"{type(failure).__name__}: the receiver's answer was not valid HTTP."
    delivery.attempts += 1
    delivery.response_status = status
    if status is not None and 200 <= status < 300:
        delivery.outcome, delivery.delivered_at, delivery.error = Outcome.DELIVERED, now, ""
        delivery.next_attempt_at = None
    else:
        delivery.error = error or f"HTTP {status}"
        if delivery.attempts >= config.alert_webhook_max_attempts():
            delivery.outcome, delivery.next_attempt_at = Outcome.FAILED, None
        else:
            delivery.outcome = Outcome.PENDING
            delivery.next_attempt_at = now + config.alert_webhook_backoff() * (
                2 ** (delivery.attempts - 1)
            )
        logger.warning(
            "alert webhook delivery %s failed (attempt %s): %s",
            delivery.pk,
            delivery.attempts,
            delivery.error,
        )
    delivery.save(
        update_fields=[
            "attempts",
            "response_status",
            "outcome",
            "delivered_at",
            "error",
            "next_attempt_at",
        ]
    )
    return delivery.outcome


def due(now: datetime | None = None) -> list[int]:
    """
    Pending deliveries whose (next) attempt is due, and those stuck ``sending``.

    A delivery still ``sending`` after :func:`stuck_after` was left by a worker that died
    mid-send; without this it would never be tried again.
    """
    now = now or timezone.now()
    return list(
        AlertDelivery.objects.filter(_pending(now) | _stuck(now))
        .order_by("id")
        .values_list("pk", flat=True)
    )
