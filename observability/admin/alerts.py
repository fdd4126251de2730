"""Alert deliveries (read-only): every session transition that went out, and how."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from observability.admin import display
from observability.admin.base import ReadOnlyModelAdmin
from observability.models import AlertDelivery


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyModelAdmin):
    """Each transition to FAIL or recovery, its Sentry report and webhook attempts."""

    list_display = (
        "at_when",
        "session_id",
        "transition",
        "cause",
        "outcome",
        "attempts",
        "response_status",
        "sentry",
    )
    list_filter = ("outcome", "new_status", "cause", "sentry")
    search_fields = ("session_id",)
    date_hierarchy = "at"
    fields = (
        "at_when",
        "session_id",
        "salon_id",
        "transition",
        "cause",
        "sentry",
        "outcome",
        "attempts",
        "last_attempt_at_when",
        "next_attempt_at_when",
        "delivered_at_when",
        "response_status",
        "error",
        "payload_pretty",
    )
    readonly_fields = fields

    at_when = display.when_column("at", "at")
    last_attempt_at_when = display.when_column("last_attempt_at", "last attempt")
    next_attempt_at_when = display.when_column("next_attempt_at", "next attempt")
    delivered_at_when = display.when_column("delivered_at", "delivered")

    @admin.display(description="transition")
    def transition(self, obj):
        return f"{obj.old_status or '—'} → {obj.new_status or '—'}"

    @admin.display(description="payload sent")
    def payload_pretty(self, obj):
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True, default=str)
        )
