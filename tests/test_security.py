"""Security pass: anonymous reach of every URL, read-only bot tables, constant-time token."""

from __future__ import annotations

import hmac
import re

import pytest
from django.contrib.admin.utils import quote
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.urls.exceptions import Resolver404

from observability import health_views, snapshot
from observability.models import Client, Company, SessionState, WhatsAppAuth, WhatsAppKey
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

TOKEN = "s3cret-health-token-0123456789abcdef"  # noqa: S105 (a test value)
SALON = 962302

#: Sample values for path converters and regex groups, tried in order until one resolves.
SAMPLES = {"int": "1", "path": "962302", "str": "962302", "slug": "x", "uuid": "0" * 32}
REGEX_SAMPLES = ("observability", "962302", "1", "x")


def _walk(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def _fill(route: str) -> str:
    """One concrete path for a route: converters get samples, regex groups a resolving value."""

    def converter(match: re.Match) -> str:
        kind = match.group(1) or "str"
        return SAMPLES.get(kind, "1")

    path = re.sub(r"<(?:(\w+):)?\w+>", converter, route)
    if "(" not in path and "^" not in path and "$" not in path:
        return "/" + path
    for sample in REGEX_SAMPLES:
        candidate = re.sub(r"\(\?P<\w+>[^)]*\)", sample, path)
        candidate = "/" + candidate.replace("^", "").replace("$", "")
        try:
            resolve(candidate)
        except Resolver404:
            continue
        return candidate
    raise AssertionError(f"no sample resolves {route!r}")


def every_url() -> list[str]:
    """Every URL pattern of the project, with its placeholders filled."""
    urls = sorted({_fill(route) for route in _walk(get_resolver().url_patterns)})
    assert len(urls) > 60, urls  # the admin, the bot pages, health, metrics
    return urls


#: The only paths an anonymous caller may read: the login page, the health statuses, the icon.
PUBLIC = re.compile(r"^/(admin/login/|health/([a-z]+/)?|favicon\.ico)$")


@pytest.fixture
def seeded():
    """One row in each bot table, so object URLs point at something real."""
    factories.make_company(SALON, title="Salon")
    factories.make_auth(str(SALON))
    factories.make_keys(str(SALON), "session", 2)
    factories.make_client(SALON, 1)
    snapshot.refresh(full=True)


def test_every_url__anonymous_reaches_only_login_and_health_status(client, seeded, settings):
    """Anonymous GET of every URL: only the login page and health statuses answer."""
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN
    client.raise_request_exception = False
    urls = every_url()
    assert "/admin/observability/sessionstate/962302/keys/" in urls
    assert "/metrics" in urls
    answered = {}
    for url in urls:
        response = client.get(url)
        if PUBLIC.match(url):
            answered[url] = response.status_code
            continue
        assert response.status_code in (301, 302, 401, 403, 404, 405), (url, response.status_code)
        if response.status_code in (301, 302):
            # To the login page (the logout page sends an anonymous caller to the admin, which
            # sends it to the login page).
            assert response["Location"].startswith("/admin/"), (url, response["Location"])
            if url != "/admin/logout/":
                assert response["Location"].startswith("/admin/login/"), url
        assert b"962302" not in response.content, url
    assert answered["/admin/login/"] == 200
    health = [url for url in answered if url.startswith("/health/")]
    assert len(health) == 8
    for url in health:
        assert answered[url] in (200, 500), url
        body = client.get(url, {"format": "json"}).json()
        # Status only: no message can leak server names, counts or session ids.
        for value in body.values():
            assert value in ("OK", "Warning", "Unavailable", "Unexpected result"), (url, value)


def test_every_url__non_staff_user_is_sent_to_login(client, seeded, django_user_model):
    """A logged-in user without staff status reads no admin page and no metrics."""
    user = django_user_model.objects.create_user("visitor", password="x")
    client.force_login(user)
    client.raise_request_exception = False
    for url in every_url():
        if PUBLIC.match(url) or url == "/admin/logout/":
            continue
        response = client.get(url)
        assert response.status_code in (302, 401, 403, 404, 405), (url, response.status_code)


# --- Bot tables are read-only in the admin, for superusers too --------------------------------

BOT_ADMINS = {"sessionstate": SessionState, "company": Company, "client": Client}


def _bot_rows() -> dict[str, list]:
    return {
        "auth": list(WhatsAppAuth.objects.values_list("company_id", "updated_at")),
        "keys": sorted(WhatsAppKey.objects.values_list("company_id", "key_type", "key_id")),
        "companies": list(Company.objects.values_list("company_id", "title")),
        "clients": list(Client.objects.values_list("pk", "name", "phone")),
        "states": list(SessionState.objects.values_list("session_id", "status")),
    }


@pytest.mark.parametrize("model", list(BOT_ADMINS))
def test_bot_admin__every_write_is_refused_for_a_superuser(admin_client, seeded, model):
    """Add, change (GET form and POST), delete and delete_selected: 403 or no-op, rows intact."""
    admin_client.raise_request_exception = False
    object_id = str(BOT_ADMINS[model].objects.values_list("pk", flat=True).get())
    base = f"/admin/observability/{model}/"
    obj = f"{base}{quote(object_id)}/"
    before = _bot_rows()

    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.post(f"{base}add/", {"company_id": "1", "title": "x"}).status_code == 403
    assert admin_client.get(f"{obj}delete/").status_code == 403
    assert admin_client.post(f"{obj}delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"{obj}change/", {"title": "hacked", "name": "x"}).status_code == 403
    page = admin_client.get(f"{obj}change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content  # no save button: a read-only page

    listing = admin_client.get(base)
    assert listing.status_code == 200
    assert b'value="delete_selected"' not in listing.content
    response = admin_client.post(
        base, {"action": "delete_selected", "_selected_action": [object_id], "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert _bot_rows() == before


def test_admin_permissions__no_add_change_delete_on_any_bot_model(admin_client, seeded):
    """The admin's own permission answers say read-only for every bot model."""
    from django.contrib import admin as django_admin
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = _superuser()
    for cls in (SessionState, Company, Client):
        model_admin = django_admin.site._registry[cls]
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_change_permission(request)
        assert not model_admin.has_delete_permission(request)
        assert "delete_selected" not in model_admin.get_actions(request)


def _superuser():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(is_superuser=True).first()


# --- The health token -------------------------------------------------------------------------


def _bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.mark.parametrize("url", ["/health/db/", "/metrics"])
def test_health_token__wrong_tokens_of_any_length_get_the_same_answer(client, settings, url):
    """A wrong token as long as the real one and one of another length: the same 401 body."""
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN
    same_length = client.get(url, **_bearer("x" * len(TOKEN)))
    near_miss = client.get(url, **_bearer(TOKEN[:-1] + "X"))
    other_length = client.get(url, **_bearer("x"))
    empty = client.get(url, **_bearer(""))
    for response in (same_length, near_miss, other_length, empty):
        assert response.status_code == 401
        assert response.content == same_length.content
    assert client.get(url, **_bearer(TOKEN)).status_code in (200, 500)


@pytest.mark.parametrize("url", ["/health/db/", "/metrics"])
def test_health_token__requests_compare_with_hmac_compare_digest(
    client, settings, monkeypatch, url
):
    """Every token a request presents reaches hmac.compare_digest (never ``==``)."""
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(health_views.hmac, "compare_digest", spy)
    client.get(url, **_bearer("wrong"))
    client.get(url, **_bearer(TOKEN))
    assert calls == [(b"wrong", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


# --- Every page, as a superuser: no secret, no full phone --------------------------------------

OWNER_PHONE = "79161234567"
CLIENT_PHONE = "79001112233"
SALON_PHONES = ("79265550000", "74957654321", "79037654321")


def _string_leaves(node) -> list[str]:
    if isinstance(node, dict):
        return [leaf for value in node.values() for leaf in _string_leaves(value)]
    if isinstance(node, list):
        return [leaf for value in node for leaf in _string_leaves(value)]
    return [node] if isinstance(node, str) else []


def _digit_runs(phone: str) -> list[bytes]:
    """A phone as pages could print it: its digits, and its number without the country code."""
    return [phone.encode(), phone[1:].encode()]


def test_every_url__a_superuser_reads_no_secret_and_no_full_phone(admin_client, settings):
    """GET of every URL as a superuser: no creds, key value, api_key, webhook_secret or phone."""
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN
    admin_client.raise_request_exception = False
    company = factories.make_company(
        SALON,
        title="Salon",
        phone="+7 (495) 765-43-21",
        whatsapp_phone=SALON_PHONES[0],
        marketplace_user_phone=SALON_PHONES[2],
    )
    auth = factories.make_auth(str(SALON), phone=OWNER_PHONE, registered=True)
    factories.make_keys(str(SALON), "session", 2)
    factories.make_keys(str(SALON), "pre-key", 2)
    client = factories.make_client(SALON, 1, phone=CLIENT_PHONE, raw_phone="+7 (900) 111-22-33")
    snapshot.refresh(full=True)
    objects = [
        reverse("admin:observability_company_change", args=[company.pk]),
        reverse("admin:observability_client_change", args=[client.pk]),
    ]
    secrets = {company.api_key, company.webhook_secret}
    secrets |= {leaf for leaf in _string_leaves(auth.creds) if len(leaf) >= 16}
    for value in WhatsAppKey.objects.values_list("value", flat=True):
        secrets |= {leaf for leaf in _string_leaves(value) if len(leaf) >= 16}
    assert len(secrets) > 10
    forbidden = [secret.encode() for secret in secrets]
    for phone in (OWNER_PHONE, CLIENT_PHONE, *SALON_PHONES):
        forbidden += _digit_runs(phone)
    forbidden.append(b"111-22-33")
    for url in every_url() + objects:
        if url == "/admin/logout/":
            continue
        response = admin_client.get(url)
        assert response.status_code != 500 or url.startswith("/health/"), url
        body = b"".join(response) if response.streaming else response.content
        leaked = [item for item in forbidden if item in body]
        assert leaked == [], (url, leaked)


# --- The project's own tables hold no secret and no full phone ---------------------------------


def test_own_tables__hold_no_secret_and_no_full_phone_but_the_search_digits():
    """After snapshots, a phone change and its alert, only phone_digits holds a number."""
    from django.core import serializers

    from observability import alerts
    from observability.models import (
        AlertDelivery,
        CleanupRun,
        SessionChange,
        SessionRhythm,
        Snapshot,
    )

    company = factories.make_company(
        SALON, title="Salon", whatsapp_phone=OWNER_PHONE, marketplace_user_phone=SALON_PHONES[2]
    )
    auths = [factories.make_auth(str(SALON), phone=OWNER_PHONE, registered=True)]
    factories.make_keys(str(SALON), "session", 2)
    factories.make_keys(str(SALON), "pre-key", 30)
    snapshot.refresh(full=True)
    new_phone = "79035550011"
    creds = dict(
        auths[0].creds, me={**auths[0].creds["me"], "id": f"{new_phone}:3@s.whatsapp.net"}
    )
    WhatsAppAuth.objects.filter(company_id=str(SALON)).update(creds=creds)
    snapshot.refresh(full=True)
    alerts.dispatch_transitions()
    assert SessionChange.objects.filter(kind=SessionChange.Kind.PHONE_CHANGED).exists()
    assert AlertDelivery.objects.exists()

    secrets = {company.api_key, company.webhook_secret}
    for auth in auths:
        secrets |= {leaf for leaf in _string_leaves(auth.creds) if len(leaf) >= 16}
    for value in WhatsAppKey.objects.values_list("value", flat=True):
        secrets |= {leaf for leaf in _string_leaves(value) if len(leaf) >= 16}
    forbidden = sorted(secrets)
    for phone in (OWNER_PHONE, new_phone, SALON_PHONES[2]):
        forbidden += [phone, phone[1:]]
    dumped = serializers.serialize(
        "json",
        SessionState.objects.all(),
        fields=[f.name for f in SessionState._meta.fields if f.name != "phone_digits"],
    )
    for model in (SessionChange, Snapshot, AlertDelivery, SessionRhythm, CleanupRun):
        dumped += serializers.serialize("json", model.objects.all())
    assert [item for item in forbidden if item in dumped] == []
    assert "7903***0011" in dumped  # the new number, masked, in the change row
