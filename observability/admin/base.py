"""Admin base classes shared by every page: query parameters checked, bot tables read-only."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db import models
from django.http import HttpRequest

from observability.admin import display
from observability.exceptions import BadInput, translate_database_errors
from observability.routers import is_bot_model

#: A refused parameter's name is quoted in the message up to this many characters.
_NAME_SHOWN = 60


def refuse_unoffered_params(request: HttpRequest, offered: Iterable[str]) -> None:
    """
    Refuse (400) a request whose query string names a parameter the page does not offer.

    For the admin's custom pages (key browser, overview, session page): they read only their
    own parameters, and anything else is a mistake or a probe, answered the same whatever the
    data holds.

    Raises:
        BadInput: naming the first parameter not in ``offered`` (never its value).

    """
    allowed = set(offered)
    for name in request.GET:
        if name not in allowed:
            raise BadInput(
                f"This page has no parameter {name[:_NAME_SHOWN]!r}; it takes only "
                f"{', '.join(sorted(allowed)) or 'none'}."
            )


def _last_int(values: list[str] | None, what: str) -> int | None:
    if values is None:
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise BadInput(f"The date drill-down's {what} must be a whole number.") from None


class StrictChangeList(ChangeList):
    """
    A changelist that applies only the filters its page offers, and refuses anything else.

    Django applies every query-string parameter that no list filter consumed as a lookup on
    the model (``?api_key__startswith=sk_``), for any user who may view the page. ``only()``
    hides a column from SELECT, not from WHERE, so such a lookup answers yes/no questions
    about secrets and phones a character at a time. Here the parameters the list filters,
    the date drill-down and the changelist itself (search ``q``, ordering ``o``, page ``p``,
    ``all``, ``e``, ``_facets``, ``_popup``, ``_to_field``) consume are all there is: any
    other parameter is refused with a 400 that reads the same whatever the data holds, for
    superusers too, before the list's query runs.
    """

    def get_filters(self, request):
        """The list filters and date drill-down, then a 400 for every parameter left over."""
        self._check_date_drill_down()
        given = set(self.get_filters_params())
        filter_specs, has_filters, remaining, duplicates, active = super().get_filters(request)
        unoffered = sorted(given & set(remaining))
        if unoffered:
            raise BadInput(
                f"This page cannot be filtered by {unoffered[0][:_NAME_SHOWN]!r}: use the "
                "filters, search and date links it offers."
            )
        return filter_specs, has_filters, remaining, duplicates, active

    def _check_date_drill_down(self) -> None:
        """
        Refuse a drill-down date Python cannot represent, or whose next period it cannot.

        Django builds ``[from, to)`` from ``<field>__year/__month/__day`` and catches a bad
        ``from`` only: year 9999 overflows computing ``to`` (a ValueError or OverflowError,
        i.e. a 500). The same bounds are computed here first and any failure is a 400.
        """
        if not self.date_hierarchy:
            return
        params = self.get_filters_params()
        year = _last_int(params.get(f"{self.date_hierarchy}__year"), "year")
        if year is None:
            return
        month = _last_int(params.get(f"{self.date_hierarchy}__month"), "month")
        day = _last_int(params.get(f"{self.date_hierarchy}__day"), "day")
        try:
            start = datetime(year, month or 1, day or 1)  # noqa: DTZ001 - as Django does
            if day:
                start + timedelta(days=1)
            elif month:
                (start + timedelta(days=32)).replace(day=1)
            else:
                start.replace(year=year + 1)
        except (ValueError, OverflowError):
            raise BadInput(
                "The date drill-down needs a real date between the years 1 and 9998."
            ) from None


class StrictQueryParamsMixin(admin.ModelAdmin):
    """
    Every admin page of this site: its changelist accepts only the parameters it offers.

    Used by :class:`ReadOnlyModelAdmin` and, through :func:`harden_site`, mixed into every
    other registered admin (users, groups, django-q2's pages), so a new page inherits it.
    """

    def get_changelist(self, request, **kwargs):
        """The strict changelist (:class:`StrictChangeList`)."""
        return StrictChangeList


@functools.cache
def _moment_column(model, name: str):
    """
    ``name``'s column: a date-time field of ``model`` becomes a :func:`display.when_column`.

    Cached, so the list's columns and its links name the same callable on every request.
    """
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return name
    if not isinstance(field, models.DateTimeField):
        return name

    def column(obj):
        return display.when(getattr(obj, name))

    column.short_description = field.verbose_name
    column.admin_order_field = name
    column.__name__ = name  # the cell's class stays field-<name>
    return column


class MomentColumnsMixin(admin.ModelAdmin):
    """
    Every list of this site shows its date-time columns in the one moment format.

    A model's ``DateTimeField`` named in ``list_display`` (``next_run`` of django-q2's
    schedules, ``started`` of its tasks, ...) reads ``2026-11-30 19:40 UTC · 3 hours ago``
    (:func:`display.when`) rather than Django's ``Nov. 30, 2026, 7:40 p.m.``; sorting by it
    still works. Mixed in, through :func:`harden_site`, into admins this project does not
    write.
    """

    def get_list_display(self, request):
        """The columns, date-time fields as moments."""
        return [_moment_column(self.model, name) for name in super().get_list_display(request)]

    def get_list_display_links(self, request, list_display):
        """The linked columns, mapped as the columns are (a linked moment stays linked)."""
        links = super().get_list_display_links(request, list_display)
        if not links:
            return links
        return [name if callable(name) else _moment_column(self.model, name) for name in links]


def harden_site(site: admin.AdminSite) -> None:
    """
    Re-register every admin of ``site`` that lacks :class:`StrictQueryParamsMixin` with it.

    Called once the admin modules are imported (``ObservabilityConfig.ready``), so the
    pages of Django's auth app and of django-q2 refuse unoffered lookups as ours do: a
    view-only user could otherwise probe password hashes with ``?password__startswith=``.
    They get :class:`MomentColumnsMixin` too: their lists' moments read as ours.
    """
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, StrictQueryParamsMixin):
            continue
        loose = type(model_admin)
        strict = type(
            loose.__name__,
            (StrictQueryParamsMixin, MomentColumnsMixin, loose),
            {"__module__": loose.__module__, "__doc__": loose.__doc__},
        )
        site.unregister(model)
        site.register(model, strict)


class ReadOnlyModelAdmin(StrictQueryParamsMixin, MomentColumnsMixin, admin.ModelAdmin):
    """A model admin that never adds, changes or deletes, for anyone, superusers included.

    Its changelist accepts only the parameters it offers (:class:`StrictQueryParamsMixin`).
    The bot's tables belong to the bot; the only writes this project makes are the audited
    cleanup operations (observability.cleanup), never a form in the admin.

    Pages over the bot's tables are rendered inside :func:`translate_database_errors`: the
    admin's querysets run lazily, while the template renders, so a bot database that is down or
    slow must be caught there to become a clear 503/504 page rather than a traceback. Pages
    over the project's own tables (the cleanup runs) are not: a failure of the ``default``
    database is not the bot's, and the middleware answers it (503 when its pool is busy).
    """

    def _database_errors_translated(self):
        if is_bot_model(self.model):
            return translate_database_errors()
        return contextlib.nullcontext()

    def has_add_permission(self, request, obj=None):
        """Nobody adds rows to the bot's tables here."""
        return False

    def has_change_permission(self, request, obj=None):
        """Nobody changes rows of the bot's tables here."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Nobody deletes rows here; cleanup goes through the audited operations."""
        return False

    def add_view(self, request, form_url="", extra_context=None):
        """Refuse at once (403), before any query: there is no form to add a bot row."""
        raise PermissionDenied

    def delete_view(self, request, object_id, extra_context=None):
        """Refuse at once (403), before any query: deletes go through cleanup only."""
        raise PermissionDenied

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Show the read-only page; refuse any POST (403) before it reaches a form."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        with self._database_errors_translated():
            return _rendered(super().change_view(request, object_id, form_url, extra_context))

    def changelist_view(self, request, extra_context=None):
        """The changelist, rendered inside the error translation."""
        with self._database_errors_translated():
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                self.prepare_changelist(request, response)
            return _rendered(response)

    def prepare_changelist(self, request, response) -> None:
        """Hook: adjust a changelist response's context before it renders (default: none)."""


def _rendered(response):
    """Render a template response now, so lazy queries run where errors are translated."""
    if hasattr(response, "render"):
        response.render()
    return response
