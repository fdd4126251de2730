"""
How the web shows an error: the project's errors as JSON or a staff page, and the 500 page.

The exception vocabulary (``observability.exceptions``) is plain data; rendering it for a web
caller happens here, at the edge, for the middleware (``ObservabilityErrorMiddleware``) and
Django's ``handler500``.
"""

from __future__ import annotations

import contextlib
import logging

import sentry_sdk
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.template import loader
from django.views.decorators.csrf import requires_csrf_token

from observability.exceptions import ObservabilityError

logger = logging.getLogger(__name__)


def json_response(error: ObservabilityError) -> JsonResponse:
    """The JSON answer for API callers and monitors: ``{"error": {"code", "message"}}``."""
    response = JsonResponse(error.as_json(), status=error.http_status)
    if error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    return response


def html_response(
    error: ObservabilityError, request: HttpRequest, *, event_id: str | None = None
) -> HttpResponse:
    """
    The staff page: the admin's look, the message, what to do, and the Sentry event id.

    Rendering never touches the bot database, so it works while that database is down.
    """
    from django.contrib import admin
    from django.template.response import TemplateResponse
    from django.urls import NoReverseMatch, reverse

    context = {
        "title": error.title,
        "error": error,
        "what_to_do": error.what_to_do,
        "event_id": event_id,
    }
    template = "observability/error_plain.html"  # a host project without the admin
    with contextlib.suppress(NoReverseMatch):
        reverse("admin:index")
        try:
            admin_context = admin.site.each_context(request)
        except DatabaseError:
            # The admin's header reads request.user, i.e. the project's own database: when
            # that is what failed (its pool is full), the same page without the admin's look.
            pass
        else:
            template = "observability/error.html"
            context = {**admin_context, **context}
    response = TemplateResponse(request, template, context, status=error.http_status)
    if error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    return response.render()


@requires_csrf_token
def server_error(request: HttpRequest, template_name: str = "500.html") -> HttpResponseServerError:
    """
    ``handler500``: show ``500.html`` with the Sentry event id so ops can quote it.

    The template is rendered with a plain dict, not a RequestContext: context processors may
    need the database or the session, and whatever broke the page may have broken those too.
    Django's integration reports the exception before this view runs, so ``last_event_id()``
    is the event of this very failure (None when Sentry is off).
    """
    event_id = sentry_sdk.last_event_id() if sentry_sdk.get_client().is_active() else None
    try:
        body = loader.get_template(template_name).render({"sentry_event_id": event_id})
    except Exception:  # the error page itself must never fail
        logger.exception("could not render %s", template_name)
        body = "<h1>Server Error (500)</h1>"
    return HttpResponseServerError(body)
