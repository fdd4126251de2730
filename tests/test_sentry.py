"""Sentry: real envelopes to a local ingestion server; tags, scrubbing, tasks, cron check-ins."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import warnings

import pytest
import sentry_sdk
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.http import HttpResponse
from django.urls import path
from django_q.tasks import async_task

from observability import sentry, session_ids, tasks
from observability.exceptions import QueryTimedOut, translate_database_errors
from observability.models import Company, WhatsAppAuth, WhatsAppKey
from observability.sentry import (
    FILTERED,
    before_send,
    cron_monitor,
    init_sentry,
    report_task_failures,
    scrub,
    scrub_text,
    sentry_scope,
)
from tests import factories
from tests.sentry_server import SentryServer, sentry_initialised

logger = logging.getLogger(__name__)

PHONE = "79001234567"
DB_PASSWORD = "pg-Pass-7731-xyz"
bot_tables = pytest.mark.django_db(databases=["default", "bot"])


# --- A view that reads a seeded session and hits a statement timeout --------------------------


def _read_session(request, session_id):
    """Loads every secret a session has into locals, logs some, then times out on the bot."""
    salon = session_ids.parse(session_id)
    with (
        sentry_scope(salon_id=session_id, operation="sessions.read", alias="bot"),
        translate_database_errors("bot"),
    ):
        auth = WhatsAppAuth.objects.get(company_id=session_id)
        creds = auth.creds
        session_state = auth.creds  # a name no denylist knows
        keys = list(WhatsAppKey.objects.for_session(session_id).values("key_id", "value"))
        company = Company.objects.filter(company_id=salon.salon_id).values().get()
        private = base64.b64decode(creds["noiseKey"]["private"]["data"])
        private_hex = private.hex()
        private_list = list(private)
        creds_json = json.dumps(session_state)
        creds_text = repr(session_state)
        phone = creds["me"]["id"]
        database_url = f"postgresql://ops:{DB_PASSWORD}@db.internal:5432/bot"
        logger.warning("reading session %s of %s via %s", session_id, phone, database_url)
        logger.warning("errors go to %s", sentry_sdk.get_client().dsn)
        logger.info("session state: %s", creds_json)
        assert keys and company and private_hex and private_list and creds_text
        with connections["bot"].cursor() as cursor:
            cursor.execute("SET statement_timeout = 1")
            cursor.execute("SELECT pg_sleep(0.2), %s::text", [phone])
    return HttpResponse("unreachable")


def _log_an_error(request):
    logger.error("could not reach %s for %s", f"postgres://u:{DB_PASSWORD}@h/db", PHONE)
    return HttpResponse("logged")


def _traced_query(request):
    with connections["default"].cursor() as cursor:
        cursor.execute(f"SELECT %s::text, '{PHONE}', 'postgres://u:{DB_PASSWORD}@h/db'", ["x"])
    logger.info("looked up %s", PHONE)
    return HttpResponse("queried")


urlpatterns = [
    path("session/<str:session_id>/", _read_session),
    path("log-error/", _log_an_error),
    path("traced/", _traced_query),
]
with_test_urls = pytest.mark.urls("tests.test_sentry")


def _secret_forms(data: bytes) -> list[bytes]:
    """The ways bytes could leak: base64, hex, and the start of a byte list (both spacings)."""
    head = list(data[:8])
    return [
        base64.b64encode(data),
        data.hex().encode(),
        ", ".join(map(str, head)).encode(),
        ",".join(map(str, head)).encode(),
    ]


def _seeded_secrets(session_id: str, salon_id: int) -> list[bytes]:
    """Every secret byte string of the seeded session, its keys and its salon, in every form."""
    found: list[bytes] = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Buffer":
                data = node["data"]
                raw = base64.b64decode(data) if isinstance(data, str) else bytes(data)
                found.extend(_secret_forms(raw))
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    creds = WhatsAppAuth.objects.get(company_id=session_id).creds
    walk(creds)
    walk(list(WhatsAppKey.objects.for_session(session_id).values_list("value", flat=True)))
    found.extend(_secret_forms(base64.b64decode(creds["advSecretKey"])))
    found.append(creds["pairingCode"].encode())
    company = Company.objects.get(company_id=salon_id)
    found.extend([company.api_key.encode(), company.webhook_secret.encode()])
    return found


DSN_SECRET = "dsn-Secret-5521"


@pytest.fixture
def sentry_server_with_dsn_secret():
    """The fake Sentry server, reached through a DSN that carries a (legacy) secret key."""
    server = SentryServer(dsn_secret=DSN_SECRET).start()
    try:
        with sentry_initialised(server.dsn):
            yield server
    finally:
        server.stop()


@pytest.mark.slow
@bot_tables
@with_test_urls
def test_sentry__timeout_reading_a_session_is_tagged_and_leaks_no_secret(
    admin_client, sentry_server_with_dsn_secret, settings
):
    """A real statement timeout while reading a seeded session: one tagged, clean event."""
    sentry_server = sentry_server_with_dsn_secret
    token = secrets.token_urlsafe(24)
    settings.OBSERVABILITY_HEALTH_TOKEN = token
    factories.make_auth("company_962302", phone=PHONE, seed=7, registered=True)
    factories.make_keys("company_962302", "session", 12, seed=7)
    factories.make_keys("company_962302", "app-state-sync-key", 3, seed=7)
    factories.make_company(962302)
    seeded = _seeded_secrets("company_962302", 962302)  # read now: the timeout aborts the tx
    assert len(seeded) > 60

    response = admin_client.get(
        f"/session/company_962302/?token={token}", HTTP_AUTHORIZATION=f"Bearer {token}"
    )

    assert response.status_code == 504
    assert sentry_server.wait_for(lambda s: len(s.events()) >= 1)
    (event,) = sentry_server.events()
    assert event["tags"]["salon"] == "962302"
    assert event["tags"]["operation"] == "sessions.read"
    assert event["tags"]["alias"] == "bot"
    types = [value["type"] for value in event["exception"]["values"]]
    assert types[-1] == "QueryTimedOut" and "QueryCanceled" in types
    assert event["event_id"] in response.content.decode()  # the staff page quotes it
    # The breadcrumbs kept the log lines, phone masked and the database password gone.
    messages = [crumb.get("message") or "" for crumb in event["breadcrumbs"]["values"]]
    assert any("7900***4567" in m and "ops:[Filtered]@db.internal" in m for m in messages)

    raw = sentry_server.raw
    leaked = [
        form
        for form in [
            *seeded,
            PHONE.encode(),
            DB_PASSWORD.encode(),
            DSN_SECRET.encode(),
            token.encode(),
        ]
        if form in raw
    ]
    assert leaked == []


@pytest.mark.slow
@pytest.mark.django_db
@with_test_urls
def test_sentry__error_log_is_captured_scrubbed(client, sentry_server):
    """logger.error becomes an event; the URL password and the phone never leave."""
    assert client.get("/log-error/").status_code == 200
    assert sentry_server.wait_for(lambda s: len(s.events()) >= 1)
    (event,) = sentry_server.events()
    assert event["level"] == "error"
    assert event["logentry"]["formatted"] == (
        "could not reach postgres://u:[Filtered]@h/db for 7900***4567"
    )
    assert event["tags"]["operation"] == "view:tests.test_sentry._log_an_error"
    assert DB_PASSWORD.encode() not in sentry_server.raw
    assert PHONE.encode() not in sentry_server.raw


def _wsgi_get(path_info: str, query: str = "", **headers: str) -> bytes:
    """GET through the real WSGI stack (with Sentry's WSGI middleware), as a server would."""
    from wsgiref.util import setup_testing_defaults

    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    environ = {"PATH_INFO": path_info, "QUERY_STRING": query, "HTTP_HOST": "127.0.0.1"}
    environ.update(headers)
    setup_testing_defaults(environ)
    # As Django's test client does: the request must not close the test's connections.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        return b"".join(get_wsgi_application()(environ, lambda status, headers: None))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.slow
@with_test_urls
def test_sentry__wsgi_request_keeps_url_but_not_cookies_tokens_or_auth(sentry_server, settings):
    """Through the real WSGI stack: the URL is kept, cookies, tokens and auth headers are not."""
    token = secrets.token_urlsafe(24)
    settings.OBSERVABILITY_HEALTH_TOKEN = token
    body = _wsgi_get(
        "/log-error/",
        f"token={token}&page=2",
        HTTP_AUTHORIZATION="Bearer auth-header-secret-1",
        HTTP_COOKIE="sessionid=cookie-secret-2; csrftoken=cookie-secret-3",
        HTTP_X_HEALTH_TOKEN=token,
    )
    assert body == b"logged"
    assert sentry_server.wait_for(lambda s: len(s.events()) >= 1)
    (event,) = sentry_server.events()
    assert event["request"]["url"] == "http://127.0.0.1/log-error/"
    assert "page=2" in event["request"]["query_string"]
    raw = sentry_server.raw
    for secret in (token, "auth-header-secret-1", "cookie-secret-2", "cookie-secret-3"):
        assert secret.encode() not in raw, secret


@pytest.mark.slow
@pytest.mark.django_db
@with_test_urls
def test_sentry__traced_request_transaction_is_scrubbed():
    """With tracing on, the transaction and its SQL spans arrive with phone and password gone."""
    server = SentryServer().start()
    try:
        with sentry_initialised(server.dsn, traces_sample_rate=1.0):
            assert _wsgi_get("/traced/") == b"queried"
            assert server.wait_for(lambda s: s.payloads("transaction"))
            (transaction,) = server.payloads("transaction")
    finally:
        server.stop()
    sql = [span["description"] for span in transaction["spans"] if span["op"] == "db"]
    assert any("'7900***4567'" in q and "u:[Filtered]@h" in q for q in sql), sql
    assert PHONE.encode() not in server.raw
    assert DB_PASSWORD.encode() not in server.raw


@pytest.mark.slow
@pytest.mark.django_db
def test_sentry__django_q_cluster_failure_log_becomes_an_event(sentry_server):
    """The worker cluster's "Failed ..." error log (no wrapper involved) reaches Sentry, masked."""
    logging.getLogger("django-q").error(
        "Failed 'observability.tasks.x' (four-five) - boom for %s : Traceback ...", PHONE
    )
    assert sentry_server.wait_for(lambda s: len(s.events()) >= 1)
    (event,) = sentry_server.events()
    assert event["logger"] == "django-q"
    assert "boom for 7900***4567" in event["logentry"]["formatted"]


@pytest.mark.slow
@bot_tables
def test_sentry__session_admin_page_with_bot_down_is_tagged_from_the_url(
    admin_client, sentry_server, request
):
    """The key browser of company_962302, bot database down: salon, view and alias tagged."""
    from django.contrib.admin.utils import quote
    from django.urls import reverse

    from observability import snapshot
    from tests import factories

    factories.make_auth("company_962302")
    snapshot.refresh(full=True)  # the page's verdict comes from the snapshot; its keys do not
    request.getfixturevalue("bot_database_down")
    url = reverse("admin:observability_sessionstate_keys", args=[quote("company_962302")])
    response = admin_client.get(url)
    assert response.status_code == 503
    assert sentry_server.wait_for(lambda s: len(s.events()) >= 1)
    (event,) = sentry_server.events()
    assert event["exception"]["values"][-1]["type"] == "BotDatabaseUnavailable"
    assert event["tags"]["salon"] == "962302"
    assert event["tags"]["operation"] == "view:admin:observability_sessionstate_keys"
    assert event["tags"]["alias"] == "bot"
    assert event["event_id"] in response.content.decode()


# --- django-q2 tasks and cron monitors --------------------------------------------------------


@report_task_failures(operation="task:test.failing")
def failing_task(salon_id: str) -> None:
    """A django-q2 task that fails inside a salon's scope."""
    with sentry_scope(salon_id=salon_id, alias="bot"):
        raise RuntimeError(f"could not clean up for {PHONE}")


@cron_monitor("test-nightly", "0 3 * * *", max_runtime_minutes=10)
@report_task_failures()
def monitored_task(fail: bool = False) -> str:
    """A scheduled task under a cron monitor."""
    if fail:
        raise QueryTimedOut()
    return "done"


@pytest.mark.slow
@pytest.mark.django_db
def test_task__failing_django_q_task_reports_a_tagged_event(sentry_server):
    """A task queued through django-q2 that raises is reported, with its tags, and still fails."""
    with pytest.raises(RuntimeError):
        async_task("tests.test_sentry.failing_task", "company_962302", sync=True)
    assert sentry_server.wait_for(lambda s: len(s.events()) >= 1)
    (event,) = sentry_server.events()
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["exception"]["values"][-1]["value"] == "could not clean up for 7900***4567"
    assert event["tags"] == {**event["tags"], "salon": "962302", "operation": "task:test.failing"}
    assert event["tags"]["alias"] == "bot"


@pytest.mark.slow
@pytest.mark.django_db
def test_cron_monitor__check_ins_arrive_in_order(sentry_server):
    """A monitored run checks in in_progress then ok; a failing run in_progress then error."""
    assert async_task("tests.test_sentry.monitored_task", sync=True)
    assert sentry_server.wait_for(lambda s: len(s.check_ins()) >= 2)
    first, last = sentry_server.check_ins()
    assert (first["status"], last["status"]) == ("in_progress", "ok")
    assert first["check_in_id"] == last["check_in_id"]
    assert first["monitor_slug"] == "test-nightly"
    assert first["monitor_config"]["schedule"] == {"type": "crontab", "value": "0 3 * * *"}
    assert first["monitor_config"]["max_runtime"] == 10

    sentry_server.clear()
    with pytest.raises(QueryTimedOut):
        async_task("tests.test_sentry.monitored_task", True, sync=True)
    assert sentry_server.wait_for(lambda s: len(s.check_ins()) >= 2 and s.events())
    assert [c["status"] for c in sentry_server.check_ins()] == ["in_progress", "error"]
    (event,) = sentry_server.events()
    assert event["tags"]["operation"] == "task:tests.test_sentry.monitored_task"
    assert event["tags"]["alias"] == "bot"


@pytest.mark.slow
@bot_tables
def test_cleanup_task__bot_database_down_fails_with_event_and_error_check_in(
    sentry_server, bot_database_down
):
    """The scheduled cleanup queued through django-q2, bot database down: event, error check-in."""
    with pytest.raises(Exception) as raised:
        async_task(tasks.CLEANUP_EXPIRED_KEYS, sync=True)
    assert type(raised.value).__name__ == "BotDatabaseUnavailable"
    assert sentry_server.wait_for(lambda s: len(s.check_ins()) >= 2 and s.events())
    statuses = [(c["monitor_slug"], c["status"]) for c in sentry_server.check_ins()]
    assert statuses == [(tasks.CLEANUP_MONITOR, "in_progress"), (tasks.CLEANUP_MONITOR, "error")]
    event = sentry_server.events()[0]
    assert event["exception"]["values"][-1]["type"] == "BotDatabaseUnavailable"
    assert event["tags"]["operation"] == "task:cleanup_expired_keys_task"
    assert event["tags"]["alias"] == "bot"


# --- Off, on, and the admin's test page -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
@with_test_urls
def test_no_dsn__nothing_is_sent_and_nothing_fails(client):
    """Without a DSN: init is a no-op, captures return None, tasks run, nothing is sent."""
    server = SentryServer().start()
    try:
        assert init_sentry(dsn="", environment="test", release="r") is False
        assert not sentry.is_enabled()
        assert sentry_sdk.capture_message("nobody hears this") is None
        assert sentry.capture_error(RuntimeError("nor this"), salon_id="962302") is None
        assert async_task("tests.test_sentry.monitored_task", sync=True)
        assert client.get("/log-error/").status_code == 200
        assert not server.wait_for(lambda s: bool(s.envelopes), timeout=0.3)
    finally:
        server.stop()


@pytest.mark.slow
def test_settings__sentry_is_initialised_from_the_environment_only():
    """A real manage.py process with SENTRY_DSN set reports its error log, release and env."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from observability import __version__

    server = SentryServer().start()
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "SENTRY_DSN": server.dsn,
            "SENTRY_ENVIRONMENT": "staging",
        }
        code = f"import logging; logging.getLogger('ops').error('boom for {PHONE}')"
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert server.wait_for(lambda s: len(s.events()) >= 1)
        (event,) = server.events()
    finally:
        server.stop()
    assert event["environment"] == "staging"
    assert event["release"] == f"observability@{__version__}"
    assert event["logentry"]["formatted"] == "boom for 7900***4567"


def test_init_sentry__traces_and_profiles_on_without_warnings():
    """Traces and profiles switch on with no deprecation warning (tests treat them as errors)."""
    server = SentryServer().start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with sentry_initialised(server.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0):
                options = sentry_sdk.get_client().options
                assert options["traces_sample_rate"] == 1.0
                assert options["profile_session_sample_rate"] == 1.0
                assert options["send_default_pii"] is None
                assert options["release"] == "observability@test"
    finally:
        server.stop()


def test_init_sentry__rejects_a_rate_outside_zero_to_one():
    """A sample rate of 5 is a configuration error, said clearly."""
    with pytest.raises(ImproperlyConfigured, match="SENTRY_TRACES_SAMPLE_RATE"):
        init_sentry(
            dsn="http://public@127.0.0.1:9/1", environment="t", release="r", traces_sample_rate=5
        )
    assert not sentry.is_enabled()


@pytest.mark.slow
@pytest.mark.django_db
def test_sentry_test_page__sends_an_event_and_shows_its_id(admin_client, sentry_server):
    """Staff press the button; the page shows the id of the event the server received."""
    url = "/admin/observability/sentry-test/"
    assert b"Send a test event" in admin_client.get(url).content
    page = admin_client.post(url).content.decode()
    assert sentry_server.wait_for(lambda s: len(s.events()) >= 1)
    (event,) = sentry_server.events()
    assert f'<code class="sentry-event-id">{event["event_id"]}</code>' in page
    assert event["message"].startswith("Sentry test event from the observability admin")
    assert event["tags"]["operation"] == "admin.sentry_test"


@pytest.mark.django_db
def test_sentry_test_page__says_when_sentry_is_off_and_is_staff_only(admin_client, client):
    """Without a DSN the page says Sentry is off; anonymous visitors go to the login page."""
    page = admin_client.post("/admin/observability/sentry-test/").content.decode()
    assert 'id="sentry-off"' in page and "no SENTRY_DSN is configured" in page
    response = client.get("/admin/observability/sentry-test/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- The scrubbers, unit by unit --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("client 79001234567 wrote", "client 7900***4567 wrote"),
        ("jid 79001234567:12@s.whatsapp.net", "jid 7900***4567:12@s.whatsapp.net"),
        ("typed +7 (900) 123-45-67", "typed 7900***4567"),
        ("postgresql://ops:hunter22@db:5432/bot", "postgresql://ops:[Filtered]@db:5432/bot"),
        ("Authorization: Bearer abc.def", "Authorization: [Filtered]"),
        ("GET /health/?token=abc123&format=json", "GET /health/?token=[Filtered]&format=json"),
        (
            "{'pairingCode': 'ABCD1234', 'registered': True}",
            "{'pairingCode': [Filtered], 'registered': True}",
        ),
        (
            '{"noiseKey": {"private": {"a": 1}}, "platform": "android"}',
            '{"noiseKey": [Filtered], "platform": "android"}',
        ),
        ("{'type': 'Buffer', 'data': [1, 2, 3]}", "{'type': 'Buffer', 'data': [Filtered]}"),
        ("raw b'\\x01\\x02ab\\xff' end", "raw [Filtered] end"),
        ("key 3q2+7w8PxA1b2C3d4E5f6G7h8I9j0K== end", "key [Filtered] end"),
        ("hex " + "ab12" * 16, "hex [Filtered]"),
        ("bytes 12, 200, 3, 4, 5, 6, 7, 8, 9", "bytes [Filtered]"),
    ],
)
def test_scrub_text__removes_secrets_and_masks_phones(text, expected):
    """Secrets inside free text are filtered; phones are masked."""
    assert scrub_text(text, []) == expected


@pytest.mark.parametrize(
    "text",
    [
        "session company_962302 failed for salon 962302",
        "/admin/observability/sessionstate/company_962302/change/",
        "2026-11-25 16:57:53.123456+00:00",
        "canceling statement due to statement timeout",
        "SELECT company_id FROM whatsapp_auth WHERE company_id = %s",
        "bytes 12, 300, 3, 4, 5, 6, 7, 8, 9",
    ],
)
def test_scrub_text__leaves_ordinary_text_alone(text):
    """Ids, paths, timestamps, SQL and messages keep their meaning."""
    assert scrub_text(text, []) == text


def test_scrub__structures_buffers_byte_lists_keys_and_phone_numbers():
    """Buffers anywhere, byte lists, denylisted keys and phone-like integers are cleaned."""
    data = {
        "row": {"keyData": {"type": "Buffer", "data": "AAAA"}, "fingerprint": {"rawId": 5}},
        "nested": [{"type": "Buffer", "data": [1, 2, 3, 4, 5, 6, 7, 8]}],
        "raw_list": [10, 20, 30, 40, 50, 60, 70, 80],
        "API_KEY": "sk_live",
        "cookie": "sessionid=abc",
        "phone_number": 79001234567,
        "count": 42,
    }
    assert scrub(data, []) == {
        "row": {"keyData": FILTERED, "fingerprint": {"rawId": 5}},
        "nested": [FILTERED],
        "raw_list": FILTERED,
        "API_KEY": FILTERED,
        "cookie": FILTERED,
        "phone_number": "7900***4567",
        "count": 42,
    }


def test_before_send__check_ins_pass_unchanged_and_exception_fields_survive():
    """Check-ins are returned as they came; an exception keeps its type and its value key."""
    check_in = {"type": "check_in", "monitor_slug": "x", "status": "ok", "value": "79001234567"}
    assert before_send(dict(check_in), {}) == check_in
    event = {
        "exception": {"values": [{"type": "QueryTimedOut", "value": f"for {PHONE}"}]},
        "tags": {"salon": "962302"},
        "contexts": {"lookup": {"creds": {"noiseKey": "x"}, "phone": PHONE}},
    }
    cleaned = before_send(event, {})
    assert cleaned["exception"]["values"][0] == {
        "type": "QueryTimedOut",
        "value": "for 7900***4567",
    }
    assert cleaned["tags"]["salon"] == "962302"
    assert cleaned["contexts"]["lookup"] == {"creds": FILTERED, "phone": "7900***4567"}


def test_sentry_scope__tags_travel_on_the_exception_in_bare_form():
    """Tags given to the scope end up on the escaping exception, salon in the bare form."""
    with (
        pytest.raises(RuntimeError) as raised,
        sentry_scope(salon_id="company_962302", operation="outer", alias="bot"),
        sentry_scope(operation="inner"),
    ):
        raise RuntimeError("boom")
    assert raised.value._sentry_tags == {"salon": "962302", "operation": "inner", "alias": "bot"}


def test_before_send__innermost_scope_tags_win_along_the_cause_chain():
    """A failure re-raised by outer code keeps the tags of the scope where it happened."""
    try:
        with sentry_scope(operation="cleanup.batch", alias="bot"):
            try:
                with sentry_scope(salon_id="962302", operation="sessions.read"):
                    raise ValueError("inner")
            except ValueError as inner:
                raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        error = outer
    event = before_send({"tags": {"operation": "view:x"}}, {"exc_info": (None, error, None)})
    assert event["tags"] == {"operation": "sessions.read", "alias": "bot", "salon": "962302"}


def test_scrub__the_alert_webhook_secret_is_a_known_secret(settings):
    """The webhook's signing key, wherever it shows up in an event's text, is filtered."""
    settings.OBSERVABILITY_ALERT_WEBHOOK_SECRET = "whsec-Zq81kLm0pX"
    event = {"message": "signing with whsec-Zq81kLm0pX failed", "extra": {"k": "whsec-Zq81kLm0pX"}}
    cleaned = str(sentry.scrub_event(event))
    assert "whsec-Zq81kLm0pX" not in cleaned


def test_scrub__the_alert_webhook_url_token_is_a_known_secret(settings):
    """A Slack or Telegram webhook URL in an event keeps its host and loses its token."""
    settings.OBSERVABILITY_ALERT_WEBHOOK_URL = (
        "https://hooks.slack.com/services/T0AB12/B0CD34/kq81LmZp0XyR2sTu"
    )
    event = {
        "message": "POST https://hooks.slack.com/services/T0AB12/B0CD34/kq81LmZp0XyR2sTu failed",
        "extra": {"url": "https://hooks.slack.com/services/T0AB12/B0CD34/kq81LmZp0XyR2sTu"},
    }
    cleaned = str(sentry.scrub_event(event))
    assert "kq81LmZp0XyR2sTu" not in cleaned and "hooks.slack.com" in cleaned
    settings.OBSERVABILITY_ALERT_WEBHOOK_URL = (
        "https://api.telegram.org/bot123:AAEhBOweik/send?chat_id=-1001"
    )
    cleaned = sentry.scrub_text(
        "urlopen(https://api.telegram.org/bot123:AAEhBOweik/send?chat_id=-1001)"
    )
    assert "AAEhBOweik" not in cleaned and "-1001" not in cleaned and "api.telegram.org" in cleaned
