"""Small HTML helpers the admin pages share: status badges, ages, bar charts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.utils import timezone
from django.utils.html import format_html

from observability import moments, phones, snapshot
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


def freshness_context(now: datetime | None = None) -> dict:
    """
    What a page says about the snapshot it shows: its age and whether that is a problem.

    For ``admin/observability/freshness.html`` (the ``#health-freshness`` banner), on every
    page that shows a verdict read from the stored snapshot (issue 13: every page shows its
    age).
    """
    fresh = snapshot.freshness(now)
    return {"freshness": fresh, "freshness_badge": badge(fresh.status)}


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest sensible unit (``3 h``, ``2 d 4 h``, ``never``)."""
    if moment is None:
        return "never"
    delta = (now or timezone.now()) - moment
    return duration(delta) + " ago"


def when(moment: datetime | date | None, now: datetime | None = None) -> str:
    """
    A moment as every admin page shows it: ``2026-11-30 19:40 UTC · 3 hours ago``.

    The absolute time in the project's time zone (named), then the relative age
    (:mod:`observability.moments`, the one format), in a ``<time>`` element whose ``datetime``
    is the exact ISO moment. A date alone (``clients.last_visit_date``) reads ``2026-11-30``.
    Use this (or the ``when`` template filter of ``observability_tags``, or
    :func:`when_column`) for every date and time on a page.
    """
    if moment is None:
        return "—"
    if isinstance(moment, date) and not isinstance(moment, datetime):
        return format_html('<time datetime="{}">{}</time>', moment.isoformat(), moment)
    shown = moments.split(moment, now)
    return format_html(
        '<time class="obs-when" datetime="{}" title="{}">{}</time> '
        '<small class="obs-age">{}{}</small>',
        shown.local.isoformat(),
        shown.local.isoformat(),
        shown.absolute,
        moments.SEPARATOR.lstrip(),
        shown.relative,
    )


def when_column(field: str, description: str):
    """A read-only admin column (list or detail) showing ``when(obj.<field>)``, sortable by it."""
    column = field_column(field, when, description)
    column.admin_order_field = field
    column.__name__ = f"{field}_when"
    return column


def duration(delta: timedelta) -> str:
    """A duration as ``45 min``, ``3 h`` or ``2 d 4 h``."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def headline(reasons: Sequence[str]) -> str:
    """The first reason's headline (before its colon), as the lists show it; ``—`` for none."""
    return reasons[0].split(":", 1)[0] if reasons else "—"


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


#: The width of a day label (``2026-11-30`` at the charts' 9 px font), and the least room
#: between two labels: charts label their first and last day and as many between as fit.
DAY_LABEL_PX = 54
DAY_LABEL_GAP_PX = 12


@dataclass(frozen=True)
class Tick:
    """One label of a chart's day axis: where (``x``), what, and how it hangs (SVG anchor)."""

    x: int
    label: str
    anchor: str


def day_ticks(days: Sequence[date], *, left: int, step: int, bar_width: int) -> list[Tick]:
    """
    Label a chart's day axis: the first and last day, and a few between that do not overlap.

    Days read as the one format's dates (``2026-11-30``, :func:`when`), in the time zone the
    chart's days were counted in.

    Args:
        days: one per bar, oldest first.
        left: the x of the first bar.
        step: from one bar's x to the next's.
        bar_width: the width of one bar.

    """
    if not days:
        return []
    last = len(days) - 1
    first_tick = Tick(left, days[0].isoformat(), "start")
    end = left + last * step + bar_width
    last_tick = Tick(end, days[-1].isoformat(), "end")
    if last == 0:
        return [first_tick]
    if end - DAY_LABEL_PX < left + DAY_LABEL_PX + DAY_LABEL_GAP_PX:
        return [last_tick]  # too narrow for two labels: the newest day says where it ends
    ticks = [first_tick]
    right = left + DAY_LABEL_PX  # where the last label placed ends
    half = DAY_LABEL_PX // 2
    for index in range(1, last):
        center = left + index * step + bar_width // 2
        fits_after = center - half >= right + DAY_LABEL_GAP_PX
        fits_before = center + half <= end - DAY_LABEL_PX - DAY_LABEL_GAP_PX
        if fits_after and fits_before:
            ticks.append(Tick(center, days[index].isoformat(), "middle"))
            right = center + half
    ticks.append(last_tick)
    return ticks


@dataclass(frozen=True)
class Bar:
    """One bar of a server-rendered SVG bar chart."""

    x: int
    y: int
    width: int
    height: int
    day: date
    count: int
    label_x: int


def bars(days: Sequence[DayCount], *, height: int = 120, width: int = 28) -> dict:
    """
    Lay out a day-by-day bar chart as SVG geometry (no JavaScript, no network).

    Returns:
        A dict with ``bars`` (list of :class:`Bar`), ``ticks`` (the day axis, :func:`day_ticks`),
        ``width``, ``height``, ``max`` and ``total`` for the
        ``admin/observability/bar_chart.html`` include.

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
                day=day.day,
                count=day.count,
                label_x=x + (width - 6) // 2,
            )
        )
    return {
        "bars": laid,
        "ticks": day_ticks([day.day for day in days], left=4, step=width, bar_width=width - 6),
        "width": max(8 + len(days) * width, DAY_LABEL_PX + 8),
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
