"""Small HTML helpers the admin pages share: status badges, ages, bar charts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince, timeuntil

from observability import phones
from observability.sessions import DayCount, Status


def badge(status: Status | str) -> str:
    """
    A coloured OK / WARN / FAIL pill.

    Its colours are in ``observability/static/observability/admin.css`` (classes
    ``obs-badge obs-ok`` ...): the Content-Security-Policy refuses inline style attributes.
    """
    status = Status(status)
    return format_html(
        '<span class="obs-badge obs-{}">{}</span>', status.value.lower(), status.value
    )


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest sensible unit (``3 h``, ``2 d 4 h``, ``never``)."""
    if moment is None:
        return "never"
    delta = (now or timezone.now()) - moment
    return duration(delta) + " ago"


#: The one way the admin writes a moment: date, minutes and the time zone's abbreviation.
MOMENT_FORMAT = "%Y-%m-%d %H:%M %Z"


def when(moment: datetime | None, now: datetime | None = None) -> str:
    """
    A moment as every admin page shows it: ``2026-11-30 19:40 UTC · 3 hours ago``.

    The absolute time in the project's time zone (named), then the relative age from
    Django's ``timesince`` / ``timeuntil`` (``in 2 days`` for a moment ahead), in a
    ``<time>`` element whose ``datetime`` is the exact ISO moment. Use this (or the
    ``when`` template filter of ``observability_tags``) for every date and time on a page.
    """
    if moment is None:
        return "—"
    if isinstance(moment, date) and not isinstance(moment, datetime):
        return format_html('<time datetime="{}">{}</time>', moment.isoformat(), moment)
    now = now or timezone.now()
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    local = timezone.localtime(moment)
    if moment <= now:
        relative = f"{timesince(moment, now, depth=1)} ago"
    else:
        relative = f"in {timeuntil(moment, now, depth=1)}"
    return format_html(
        '<time class="obs-when" datetime="{}" title="{}">{}</time> '
        '<small class="obs-age">· {}</small>',
        local.isoformat(),
        local.isoformat(),
        local.strftime(MOMENT_FORMAT),
        relative.replace("\xa0", " "),
    )


def duration(delta: timedelta) -> str:
    """A duration as ``45 min``, ``3 h`` or ``2 d 4 h``."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def percent(share: float) -> str:
    """A share as a percentage with no decimals."""
    return f"{share:.0%}"


def pretty_json(value) -> str:
    """A jsonb value indented for reading (for harmless fields only)."""
    if value in (None, "", [], {}):
        return "—"
    return format_html(
        '<pre class="obs-pre">{}</pre>',
        json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str),
    )


def array(value: Sequence | None) -> str:
    """An array column as a comma-separated list."""
    if not value:
        return "—"
    return ", ".join(str(item) for item in value)


@dataclass(frozen=True)
class Bar:
    """One bar of a server-rendered SVG bar chart."""

    x: int
    y: int
    width: int
    height: int
    label: str
    count: int
    label_x: int


def bars(days: Sequence[DayCount], *, height: int = 120, width: int = 28) -> dict:
    """
    Lay out a day-by-day bar chart as SVG geometry (no JavaScript, no network).

    Returns:
        A dict with ``bars`` (list of :class:`Bar`), ``width``, ``height``, ``max`` and
        ``total`` for the ``admin/observability/bar_chart.html`` include.

    """
    top = max((day.count for day in days), default=0)
    plot = height - 30
    laid = []
    for index, day in enumerate(days):
        bar_height = round(plot * day.count / top) if top else 0
        x = 4 + index * width
        laid.append(
            Bar(
                x=x,
                y=plot - bar_height + 12,
                width=width - 6,
                height=bar_height,
                # Every other day is labelled (ending on the last day) so labels never overlap.
                label=day.day.strftime("%d.%m") if (len(days) - 1 - index) % 2 == 0 else "",
                count=day.count,
                label_x=x + (width - 6) // 2,
            )
        )
    return {
        "bars": laid,
        "width": 8 + len(days) * width,
        "height": height,
        "max": top,
        "total": sum(day.count for day in days),
        "axis_y": plot + 12,
    }


def masked_phone(phone: str | None) -> str:
    """A phone number masked for display (``7900***4567``), or a dash."""
    return phones.mask(phone) or "—"


def field_column(field: str, render, description: str):
    """
    A read-only admin column showing ``render(obj.<field>)``, declared in one line.

    Args:
        field: the model field read from each row.
        render: turns the value into text or safe HTML (``array``, ``pretty_json``, a mask).
        description: the column's heading.
    """

    def column(model_admin, obj):
        return render(getattr(obj, field))

    column.short_description = description
    column.__name__ = f"{field}_display"
    return column
