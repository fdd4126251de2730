"""Small HTML helpers the admin pages share: status badges, ages, bar charts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.html import format_html

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
