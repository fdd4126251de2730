"""Template filters and tags of the ops admin: a moment, the store counts, the snapshot's age."""

from __future__ import annotations

from django import template
from django.utils import timezone

from observability.admin import display

register = template.Library()


@register.filter
def when(moment):
    """``{{ run.started_at|when }}``: ``2026-11-30 19:40 UTC · 3 hours ago`` (see display.when)."""
    return display.when(moment)


@register.simple_tag
def now_moment() -> str:
    """``{% now_moment %}``: now, in the one format (``2026-11-30 19:40 UTC · 0 minutes ago``)."""
    return display.when(timezone.now())


@register.inclusion_tag("admin/observability/freshness.html")
def freshness_banner() -> dict:
    """
    ``{% freshness_banner %}``: the snapshot's age (``#health-freshness``) on any page.

    For pages showing a stored verdict whose view is the admin's own (the salons list and page,
    the admin index); the sessions pages pass ``display.freshness_context`` themselves.
    """
    return display.freshness_context()


@register.simple_tag
def store_counts() -> list[dict]:
    """
    Sessions per status from the stored snapshot, worst first, each with its filtered list.

    For the admin index, above the app list: ``{% store_counts as counts %}``.
    """
    from django.db.models import Count
    from django.urls import reverse

    from observability.models import SessionState
    from observability.sessions import Status

    found = dict(SessionState.objects.values_list("status").annotate(n=Count("pk")).order_by())
    changelist = reverse("admin:observability_sessionstate_changelist")
    return [
        {
            "badge": display.badge(status),
            "count": found.get(status.value, 0),
            "url": f"{changelist}?status={status.value}",
        }
        for status in sorted(Status, key=lambda status: -status.severity)
    ]
