"""
One way of failing on the web: the project's errors become one JSON shape or one staff page.

Any view (the admin included) that raises an :class:`~observability.exceptions.ObservabilityError`
answers with the error's HTTP status: the JSON body ``{"error": {"code", "message"}}`` for JSON
callers, the admin-styled error page for people. A driver error from the bot's database alias
that escaped the service layer (typically a lazy queryset evaluated by an admin changelist
while rendering) is translated the same way, so the admin keeps working while the bot database
is down: pages over the project's own tables open, pages over the bot's tables say the bot
database is unavailable. Server-side failures (5xx) are reported to Sentry here, because a
response returned by middleware never reaches Django's own error reporting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sentry_sdk
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from observability import config, error_pages, exceptions
from observability.exceptions import database_alias_of

logger = logging.getLogger(__name__)

#: Paths whose callers are machines: always answered in JSON.
JSON_PATH_PREFIXES = ("/health/", "/metrics")


def wants_json(request: HttpRequest) -> bool:
    """True for monitors and API callers (``?format=json``, an Accept header, machine paths)."""
    if request.GET.get("format") == "json":
        return True
    if request.path.startswith(JSON_PATH_PREFIXES):
        return True
    accept = request.headers.get("Accept", "")
    if "application/json" not in accept:
        return False
    return request.get_preferred_type(["text/html", "application/json"]) == "application/json"


def request_tags(request: HttpRequest, view_kwargs: dict) -> dict[str, str]:
    """
    Sentry tags for a request: ``operation`` (the view name), ``salon`` when the URL names one.

    The salon comes from a ``salon_id`` or ``session_id`` URL argument, or from the object id of
    the WhatsApp session admin's pages (a session id); only a parseable id becomes a tag, in the
    bare form.
    """
    from django.contrib.admin.utils import unquote

    from observability.session_ids import describe

    match = getattr(request, "resolver_match", None)
    view_name = (match.view_name if match else "") or ""
    tags = {"operation": f"view:{view_name}"} if view_name else {}
    salon = view_kwargs.get("salon_id") or view_kwargs.get("session_id")
    if salon is None and view_name.startswith("admin:observability_sessionstate_"):
        object_id = view_kwargs.get("object_id")
        salon = unquote(object_id) if object_id else None
    if salon is not None:
        parsed = describe(str(salon))
        if parsed.salon_id is not None:
            tags["salon"] = str(parsed.salon_id)
    return tags


class ObservabilityErrorMiddleware:
    """Answer the project's errors (and bot-database failures) with the mapped response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # A scope of its own per request, so the tags set in process_view never leak into the
        # next request served by this thread (the WSGI integration does the same in production;
        # the test client and some servers do not).
        with sentry_sdk.isolation_scope():
            return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable, view_args: tuple, view_kwargs: dict
    ) -> None:
        """Tag whatever this request reports with the view and, when the URL names one, salon."""
        scope = sentry_sdk.get_isolation_scope()
        for key, value in request_tags(request, view_kwargs).items():
            scope.set_tag(key, value)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Turn a known failure into its response; leave anything else to Django (a 500)."""
        error, alias = self._translate(exception)
        if error is None:
            return None
        if alias is not None and alias != config.bot_database_alias():
            # The project's own database could not serve this request (its pool is full), so
            # who the user is cannot be read now. Reporting (Sentry serialises the frames'
            # lazy request.user) and the error page read it several times, and each read
            # would wait the pool timeout again: settle it as anonymous, lazy object included
            # (django.contrib.auth.middleware.get_user returns request._cached_user).
            from django.contrib.auth.models import AnonymousUser

            request._cached_user = AnonymousUser()
        event_id = None
        if error.http_status >= 500:
            event_id = self._report(request, error, exception, alias)
        else:
            logger.info("%s %s answered %s: %s", request.method, request.path, error.code, error)
        if wants_json(request):
            return error_pages.json_response(error)
        return error_pages.html_response(error, request, event_id=event_id)

    @staticmethod
    def _translate(
        exception: Exception,
    ) -> tuple[exceptions.ObservabilityError | None, str | None]:
        if isinstance(exception, exceptions.ObservabilityError):
            return exception, None
        if not isinstance(exception, DatabaseError):
            return None, None
        alias = database_alias_of(exception)
        if exceptions._is_unsendable_value(exception):
            # A NUL in a query string is the caller's mistake on any alias: a 400, not a 500.
            return exceptions.from_database_error(exception, alias), alias
        if alias != config.bot_database_alias():
            # The project's own database failing is a real outage: Django's 500 and Sentry.
            # Its pool being full is not: more requests at once than connections, a 503 with
            # Retry-After like the bot's; nor is a privilege its role lacks (a 503 naming the
            # GRANT to run).
            error = exceptions.from_database_error(exception, alias)
            if isinstance(error, exceptions.DatabaseBusy | exceptions.MissingPrivilege):
                return error, alias
            return None, alias
        return exceptions.from_database_error(exception, alias), alias

    @staticmethod
    def _report(
        request: HttpRequest,
        error: exceptions.ObservabilityError,
        original: Exception,
        alias: str | None,
    ) -> str | None:
        from observability.sentry import capture_error

        match = getattr(request, "resolver_match", None)
        tags = request_tags(request, match.kwargs if match else {})
        operation = tags.get("operation", "view")
        logger.warning(
            "%s %s failed with %s (%s)", request.method, request.path, error.code, operation
        )
        if original is not error:
            # Keep the driver error as the cause, so Sentry shows where the query was made.
            error.__cause__ = original
        return capture_error(error, salon_id=tags.get("salon"), operation=operation, alias=alias)
