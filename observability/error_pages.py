"""The project's 500 page: friendly, rendered without a request context, with the Sentry id."""

from __future__ import annotations

import logging

import sentry_sdk
from django.http import HttpRequest, HttpResponseServerError
from django.template import loader
from django.views.decorators.csrf import requires_csrf_token

logger = logging.getLogger(__name__)


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
