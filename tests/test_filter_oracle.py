"""
Issue 15 §1: no admin URL answers a yes/no question about a secret or a phone.

Django's admin applies any lookup on a local field given in the query string
(``?creds__advSecretKey__regex=^A``). A view-only staff user could therefore recover a secret
a character at a time by comparing the answers to a true and a false guess. Every admin page
now accepts only the parameters it offers itself (its filters, search, date drill-down,
ordering, paging); these tests play the attacker against every changelist and compare.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

import pytest
from django.contrib import admin as django_admin
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from observability import snapshot
from observability.admin.base import StrictQueryParamsMixin
from observability.models import AlertDelivery, WhatsAppAuth, WhatsAppKey
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

SALON = 962302
OWNER_PHONE = "79161234567"
CLIENT_PHONE = "79001112233"
CLIENT_RAW_PHONE = "+7 (900) 111-22-33"
SALON_PHONE = "+7 (495) 765-43-21"
WHATSAPP_PHONE = "79265550000"
MARKETPLACE_PHONE = "79037654321"


@pytest.fixture
def seeded():
    """One salon with every secret and phone set, its session, keys and a client."""
    company = factories.make_company(
        SALON,
        title="Салон Лотос",
        phone=SALON_PHONE,
        whatsapp_phone=WHATSAPP_PHONE,
        marketplace_user_phone=MARKETPLACE_PHONE,
        whatsapp_config={"token": "cfg-secret-token"},
        whatsapp_session_data={"secret": "session-data-secret"},
    )
    auth = factories.make_auth(str(SALON), phone=OWNER_PHONE, registered=True)
    factories.make_keys(str(SALON), "session", 3)
    factories.make_keys(str(SALON), "pre-key", 2)
    client = factories.make_client(
        SALON, 1, phone=CLIENT_PHONE, raw_phone=CLIENT_RAW_PHONE, last_visit_date="2025-11-01"
    )
    key = WhatsAppKey.objects.filter(company_id=str(SALON), key_type="pre-key").first()
    snapshot.refresh(full=True)  # the sessions pages read the stored snapshot
    AlertDelivery.objects.create(
        change_id=1,
        session_id=str(SALON),
        salon_id=SALON,
        new_status="FAIL",
        at=timezone.now(),
        payload={"session": str(SALON), "payload": {"reasons": ["Wrong number: 7916***4567"]}},
        outcome=AlertDelivery.Outcome.FAILED,
    )
    return {"company": company, "auth": auth, "client": client, "key": key}


@pytest.fixture
def viewer(client, django_user_model):
    """A staff user holding only the view permissions of every model with an admin page."""
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    codenames = [f"view_{model._meta.model_name}" for model in django_admin.site._registry]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    assert user.user_permissions.count() == len(django_admin.site._registry)
    client.force_login(user)
    client.raise_request_exception = False
    return client


def _normalized(response, name: str = "", guess: str = "") -> tuple[int, str, bytes]:
    """
    Status, redirect target and body, without what differs from one request to the next.

    That is the CSRF token, the time the health was computed, and the guess itself where the
    page echoes its query string (``name=guess`` in links that keep the filters, the search
    box's value).
    """
    body = response.content
    location = response.get("Location", "")
    if name:
        pair = urlencode({name: guess})
        # As is, HTML-escaped, and inside ``_changelist_filters=`` of the rows' links.
        for form in {pair, escape(pair), quote(pair, safe="")}:
            body = body.replace(form.encode(), f"{name}=GUESS".encode())
            location = location.replace(form, f"{name}=GUESS")
        body = body.replace(f'value="{escape(guess)}"'.encode(), b'value="GUESS"')
    body = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", body)
    # The sessions changelist says when its health was computed (a time, an age).
    body = re.sub(rb'<p class="[^"]*" id="health-freshness">.*?</p>', b"", body, flags=re.S)
    return response.status_code, location, body


def _changelist(model: str) -> str:
    return f"/admin/observability/{model}/"


def guesses(seeded) -> list[tuple[str, str, str, str]]:
    """(page, lookup, a true guess, a false guess) for every secret and phone."""
    creds = seeded["auth"].creds
    secret = creds["advSecretKey"]
    company = seeded["company"]
    key_data = seeded["key"].value["private"]["data"]
    sessions, salons, clients, alerts = (
        _changelist(m) for m in ("sessionstate", "company", "client", "alertdelivery")
    )
    keys = reverse("admin:observability_sessionstate_keys", args=[str(SALON)])
    wrong = "Z" if secret[0] != "Z" else "Y"
    rows = [
        # the stored session state: its phone digits (never rendered) and its facts
        (sessions, "phone_digits__regex", f"^{OWNER_PHONE[:6]}", f"^{wrong}"),
        (sessions, "phone_digits__startswith", OWNER_PHONE[:6], "799999"),
        (sessions, "phone_digits__gt", "7", "8"),
        (sessions, "phone_digits__lt", "8", "7"),
        (sessions, "phone_digits__contains", OWNER_PHONE[4:8], "#none#"),
        (sessions, "phone_digits", OWNER_PHONE, "79999999999"),
        (sessions, "facts__has_auth", "true", "false"),
        (sessions, "facts__icontains", "pre-key", "#none#"),
        (sessions, "facts__identity_hash__isnull", "false", "true"),
        (sessions, "login_marks__0__startswith", "i:", "zz"),
        (sessions, "login_marks__contains", "{}", "{zz}"),
        (sessions, "login_marks__len", "2", "7"),
        (sessions, "facts__phone__isnull", "true", "false"),
        (sessions, "phone_masked__startswith", OWNER_PHONE[:4], "7999"),
        # the alert deliveries: their payload and the session's stored facts through it
        (alerts, "payload__icontains", "7916", "#none#"),
        (alerts, "payload__payload__reasons__0__startswith", "Wrong", "zzz"),
        (alerts, "salon_id__gt", "0", str(SALON)),
        # key values (the key browser is the only page over whatsapp_keys)
        (keys, "value__private__data__startswith", key_data[:4], "#none#"),
        (keys, "value__regex", re.escape(key_data[:4]), "#none#"),
        # the salon's secrets and phones (the page never loads them, but could filter on them)
        (salons, "api_key__startswith", company.api_key[:5], "zzz"),
        (salons, "api_key__regex", f"^{company.api_key[:5]}", "^zzz"),
        (salons, "api_key__gt", "a", "zzz"),
        (salons, "api_key__contains", "secretapikey", "#none#"),
        (salons, "webhook_secret__startswith", company.webhook_secret[:6], "zzz"),
        (salons, "webhook_secret__regex", "secret", "#none#"),
        (salons, "whatsapp_config__token__startswith", "cfg", "zzz"),
        (salons, "whatsapp_session_data__icontains", "session-data", "#none#"),
        (salons, "phone__regex", r"^\+7 \(495", "^8"),
        (salons, "phone__contains", "765", "000-00"),
        (salons, "whatsapp_phone__startswith", WHATSAPP_PHONE[:5], "79999"),
        (salons, "whatsapp_phone__lt", "8", "7"),
        (salons, "marketplace_user_phone__regex", f"^{MARKETPLACE_PHONE[:5]}", "^79999"),
        (salons, "marketplace_user_phone__gte", MARKETPLACE_PHONE, "8"),
        # the clients' phones
        (clients, "phone__startswith", CLIENT_PHONE[:7], "7999999"),
        (clients, "phone__regex", f"^{CLIENT_PHONE[:7]}", "^7999999"),
        (clients, "phone__gt", "7", "8"),
        (clients, "phone__contains", CLIENT_PHONE[4:9], "#none#"),
        (clients, "raw_phone__icontains", "(900)", "(999)"),
        (clients, "raw_phone__startswith", "+7", "8"),
        # the project's own tables: a login's password hash
        ("/admin/auth/user/", "password__startswith", "md5$", "pbkdf2"),
        ("/admin/auth/user/", "password__regex", "^md5", "^pbkdf2"),
    ]
    return rows


def test_filter_oracle__no_secret_or_phone_lookup_tells_true_from_false(viewer, seeded):
    """A view-only staff user gets the same answer for a true and a false guess, everywhere."""
    differing, statuses = [], set()
    for page, lookup, true_guess, false_guess in guesses(seeded):
        true_answer = _normalized(viewer.get(page, {lookup: true_guess}), lookup, true_guess)
        false_answer = _normalized(viewer.get(page, {lookup: false_guess}), lookup, false_guess)
        if true_answer != false_answer:
            differing.append(f"{page}?{lookup}")
        statuses.add(true_answer[0])
    assert differing == []
    assert statuses == {400}  # refused outright, not answered as if the filter were absent


def _pk_lookup(model) -> str:
    return f"{model._meta.pk.name}__isnull"


def test_filter_oracle__every_changelist_refuses_a_lookup_it_does_not_offer(viewer, seeded):
    """On every registered changelist an unoffered lookup is refused with 400, true or false."""
    for model in django_admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        true_answer = viewer.get(url, {_pk_lookup(model): "False"})
        false_answer = viewer.get(url, {_pk_lookup(model): "True"})
        assert true_answer.status_code == 400, (url, true_answer.status_code)
        assert _normalized(true_answer) == _normalized(false_answer), url
        assert b"cannot be filtered by" in true_answer.content, url


def test_filter_oracle__superuser_is_refused_too(admin_client, seeded):
    """The rule holds for superusers: a secret lookup is a 400 for them as well."""
    admin_client.raise_request_exception = False
    response = admin_client.get(_changelist("company"), {"api_key__startswith": "sk_"})
    assert response.status_code == 400
    assert b"sk_live" not in response.content


def test_filter_oracle__every_admin_page_uses_the_strict_base(seeded):
    """Every registered ModelAdmin, the project's and third parties', refuses unoffered params."""
    loose = [
        type(model_admin).__name__
        for model_admin in django_admin.site._registry.values()
        if not isinstance(model_admin, StrictQueryParamsMixin)
    ]
    assert loose == []


def test_search__reaches_no_secret(viewer, seeded):
    """``q`` with a secret, or part of a phone, matches nothing on any changelist."""
    creds = seeded["auth"].creds
    company = seeded["company"]
    secrets = [
        creds["advSecretKey"],
        creds["pairingCode"],
        creds["me"]["lid"],
        company.api_key,
        company.webhook_secret,
        "cfg-secret-token",
        "session-data-secret",
        CLIENT_PHONE[:7],
        OWNER_PHONE[:7],
        WHATSAPP_PHONE[:7],
        MARKETPLACE_PHONE,
    ]
    nothing = "#nothing-matches#"
    for model in django_admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        expected = _normalized(viewer.get(url, {"q": nothing}), "q", nothing)
        assert expected[0] == 200, url
        for secret in secrets:
            answer = _normalized(viewer.get(url, {"q": secret}), "q", secret)
            assert answer == expected, (url, secret)


@pytest.mark.parametrize(
    ("true_guess", "false_guess"),
    [
        (CLIENT_PHONE[-5:], "9" + CLIENT_PHONE[-4:]),
        (CLIENT_PHONE[-7:], "999" + CLIENT_PHONE[-4:]),
        (CLIENT_PHONE[-9:], "99999" + CLIENT_PHONE[-4:]),
        ("111 22 33", "999 22 33"),
    ],
)
def test_search__phone_digits_hidden_by_the_mask_tell_nothing(
    viewer, seeded, true_guess, false_guess
):
    """Searching a client by more trailing digits than the mask shows cannot test hidden ones."""
    url = _changelist("client")
    true_answer = _normalized(viewer.get(url, {"q": true_guess}), "q", true_guess)
    false_answer = _normalized(viewer.get(url, {"q": false_guess}), "q", false_guess)
    assert true_answer == false_answer
    assert b"7900***2233" in viewer.get(url, {"q": CLIENT_PHONE[-4:]}).content


def test_offered_parameters__still_filter(viewer, seeded):
    """The filters, search, date drill-down, ordering and paging the pages offer still work."""
    clients = _changelist("client")
    for params in (
        {"salon": str(SALON)},
        {"blacklisted__exact": "0"},
        {"blacklisted__isnull": "False"},
        {"last_visit_date__year": "2025", "last_visit_date__month": "11"},
        {
            "last_visit_date__year": "2025",
            "last_visit_date__month": "11",
            "last_visit_date__day": "1",
        },
        {"q": "8 900 111 22 33"},
        {"o": "1", "p": "1", "all": ""},
        {"_facets": "1"},
    ):
        response = viewer.get(clients, params)
        assert response.status_code == 200, params
        assert b"7900***2233" in response.content, params
    for params in (
        {"status": "active"},
        {"status__isnull": "True"},
        {"whatsapp_enabled__exact": "1"},
    ):
        assert viewer.get(_changelist("company"), params).status_code == 200, params
    for params in ({"status": "OK"}, {"spelling": "bare"}, {"duplicate": "no"}, {"platform": "x"}):
        assert viewer.get(_changelist("sessionstate"), params).status_code == 200, params
    runs = _changelist("cleanuprun")
    for params in (
        {"started_at__year": "2025"},
        {"dry_run__exact": "1"},
        {"outcome__exact": "failed"},
    ):
        assert viewer.get(runs, params).status_code == 200, params


@pytest.mark.parametrize(
    ("page", "params"),
    [
        # An invalid regular expression (PostgreSQL refused it: a 500).
        ("sessionstate", {"phone_digits__regex": "("}),
        ("client", {"phone__regex": "[a-"}),
        # A NUL inside a JSON lookup.
        ("sessionstate", {"facts__phone_masked": "\x00"}),
        ("company", {"whatsapp_config__token": "a\x00b"}),
        # Overflowing years on the clients' and cleanup runs' date drill-down.
        ("client", {"last_visit_date__year": "99999999"}),
        ("client", {"last_visit_date__year": "9999"}),
        ("client", {"last_visit_date__year": "9999", "last_visit_date__month": "12"}),
        (
            "client",
            {
                "last_visit_date__year": "9999",
                "last_visit_date__month": "12",
                "last_visit_date__day": "31",
            },
        ),
        ("client", {"last_visit_date__year": "0"}),
        ("client", {"last_visit_date__year": "2025", "last_visit_date__month": "13"}),
        ("client", {"last_visit_date__year": "x"}),
        ("client", {"last_visit_date__month": "1"}),
        ("cleanuprun", {"started_at__year": "9999"}),
    ],
)
def test_bad_lookups__answer_400_never_500(viewer, seeded, page, params):
    """Former 500s (bad regex, NUL in a JSON lookup, overflowing year) are a clear 400."""
    response = viewer.get(_changelist(page), params)
    assert response.status_code == 400, (params, response.status_code)
    assert b"Traceback" not in response.content


def test_date_drill_down__refusal_names_the_problem(viewer, seeded):
    """An overflowing year is refused with a message naming the drill-down, not a crash."""
    response = viewer.get(_changelist("client"), {"last_visit_date__year": "9999"})
    assert response.status_code == 400
    assert b"date" in response.content


@pytest.mark.parametrize(
    ("page", "params"),
    [
        ("keys", {"value": "x"}),
        ("keys", {"expired": "maybe"}),
        ("keys", {"p": "0"}),
        ("overview", {"creds__advSecretKey__regex": "^A"}),
        ("session", {"creds__advSecretKey__regex": "^A"}),
    ],
)
def test_custom_pages__refuse_parameters_they_do_not_offer(viewer, seeded, page, params):
    """The key browser, the overview and the session page accept only their own parameters."""
    url = {
        "keys": reverse("admin:observability_sessionstate_keys", args=[str(SALON)]),
        "overview": reverse("admin:observability_sessionstate_overview"),
        "session": reverse("admin:observability_sessionstate_change", args=[str(SALON)]),
    }[page]
    assert viewer.get(url).status_code == 200
    response = viewer.get(url, params)
    assert response.status_code == 400, (page, params, response.status_code)


def test_custom_pages__offered_parameters_work(viewer, seeded):
    """The key browser's type, expired and page still work; the overview takes none."""
    keys = reverse("admin:observability_sessionstate_keys", args=[str(SALON)])
    response = viewer.get(keys, {"type": "pre-key", "expired": "no", "p": "1"})
    assert response.status_code == 200
    assert b"Keys 1\xe2\x80\x932 of 2" in response.content
    overview = reverse("admin:observability_sessionstate_overview")
    assert viewer.get(overview).status_code == 200
    assert WhatsAppAuth.objects.filter(company_id=str(SALON)).exists()


@pytest.mark.parametrize(
    ("page", "true_guess", "false_guess", "mask"),
    [
        # A whole number that differs from the stored one only in the digits its mask hides.
        ("client", CLIENT_PHONE, CLIENT_PHONE[:4] + "999" + CLIENT_PHONE[-4:], "7900***2233"),
        ("client", "+7 (900) 111-22-33", "+7 (900) 999-22-33", "7900***2233"),
        (
            "sessionstate",
            OWNER_PHONE,
            OWNER_PHONE[:4] + "000" + OWNER_PHONE[-4:],
            "7916***4567",
        ),
        ("sessionstate", "8 916 123 45 67", "8 916 000 45 67", "7916***4567"),
    ],
)
def test_search__a_whole_number_cannot_test_the_hidden_digits(
    viewer, seeded, page, true_guess, false_guess, mask
):
    """A whole-number search answers a true and a false guess of the masked digits alike."""
    url = _changelist(page)
    true_answer = _normalized(viewer.get(url, {"q": true_guess}), "q", true_guess)
    false_answer = _normalized(viewer.get(url, {"q": false_guess}), "q", false_guess)
    assert true_answer[0] == 200
    assert true_answer == false_answer
    assert mask.encode() in true_answer[2]  # the number is still found by the digits shown


def test_search__a_short_number_s_hidden_digits_tell_nothing(viewer, seeded):
    """A number masked ``***78`` cannot have the digits before its last two guessed by suffix."""
    factories.make_client(SALON, 2, phone="12345678")
    url = _changelist("client")
    true_answer = _normalized(viewer.get(url, {"q": "5678"}), "q", "5678")
    false_answer = _normalized(viewer.get(url, {"q": "9978"}), "q", "9978")
    assert true_answer[0] == 200
    assert true_answer == false_answer
