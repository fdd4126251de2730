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
from datetime import datetime

from django.db.models import Q
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


def _claim(delivery_id: int, now: datetime) -> bool:
    """Take a due pending delivery for this process (no other process sends it meanwhile)."""
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    return bool(
        AlertDelivery.objects.filter(pk=delivery_id, outcome=Outcome.PENDING)
        .filter(due)
        .update(outcome=Outcome.SENDING, last_attempt_at=now)
    )


def deliver(delivery_id: int, *, now: datetime | None = None) -> str:
    """
    POST one delivery once, if it is pending and due; record the outcome.

    A 2xx answer delivers it. Anything else (an error status, a timeout, a refused
    connection) schedules the next attempt ``alert_webhook_backoff`` × 2^(attempts - 1)
    later, and gives up as ``failed`` after ``alert_webhook_max_attempts``.

    Returns:
        The delivery's outcome afterwards (``skipped`` when it was not pending or not due).

    """
    now = now or timezone.now()
    if not _claim(delivery_id, now):
        return "skipped"
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
    """Pending deliveries whose (next) attempt is due."""
    now = now or timezone.now()
    return list(
        AlertDelivery.objects.filter(outcome=Outcome.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("id")
        .values_list("pk", flat=True)
    )
