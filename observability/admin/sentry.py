"""A staff-only admin page that sends a test event to Sentry and shows its id."""

from __future__ import annotations

import logging

import sentry_sdk
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.http import require_http_methods

from observability import sentry

logger = logging.getLogger(__name__)

TEST_MESSAGE = "Sentry test event from the observability admin"


@require_http_methods(["GET", "POST"])
def sentry_test_view(request: HttpRequest) -> HttpResponse:
    """
    Prove a DSN end to end: on POST, send a test event, wait for delivery and show its id.

    Wired in ``project/urls.py`` through ``admin.site.admin_view``, so only active staff reach
    it, and only superusers may use it: it sends events to the team's Sentry project. When
    Sentry is off it says so instead of pretending to send.
    """
    if not request.user.is_superuser:
        raise PermissionDenied
    enabled = sentry.is_enabled()
    event_id = None
    delivered = None
    if request.method == "POST" and enabled:
        with sentry.sentry_scope(operation="admin.sentry_test"):
            event_id = sentry_sdk.capture_message(
                f"{TEST_MESSAGE} (sent by staff user #{request.user.pk})", level="error"
            )
        # Flush so the page is shown only after the event left (or failed to leave).
        sentry_sdk.flush(timeout=5)
        delivered = event_id is not None
        logger.info("Sentry test event %s sent by user #%s", event_id, request.user.pk)
    client = sentry_sdk.get_client()
    context = {
        **admin.site.each_context(request),
        "title": "Sentry test event",
        "enabled": enabled,
        "event_id": event_id,
        "delivered": delivered,
        "environment": client.options.get("environment") if enabled else None,
        "release": client.options.get("release") if enabled else None,
    }
    return TemplateResponse(request, "observability/sentry_test.html", context)
