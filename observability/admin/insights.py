"""The insights page (PgHero-style) over the bot's database, added to the admin site's URLs."""

from __future__ import annotations

from datetime import UTC

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path, reverse

from observability import insights
from observability.admin import display
from observability.admin.base import refuse_unoffered_params

#: Who may open the page: it shows the database's statistics (names, sizes, backends'
#: application names), never a row or a query's literals.
INSIGHTS_PERMISSION = "observability.view_tablesizesample"


def insights_url() -> str:
    """The insights page."""
    return reverse("admin:observability_insights")


#: The narrowest growth chart: room for three day labels (first, one between, last).
MIN_CHART_PX = 240


def _size_charts(history: dict[str, list[insights.SizePoint]]) -> list[dict]:
    """
    One small SVG bar chart per table: its total size per day (no JavaScript).

    Under the bars a day axis (:func:`display.day_ticks`, UTC dates); above them the scale,
    a line at the largest size labelled in human units (``filesizeformat``).
    """
    charts = []
    height, bar_width, top_margin, bottom_margin = 84, 14, 14, 12
    plot = height - top_margin - bottom_margin
    for table, points in sorted(history.items()):
        # Few days get wider bars: the axis needs room for a day between the first and last.
        width = max(bar_width, MIN_CHART_PX // len(points))
        top = max(point.bytes for point in points) or 1
        bars = []
        for index, point in enumerate(points):
            bar_height = max(1, round(plot * point.bytes / top))
            bars.append(
                {
                    "x": 2 + index * width,
                    "y": height - bottom_margin - bar_height,
                    "width": width - 3,
                    "height": bar_height,
                    "day": point.day.astimezone(UTC).date(),
                    "bytes": point.bytes,
                }
            )
        days = [bar["day"] for bar in bars]
        charts.append(
            {
                "table": table,
                "bars": bars,
                "ticks": display.day_ticks(days, left=2, step=width, bar_width=width - 3),
                "width": max(4 + len(points) * width, display.DAY_LABEL_PX + 4),
                "height": height,
                "axis_y": height - bottom_margin,
                "top_y": top_margin,
                "top": top,
                "first": bars[0],
                "last": bars[-1],
                "growth_sign": "+" if points[-1].bytes >= points[0].bytes else "−",
                "growth": abs(points[-1].bytes - points[0].bytes),
            }
        )
    return charts


def insights_view(request):
    """The page: sizes and growth, dead tuples and vacuum, indexes, locks, slow queries."""
    if not request.user.has_perm(INSIGHTS_PERMISSION):
        raise PermissionDenied
    # Like every admin page: a parameter the page does not offer is a mistake or a probe (400).
    refuse_unoffered_params(request, ())
    data = insights.read()
    context = {
        **admin.site.each_context(request),
        "title": "Bot database insights",
        "insights": data,
        "size_charts": _size_charts(insights.size_history()),
        "long_after_seconds": int(data.long_transaction_after.total_seconds()),
        "read_at": display.when(data.read_at),
    }
    return TemplateResponse(request, "admin/observability/insights.html", context)


def _add_insights_url(site: admin.AdminSite) -> None:
    """Put ``<admin>/observability/insights/`` before the site's own URLs (once)."""
    if getattr(site, "_observability_insights", False):
        return
    original = site.get_urls

    def get_urls():
        return [
            path(
                "observability/insights/",
                site.admin_view(insights_view),
                name="observability_insights",
            ),
            *original(),
        ]

    site.get_urls = get_urls
    site._observability_insights = True


_add_insights_url(admin.site)
