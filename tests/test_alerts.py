"""Tests of the store alert: transitions to FAIL reach a real Sentry endpoint, with a cooldown."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db.models import F
from django.utils import timezone

from observability import alerts, snapshot
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


@pytest.fixture(autouse=True)
def _empty_alert_state():
    cache.delete_many([alerts.STATUS_KEY, alerts.FAILING_CAUSES_KEY])
    cache.delete_many(
        [alerts.COOLDOWN_KEY.format(cause=c) for c in ("failing_sessions", "one_login_twice")]
    )


def _healthy(session_id: str) -> None:
    factories.make_auth(session_id)
    factories.make_keys(session_id, "session", 60)
    factories.make_keys(session_id, "pre-key", 20)


def _failing(session_id: str) -> None:
    written_at = timezone.now() - timedelta(days=3)
    factories.make_auth(session_id, written_at=written_at, phone="79001234567")
    factories.make_keys(session_id, "session", 60, written_at=written_at)
    factories.make_keys(session_id, "pre-key", 20, written_at=written_at)


def _recover(session_id: str) -> None:
    """The bot writes the session again (the table's trigger stamps updated_at = now())."""
    factories.WhatsAppKey.objects.filter(company_id=session_id).update(key_type=F("key_type"))
    factories.WhatsAppAuth.objects.filter(company_id=session_id).update(creds=F("creds"))


def _fail_again(session_id: str) -> None:
    """The session is replaced by one unwritten for three days."""
    factories.WhatsAppKey.objects.filter(company_id=session_id).delete()
    factories.WhatsAppAuth.objects.filter(company_id=session_id).delete()
    _failing(session_id)


def _check() -> dict:
    """The worker's order: refresh the snapshot, then judge the alert from it."""
    snapshot.refresh(full=True)
    return alerts.check_store_and_alert()


def _alert_events(server) -> list[dict]:
    return [e for e in server.events() if e.get("tags", {}).get("operation") == "health.store"]


def test_check_store_and_alert__reports_a_transition_to_fail(sentry_server):
    """OK then FAIL: one Sentry event per failing cause, fingerprinted, with the action."""
    _healthy("962302")
    assert _check()["status"] == "OK"
    _failing("962303")
    result = _check()
    assert result["status"] == "FAIL"
    assert result["previous_status"] == "OK"
    assert result["reported"] == ["failing_sessions"]
    assert sentry_server.wait_for(lambda s: len(_alert_events(s)) == 1)
    (event,) = _alert_events(sentry_server)
    assert event["fingerprint"] == ["observability-alert", "store.failing_sessions"]
    assert event["level"] == "error"
    text = event["message"] if isinstance(event.get("message"), str) else str(event)
    assert "1 of 2 session(s) failing (worst: 962303)" in text
    assert "Recommended action:" in text
    assert b"79001234567" not in sentry_server.raw


def test_check_store_and_alert__stays_quiet_while_it_keeps_failing(sentry_server):
    """A store that was already failing at the previous run is not reported again."""
    _failing("962303")
    assert _check()["reported"] == ["failing_sessions"]
    assert _check()["reported"] == []
    assert sentry_server.wait_for(lambda s: len(_alert_events(s)) >= 1)
    sentry_server.wait_for(lambda s: False, timeout=0.3)
    assert len(_alert_events(sentry_server)) == 1


def test_check_store_and_alert__cooldown_suppresses_a_flapping_cause(sentry_server):
    """FAIL, OK, FAIL within the cooldown: the cause is reported once, then suppressed."""
    _failing("962303")
    assert _check()["reported"] == ["failing_sessions"]
    _recover("962303")
    assert _check()["status"] == "OK"
    _fail_again("962303")
    result = _check()
    assert result["reported"] == []
    assert result["suppressed"] == ["failing_sessions"]
    sentry_server.wait_for(lambda s: False, timeout=0.3)
    assert len(_alert_events(sentry_server)) == 1


def test_check_store_and_alert__reports_again_after_the_cooldown(sentry_server, settings):
    """Once the cooldown has passed, a new transition is reported again."""
    settings.OBSERVABILITY_STORE_ALERT_COOLDOWN = timedelta(seconds=1)
    _failing("962303")
    _check()
    _recover("962303")
    assert _check()["status"] == "OK"
    time.sleep(2.1)  # the cooldown entry expires (the database cache keeps whole seconds)
    _fail_again("962303")
    assert _check()["reported"] == ["failing_sessions"]
    assert sentry_server.wait_for(lambda s: len(_alert_events(s)) == 2)


def test_check_store_and_alert__each_cause_has_its_own_issue(sentry_server):
    """One number under both spellings fails as sessions and as one login twice: two events."""
    _healthy("962302")
    _healthy("company_962302")
    result = _check()
    assert result["reported"] == ["failing_sessions", "one_login_twice"]
    assert sentry_server.wait_for(lambda s: len(_alert_events(s)) == 2)
    fingerprints = sorted(e["fingerprint"][1] for e in _alert_events(sentry_server))
    assert fingerprints == ["store.failing_sessions", "store.one_login_twice"]


def test_check_store_and_alert__no_op_without_sentry():
    """With Sentry off nothing is reported, and the status is still recorded."""
    _failing("962303")
    result = _check()
    assert result["status"] == "FAIL"
    assert result["reported"] == []
    assert cache.get(alerts.STATUS_KEY) == "FAIL"


def test_check_store_health_task__calls_the_alert(sentry_server):
    """The django-q2 task wrapper runs the store check and returns its result."""
    from observability.tasks import check_store_health

    _failing("962303")
    snapshot.refresh(full=True)
    assert check_store_health()["reported"] == ["failing_sessions"]


def test_check_store_and_alert__a_stale_snapshot_is_a_cause_of_its_own(sentry_server):
    """A snapshot older than the failure age is reported as 'stale_snapshot' with an action."""
    _healthy("962302")
    snapshot.refresh(full=True, now=timezone.now() - timedelta(minutes=15))
    result = alerts.check_store_and_alert()
    assert result["status"] == "FAIL" and result["failing_causes"] == ["stale_snapshot"]
    assert sentry_server.wait_for(lambda s: _alert_events(s))
    (event,) = _alert_events(sentry_server)
    assert event["fingerprint"] == ["observability-alert", "store.stale_snapshot"]
    text = event["message"] if isinstance(event.get("message"), str) else str(event)
    assert "15 min ago" in text and "worker" in text
