"""Template filters of the ops admin: one way to show a moment."""

from __future__ import annotations

from django import template

from observability.admin import display

register = template.Library()


@register.filter
def when(moment):
    """``{{ run.started_at|when }}``: ``2026-11-30 19:40 UTC · 3 hours ago`` (see display.when)."""
    return display.when(moment)
