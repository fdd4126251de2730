"""Issue 15 §2: a Content-Security-Policy on every page, and no page needs an inline exception."""

from __future__ import annotations

import re

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from observability import snapshot
from observability.error_pages import server_error
from observability.models import AlertDelivery
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

SALON = 962302
#: A <script> with a body (not ``src=``, not JSON data), a <style> element, a style attribute
#: or an inline event handler: each needs 'unsafe-inline' and is refused under the policy.
INLINE = re.compile(
    rb"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>\s*\S"
    rb"|<style[\s>]"
    rb"|\sstyle=\""
    rb"|\son(click|load|error|submit|change)=",
    re.IGNORECASE,
)


@pytest.fixture
def seeded():
    """A salon, its session with keys, a client: every page has something to show."""
    factories.make_company(SALON, title="Салон")
    factories.make_auth(str(SALON))
    factories.make_keys(str(SALON), "session", 3)
    factories.make_keys(str(SALON), "pre-key", 3)
    factories.make_client(SALON, 1, last_visit_date="2025-11-01")
    snapshot.refresh(full=True)  # the sessions pages read the stored snapshot
    AlertDelivery.objects.create(
        change_id=1,
        session_id=str(SALON),
        new_status="FAIL",
        at=timezone.now(),
        payload={"event": "session.status", "payload": {"reasons": ["Wrong number"]}},
        outcome=AlertDelivery.Outcome.FAILED,
        error="HTTP 500",
    )


def _policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


@pytest.mark.parametrize(
    "url", ["/admin/login/", "/health/", "/health/db/?format=json", "/metrics", "/nowhere/"]
)
def test_csp__header_on_every_kind_of_answer(client, url):
    """Login page, health page and JSON, metrics (401), a 404: all carry the policy."""
    client.raise_request_exception = False
    policy = _policy(client.get(url))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in str(policy)


def _admin_pages() -> list[str]:
    session = reverse("admin:observability_sessionstate_change", args=[str(SALON)])
    return [
        reverse("admin:index"),
        reverse("admin:observability_sessionstate_changelist"),
        session,
        reverse("admin:observability_sessionstate_keys", args=[str(SALON)]) + "?expired=no",
        reverse("admin:observability_sessionstate_overview"),
        reverse("admin:observability_company_changelist"),
        reverse("admin:observability_client_changelist") + "?last_visit_date__year=2025",
        reverse("admin:observability_cleanuprun_changelist"),
        reverse("admin:observability_alertdelivery_changelist"),
        reverse(
            "admin:observability_alertdelivery_change",
            args=[AlertDelivery.objects.get().pk],
        ),
        reverse("admin:observability_client_changelist") + "?unoffered=1",  # the 400 page
        "/admin/observability/sentry-test/",
        "/health/",
        "/health/whatsapp/",
        "/nowhere/",
    ]


def test_pages__need_no_inline_script_or_style(admin_client, seeded):
    """No page the admin renders has an inline script, style element or style attribute."""
    admin_client.raise_request_exception = False
    for url in _admin_pages():
        response = admin_client.get(url)
        # /health/ answers 500 when a check fails (here: no worker heartbeat): still a page.
        expected = (200, 500) if url.startswith("/health/") else (200, 400, 404)
        assert response.status_code in expected, (url, response.status_code)
        assert "Content-Security-Policy" in response, url
        found = INLINE.search(response.content)
        assert found is None, (url, found and found.group(0))


def test_server_error_page__needs_no_inline_style():
    """The 500 page, rendered without a request context, links its style too."""
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert INLINE.search(response.content) is None
    assert b"observability/plain.css" in response.content
