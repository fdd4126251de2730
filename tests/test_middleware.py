"""The error middleware, the 500/404 pages, and the admin while the bot database is down."""

from __future__ import annotations

import json
import time

import pytest
from django.contrib import admin
from django.db import connections, router
from django.http import HttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.test import RequestFactory
from django.urls import path, reverse

from observability import config, exceptions
from observability.middleware import wants_json
from observability.models import WhatsAppAuth
from tests import factories

# --- A small URLconf of views that fail the ways real views do --------------------------------

_ROWS = engines["django"].from_string(
    "{% for row in rows %}<p>{{ row.company_id }}</p>{% endfor %}"
)


def _raise(request, code: str):
    cls = {cls.code: cls for cls in exceptions.error_classes()}[code]
    raise cls()


def _lazy_bot_rows(request):
    """Like an admin changelist: the queryset runs only while the template renders."""
    if request.GET.get("timeout"):
        with connections["bot"].cursor() as cursor:
            cursor.execute("SET statement_timeout = 1")
    rows = WhatsAppAuth.objects.extra(select={"slow": "pg_sleep(0.2)"})  # noqa: S610
    return TemplateResponse(request, _ROWS, {"rows": rows})


def _default_database_fails(request):
    with connections["default"].cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 1")
        cursor.execute("SELECT pg_sleep(0.2)")
    return HttpResponse("unreachable")


def _bug(request):
    raise RuntimeError("a bug nobody expected")


urlpatterns = [
    path("fail/<str:code>/", _raise),
    path("health/fail/<str:code>/", _raise),
    path("metrics/fail/<str:code>/", _raise),
    path("rows/", _lazy_bot_rows),
    path("default-fails/", _default_database_fails),
    path("bug/", _bug),
    path("admin/", admin.site.urls),
]
handler500 = "observability.error_pages.server_error"

with_test_urls = pytest.mark.urls("tests.test_middleware")


# --- JSON callers and people ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/fail/session_not_found/?format=json", {}),
        ("/fail/session_not_found/", {"HTTP_ACCEPT": "application/json"}),
        ("/health/fail/session_not_found/", {}),
        ("/metrics/fail/session_not_found/", {"HTTP_ACCEPT": "text/plain"}),
    ],
    ids=["format-param", "accept-header", "health-path", "metrics-path"],
)
@with_test_urls
def test_middleware__json_callers_get_the_one_json_shape(client, url, headers):
    """Monitors and API callers get the status and {"error": {"code", "message"}}."""
    response = client.get(url, **headers)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "session_not_found",
            "message": exceptions.SessionNotFound.default_message,
        }
    }


@pytest.mark.parametrize("cls", exceptions.error_classes(), ids=lambda cls: cls.__name__)
@pytest.mark.django_db
@with_test_urls
def test_middleware__each_error_answers_its_status_for_json_and_html(admin_client, cls):
    """Every error class is answered with its own status, in JSON and on the staff page."""
    as_json = admin_client.get(f"/fail/{cls.code}/?format=json")
    assert as_json.status_code == cls.http_status
    assert json.loads(as_json.content)["error"]["code"] == cls.code
    as_html = admin_client.get(f"/fail/{cls.code}/", HTTP_ACCEPT="text/html")
    assert as_html.status_code == cls.http_status
    assert as_html["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@with_test_urls
def test_middleware__staff_page_shows_message_and_what_to_do(admin_client):
    """Staff see the admin's look, the message and what to do, never a traceback."""
    response = admin_client.get("/fail/bot_database_unavailable/")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    page = response.content.decode()
    assert "<title>Bot database unavailable" in page
    assert exceptions.BotDatabaseUnavailable.default_message in page
    assert "What to do" in page
    assert "Pages over this project&#x27;s own records still work." in page
    assert 'id="site-name"' in page  # the admin's header: a page of the admin, not a bare error
    assert "Traceback" not in page


def test_wants_json__only_for_machines():
    """A browser (Accept: text/html or */*) gets HTML; an explicit JSON Accept gets JSON."""
    factory = RequestFactory()
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert not wants_json(factory.get("/admin/", HTTP_ACCEPT=browser))
    assert not wants_json(factory.get("/admin/", HTTP_ACCEPT="*/*"))
    assert wants_json(factory.get("/admin/", HTTP_ACCEPT="application/json"))
    assert wants_json(factory.get("/admin/?format=json"))
    assert wants_json(factory.get("/health/whatsapp/", HTTP_ACCEPT=browser))


# --- Database errors that escaped the services ------------------------------------------------


@pytest.mark.django_db(databases=["default", "bot"])
@with_test_urls
def test_middleware__lazy_bot_queryset_timeout_answers_504(admin_client):
    """A bot query cancelled while the template renders becomes the query-timed-out page."""
    factories.make_auth("962302")
    assert admin_client.get("/rows/").content.count(b"<p>962302</p>") == 1  # works untimed
    response = admin_client.get("/rows/?timeout=1")
    assert response.status_code == 504
    assert b"did not answer in time" in response.content
    assert b"Traceback" not in response.content


@pytest.mark.django_db
@with_test_urls
def test_middleware__default_database_error_stays_a_500(client):
    """The project's own database failing is an outage, not "bot database unavailable"."""
    client.raise_request_exception = False
    response = client.get("/default-fails/")
    assert response.status_code == 500
    assert b"Something went wrong on our side" in response.content
    assert b"bot database" not in response.content.lower()


# --- 500 and 404 pages ------------------------------------------------------------------------


@pytest.mark.django_db
@with_test_urls
def test_server_error__friendly_page_without_sentry(client):
    """Without Sentry the 500 page is friendly and shows no reference."""
    client.raise_request_exception = False
    response = client.get("/bug/")
    assert response.status_code == 500
    assert b"Something went wrong on our side" in response.content
    assert b"sentry-event-id" not in response.content
    assert b"a bug nobody expected" not in response.content


@pytest.mark.slow
@pytest.mark.django_db
@with_test_urls
def test_server_error__shows_the_sentry_event_id(client, sentry_server):
    """With Sentry on, the 500 page shows the id of the event Sentry received."""
    client.raise_request_exception = False
    response = client.get("/bug/")
    assert response.status_code == 500
    assert sentry_server.wait_for(lambda s: len(s.events()) >= 1)
    (event,) = sentry_server.events()
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert f'id="sentry-event-id">{event["event_id"]}<' in response.content.decode()


@pytest.mark.django_db
def test_not_found__friendly_page(client):
    """An unknown address gets the project's 404 page."""
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Page not found" in response.content
    assert b"/no/such/page/" in response.content


# --- The admin with the bot database down -----------------------------------------------------


def _bot_admin_urls() -> list[str]:
    """The changelists of every model the admin registers over the bot's tables."""
    return sorted(
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
        if router.db_for_read(model) == config.bot_database_alias()
    )


@pytest.mark.slow
@pytest.mark.django_db(databases=["default", "bot"])
@with_test_urls
def test_admin__bot_database_down_pages_say_so_and_own_pages_open(admin_client, bot_database_down):
    """Bot pages answer 503 "bot database unavailable"; the project's own pages still open."""
    bot_pages = ["/rows/", *_bot_admin_urls()]
    assert len(bot_pages) > 1  # the lazy test view, and every bot changelist of the admin
    for url in bot_pages:
        started = time.monotonic()
        response = admin_client.get(url)
        page = response.content.decode()
        assert response.status_code == 503, url
        assert "Bot database unavailable" in page, url
        assert "What to do" in page, url
        assert "Traceback" not in page, url
        # The pool gives up after its timeout (0.5 s here) instead of holding the request.
        assert time.monotonic() - started < 4, url
    for url in ("/admin/", "/admin/auth/user/", "/admin/auth/group/"):
        assert admin_client.get(url).status_code == 200, url


@pytest.mark.django_db(databases=["default", "bot"])
@with_test_urls
def test_admin__bot_database_down_json_caller_gets_503(client, bot_database_down):
    """A JSON caller of a bot page gets the 503 JSON body."""
    response = client.get("/rows/?format=json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "bot_database_unavailable"
