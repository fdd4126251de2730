"""Tests of /health/ and its groups: status codes, formats, who sees messages, the CLI."""

from __future__ import annotations

import hmac
import json
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connections

from observability import health_views, snapshot
from tests.health_support import (
    closed_port,
    committed_bot_sql,
    extra_alias,
    real_connections,
)

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

TOKEN = "s3cr3t-health-token-for-tests"


@pytest.fixture(autouse=True)
def _health_settings(settings):
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN


def _get(client, url: str, **headers):
    return client.get(url, headers={"Accept": "application/json", **headers})


def _bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_health_db__ok_answers_200_json(client):
    """Both databases up: 200 and one OK per alias."""
    response = _get(client, "/health/db/")
    assert response.status_code == 200
    assert response.json() == {
        "Database(alias='default')": "OK",
        "Database(alias='bot')": "OK",
    }


def test_health__format_parameter_selects_json(client):
    """?format=json answers JSON even to a browser's Accept header."""
    response = client.get("/health/pool/?format=json", headers={"Accept": "text/html"})
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {
        "ConnectionPool(alias='default')",
        "ConnectionPool(alias='bot')",
    }


def test_health__html_by_default(client):
    """A browser gets the HTML status page."""
    response = client.get("/health/connections/", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"System status" in response.content
    assert b"ConnectionBudget()" in response.content


def test_health__all_runs_every_group(client):
    """/health/ lists the service's checks: not the salons' verdict (/health/whatsapp/)."""
    response = _get(client, "/health/", **_bearer())
    assert set(response.json()) == {
        "Process()",
        "SnapshotFreshness()",
        "Database(alias='default')",
        "Database(alias='bot')",
        "ConnectionPool(alias='default')",
        "ConnectionPool(alias='bot')",
        "ConnectionBudget()",
        "JobQueue()",
    }


def test_health__warning_answers_200(client):
    """A service over its budget is a warning: HTTP 200 (the library alone would say 500)."""
    with real_connections("svc-view-over", 4):
        response = _get(client, "/health/connections/", **_bearer())
    assert response.status_code == 200
    assert response.json()["ConnectionBudget()"].startswith("Warning: ")
    assert "svc-view-over 4/3" in response.json()["ConnectionBudget()"]


def test_health__failure_answers_500(client, settings):
    """Connections at the failure share of max_connections: HTTP 500."""
    settings.OBSERVABILITY_CONNECTIONS_TOTAL_FAILURE = 0.05
    with real_connections("svc-view-flood", 6):
        response = _get(client, "/health/connections/", **_bearer())
    assert response.status_code == 500
    assert response.json()["ConnectionBudget()"].startswith("Unavailable: ")


def test_health__anonymous_sees_status_only(client):
    """Anonymous callers get the status word without the message naming services."""
    with real_connections("svc-view-anon", 4):
        response = _get(client, "/health/connections/")
    assert response.status_code == 200
    assert response.json() == {"ConnectionBudget()": "Warning"}
    assert b"svc-view-anon" not in response.content


def test_health__anonymous_html_hides_messages(client):
    """The HTML page shows an anonymous caller the status word only."""
    with real_connections("svc-view-anon-html", 4):
        response = client.get("/health/connections/", headers={"Accept": "text/html"})
    assert b"Warning" in response.content
    assert b"svc-view-anon-html" not in response.content


def test_health__user_with_the_permission_sees_messages(client, django_user_model):
    """A logged-in user with "Can see health check details" reads the messages."""
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_health_details"))
    client.force_login(staff)
    with real_connections("svc-view-staff", 4):
        response = _get(client, "/health/connections/")
    assert "svc-view-staff 4/3" in response.json()["ConnectionBudget()"]


def test_health__non_staff_user_sees_status_only(client, django_user_model):
    """A logged-in user without staff status is treated like an anonymous caller."""
    user = django_user_model.objects.create_user("someone", password="x")
    client.force_login(user)
    with real_connections("svc-view-user", 4):
        response = _get(client, "/health/connections/")
    assert response.json() == {"ConnectionBudget()": "Warning"}


def test_health__wrong_token_is_refused(client):
    """A wrong bearer token gets 401 and no check result at all."""
    with real_connections("svc-view-wrong", 4):
        response = _get(client, "/health/connections/", **_bearer("not-the-token"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"svc-view-wrong" not in response.content
    assert b"ConnectionBudget" not in response.content


def test_health__no_token_configured_refuses_every_token(client, settings):
    """With HEALTH_TOKEN unset even an empty bearer token is refused."""
    settings.OBSERVABILITY_HEALTH_TOKEN = ""
    assert _get(client, "/health/db/", Authorization="Bearer ").status_code == 401


def test_token_matches__compares_in_constant_time(monkeypatch):
    """The token comparison goes through hmac.compare_digest with both tokens."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(health_views.hmac, "compare_digest", spy)
    assert health_views.token_matches(TOKEN) is True
    assert health_views.token_matches(TOKEN[:-1] + "X") is False
    assert calls == [
        (TOKEN.encode(), TOKEN.encode()),
        ((TOKEN[:-1] + "X").encode(), TOKEN.encode()),
    ]


@pytest.mark.slow
def test_health_db__database_down_answers_500_json_within_the_timeout(client, settings):
    """A database on a closed port: /health/db/ says 500 in seconds; other groups still answer."""
    options = {k: v for k, v in connections.settings["bot"]["OPTIONS"].items() if k != "pool"}
    with extra_alias("down", HOST="127.0.0.1", PORT=str(closed_port()), OPTIONS=options):
        settings.OBSERVABILITY_HEALTH_DATABASE_ALIASES = ("default", "down")
        started = time.monotonic()
        response = _get(client, "/health/db/", **_bearer())
        elapsed = time.monotonic() - started
        assert response.status_code == 500
        assert response["Content-Type"] == "application/json"
        body = response.json()
        assert body["Database(alias='default')"] == "OK"
        assert body["Database(alias='down')"].startswith("Unavailable: Cannot connect")
        assert elapsed < 4
        assert _get(client, "/health/connections/").status_code == 200
        assert _get(client, "/health/pool/").status_code == 200


@pytest.mark.django_db(databases=["default", "bot"], transaction=True)
def test_health_whatsapp__fails_on_committed_failing_sessions(client, request):
    """A failing session in the snapshot: /health/whatsapp/ answers 500, bot down or not."""
    committed_bot_sql(
        """
        INSERT INTO whatsapp_auth (company_id, creds, updated_at)
        VALUES ('962777', '{"registered": true, "me": {"id": "79001234567:1@s.whatsapp.net"}}',
                now() - interval '3 days');
        INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, updated_at, expires_at)
        SELECT '962777', 'session', 'k' || i, '{}', now() - interval '3 days',
               now() + interval '4 days'
          FROM generate_series(1, 20) AS i;
        """
    )
    try:
        snapshot.refresh(full=True)
    finally:
        committed_bot_sql(
            "DELETE FROM whatsapp_keys WHERE company_id = '962777';"
            "DELETE FROM whatsapp_auth WHERE company_id = '962777';"
        )
    request.getfixturevalue("bot_database_down")  # the snapshot is all the answer needs
    anonymous = _get(client, "/health/whatsapp/")
    with_token = _get(client, "/health/whatsapp/", **_bearer())
    live = _get(client, "/health/live/")
    assert anonymous.status_code == 500
    assert anonymous.json() == {"WhatsAppStore()": "Unavailable"}
    message = with_token.json()["WhatsAppStore()"]
    assert "1 of 1 session(s) failing (worst: 962777)" in message
    assert "79001234567" not in json.dumps(with_token.json())
    assert "s ago" in message  # the snapshot's age
    assert live.status_code == 200 and live.json() == {"Process()": "OK"}


@pytest.mark.django_db(databases=["default", "bot"], transaction=True)
def test_health__salons_failing_do_not_fail_the_service(client):
    """/health/ answers 200 while the service works, though a salon fails in the snapshot."""
    committed_bot_sql(
        """
        INSERT INTO whatsapp_auth (company_id, creds, updated_at)
        VALUES ('962778', '{"registered": false}', now() - interval '3 days');
        """
    )
    try:
        snapshot.refresh(full=True)
        whatsapp = _get(client, "/health/whatsapp/")
        snapshot_group = _get(client, "/health/snapshot/", **_bearer())
    finally:
        committed_bot_sql("DELETE FROM whatsapp_auth WHERE company_id = '962778';")
    assert whatsapp.status_code == 500
    assert snapshot_group.status_code == 200
    assert snapshot_group.json()["SnapshotFreshness()"] == "OK"


def test_health_command__runs_the_same_checks_in_process(capsys):
    """`manage.py health_check observability:health-db --no-http` prints each check, exit 0."""
    with pytest.raises(SystemExit) as exited:
        call_command("health_check", "observability:health-db", "--no-http")
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "Database(alias='default'): OK" in out
    assert "Database(alias='bot'): OK" in out


def test_health_command__exits_1_on_failure(capsys, settings):
    """The command exits non-zero when a check fails."""
    options = {k: v for k, v in connections.settings["bot"]["OPTIONS"].items() if k != "pool"}
    with extra_alias("down", HOST="127.0.0.1", PORT=str(closed_port()), OPTIONS=options):
        settings.OBSERVABILITY_HEALTH_DATABASE_ALIASES = ("down",)
        with pytest.raises(SystemExit) as exited:
            call_command("health_check", "observability:health-db", "--no-http")
    assert exited.value.code == 1
    assert "Database(alias='down'): Unavailable" in capsys.readouterr().out


def test_health__failure_is_not_logged_as_a_server_error(client, settings, caplog):
    """A failing check answers 500 without an "Internal Server Error" log (nor Sentry event)."""
    settings.OBSERVABILITY_CONNECTIONS_TOTAL_FAILURE = 0.05
    with real_connections("svc-view-quiet", 6), caplog.at_level("WARNING"):
        response = _get(client, "/health/connections/")
    assert response.status_code == 500
    assert not [r for r in caplog.records if r.name == "django.request"]
    assert not [r for r in caplog.records if r.name == "health_check"]  # per-poll: dropped


def test_health__polls_log_each_change_of_state_once(client, settings, caplog):
    """Three failing polls of a real over-full server log the change to FAIL once."""
    health_views._last_states.clear()
    settings.OBSERVABILITY_CONNECTIONS_TOTAL_FAILURE = 0.05
    with (
        caplog.at_level("INFO", logger="observability.health_views"),
        real_connections("svc-view-poll", 6),
    ):
        for _ in range(3):
            assert _get(client, "/health/connections/").status_code == 500
    lines = [r.getMessage() for r in caplog.records if r.name == "observability.health_views"]
    assert [line for line in lines if "ConnectionBudget()" in line and "-> FAIL" in line] == [
        lines[0]
    ], lines
    assert lines[0].startswith("health check ConnectionBudget(): OK -> FAIL: ")


def test_log_state_changes__each_change_once_recovery_at_info(caplog):
    """FAIL, FAIL, WARN, WARN, OK, OK logs three lines: to FAIL, to WARN, recovered."""
    from health_check.base import HealthCheckResult
    from health_check.exceptions import ServiceUnavailable, ServiceWarning

    health_views._last_states.clear()
    states = [
        ServiceUnavailable("down"),
        ServiceUnavailable("still down"),
        ServiceWarning("slow"),
        ServiceWarning("slow"),
        None,
        None,
    ]
    with caplog.at_level("INFO", logger="observability.health_views"):
        for error in states:
            health_views.log_state_changes(
                [HealthCheckResult(check="Probe()", error=error, time_taken=0.01)]
            )
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "health check 'Probe()': OK -> FAIL: Unavailable: down"),
        ("WARNING", "health check 'Probe()': FAIL -> WARN: Warning: slow"),
        ("INFO", "health check 'Probe()' recovered: WARN -> OK"),
    ]


# --- Shared results (health_views.SharedResults) ----------------------------------------------


@pytest.fixture
def computations(monkeypatch, settings):
    """The groups whose checks actually ran, one entry per computation (answers last 60 s)."""
    settings.OBSERVABILITY_HEALTH_RESULT_TTL = timedelta(seconds=60)
    ran: list[str] = []
    real = health_views.HealthView._run_checks

    def counting(view, checks):
        ran.append(view.group)
        return real(view, checks)

    monkeypatch.setattr(health_views.HealthView, "_run_checks", counting)
    return ran


def test_health__concurrent_callers_share_one_computation(computations):
    """Eight monitors polling /health/ at once: the checks run once, every caller gets them."""
    from django.test import Client

    callers = 8
    barrier = threading.Barrier(callers)
    answers: list = []

    def poll():
        barrier.wait()
        answers.append(_get(Client(), "/health/", **_bearer()))

    threads = [threading.Thread(target=poll) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert computations == ["all"]
    assert len(answers) == callers
    assert len({(a.status_code, a.content) for a in answers}) == 1
    assert "JobQueue()" in answers[0].json()


def test_health__a_failure_shows_once_the_shared_answer_expires(client, settings):
    """A server filling up is hidden at most the TTL: the poll after it answers 500."""
    from observability import activity

    server = activity.server_activity()
    settings.OBSERVABILITY_HEALTH_RESULT_TTL = timedelta(seconds=1)
    settings.OBSERVABILITY_CONNECTIONS_TOTAL_FAILURE = (server.total + 4) / server.max_connections
    started = time.monotonic()
    assert _get(client, "/health/connections/").status_code == 200
    with real_connections("svc-view-shared", 8):
        shared = _get(client, "/health/connections/")
        if time.monotonic() - started < 0.5:  # a slow machine may already refresh it
            assert shared.status_code == 200
        time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
        assert _get(client, "/health/connections/").status_code == 500


def test_health__each_group_keeps_its_own_answer(client, computations):
    """/health/db/, /health/pool/ and /health/ never answer with each other's checks."""
    db = _get(client, "/health/db/", **_bearer()).json()
    pool = _get(client, "/health/pool/", **_bearer()).json()
    everything = _get(client, "/health/", **_bearer()).json()
    assert set(db) == {"Database(alias='default')", "Database(alias='bot')"}
    assert set(pool) == {"ConnectionPool(alias='default')", "ConnectionPool(alias='bot')"}
    assert len(everything) == 8
    assert computations == ["db", "pool", "all"]


def test_health__a_shared_answer_shows_messages_only_to_whom_may_read_them(client, computations):
    """One computation serves an anonymous caller the status and a monitor the message."""
    with real_connections("svc-view-share-anon", 4):
        anonymous = _get(client, "/health/connections/")
        monitor = _get(client, "/health/connections/", **_bearer())
    assert computations == ["connections"]
    assert anonymous.json() == {"ConnectionBudget()": "Warning"}
    assert "svc-view-share-anon 4/3" in monitor.json()["ConnectionBudget()"]


def test_health__whatsapp_and_a_zero_ttl_compute_every_request(client, settings, computations):
    """The salons' verdict is never shared, nor anything with the TTL set to 0."""
    _get(client, "/health/whatsapp/")
    _get(client, "/health/whatsapp/")
    settings.OBSERVABILITY_HEALTH_RESULT_TTL = timedelta(0)
    _get(client, "/health/live/")
    _get(client, "/health/live/")
    assert computations == ["whatsapp", "whatsapp", "live", "live"]


def test_shared_results__a_computation_that_raises_is_not_kept():
    """A computation's error reaches its caller, and the next caller computes again."""
    shared = health_views.SharedResults()
    calls: list[int] = []

    def broken():
        calls.append(1)
        raise RuntimeError("checks could not start")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            shared.get(("all",), timedelta(seconds=60), broken)
    assert len(calls) == 2


def test_health__every_format_of_the_library(client):
    """text, openmetrics, atom and rss answer as the library does; an unknown type is 406."""
    text = client.get("/health/live/", headers={"Accept": "text/plain"})
    assert text.content == b"Process(): OK\n"
    metrics = client.get("/health/live/?format=openmetrics")
    assert b'django_health_check_status{check="Process"} 1' in metrics.content
    assert client.get("/health/live/?format=atom")["Content-Type"].startswith(
        "application/atom+xml"
    )
    rss = client.get("/health/live/", headers={"Accept": "application/rss+xml"})
    assert rss["Content-Type"].startswith("application/rss+xml")
    refused = client.get("/health/live/", headers={"Accept": "image/png"})
    assert refused.status_code == 406
    assert refused["Vary"] == "Accept" and "no-cache" in refused["Cache-Control"]


def test_shared_results__refreshed_from_half_the_ttl_while_the_others_keep_the_valid_one():
    """Past half the TTL one caller computes the next answer; meanwhile others get the old."""
    shared = health_views.SharedResults()
    ttl = timedelta(seconds=4)
    key = ("all",)

    def must_not_run():
        raise AssertionError("a caller computed while a valid answer was being refreshed")

    assert shared.get(key, ttl, lambda: ["old"]) == ["old"]
    assert shared.get(key, ttl, must_not_run) == ["old"]  # young: shared
    time.sleep(2.1)  # past half the TTL
    computing, release = threading.Event(), threading.Event()
    threading.Timer(6, release.set).start()  # never hang the suite
    refreshed: list = []

    def slow_refresh():
        computing.set()
        release.wait()
        return ["new"]

    refresher = threading.Thread(
        target=lambda: refreshed.append(shared.get(key, ttl, slow_refresh))
    )
    refresher.start()
    assert computing.wait(5)
    assert shared.get(key, ttl, must_not_run) == ["old"]  # valid: no wait for the refresh
    release.set()
    refresher.join(10)
    assert refreshed == [["new"]]
    assert shared.get(key, ttl, must_not_run) == ["new"]


@pytest.mark.django_db(databases=["default", "bot"], transaction=True)  # checks run in threads
def test_health_whatsapp__an_ok_store_still_says_the_snapshot_age(client):
    """Store OK: the JSON stays the library's "OK"; headers and the HTML page carry the age."""
    from datetime import UTC

    from django.utils import timezone

    taken = timezone.now().replace(microsecond=0) - timedelta(minutes=2)
    snapshot.refresh(full=True, now=taken)
    answers = {
        "json": _get(client, "/health/whatsapp/"),
        "text": client.get("/health/whatsapp/", headers={"Accept": "text/plain"}),
        "html": client.get("/health/whatsapp/", headers={"Accept": "text/html"}),
        "service": _get(client, "/health/"),
    }
    assert answers["json"].status_code == 200
    assert answers["json"].json() == {"WhatsAppStore()": "OK"}  # monitors match "OK" as ever
    stamp = taken.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for name, response in answers.items():
        assert response[health_views.SNAPSHOT_TAKEN_AT_HEADER] == stamp, name
        assert 120 <= int(response[health_views.SNAPSHOT_AGE_HEADER]) < 180, name
    html = answers["html"].content.decode()
    assert 'id="snapshot-age"' in html and "· 2 minutes ago." in html


def test_health_whatsapp__no_snapshot_yet_fails_without_an_age(client):
    """Before the first snapshot: 500, no snapshot headers (there is no age to give)."""
    response = _get(client, "/health/whatsapp/", **_bearer())
    assert response.status_code == 500
    assert "take_snapshot" in response.json()["WhatsAppStore()"]
    assert health_views.SNAPSHOT_TAKEN_AT_HEADER not in response
    assert health_views.SNAPSHOT_AGE_HEADER not in response
    assert health_views.SNAPSHOT_TAKEN_AT_HEADER not in _get(client, "/health/db/")
