"""Tests of the store alert: its own causes reach a real Sentry endpoint once, with a cooldown."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db.models import F
from django.utils import timezone

from observability import alerts, snapshot
from observability.models import Snapshot
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


@pytest.fixture(autouse=True)
def _empty_alert_state():
    cache.delete_many([alerts.STATUS_KEY, alerts.FAILING_CAUSES_KEY])
    cache.delete_many(
        [
            alerts.COOLDOWN_KEY.format(cause=c)
            for c in ("failing_sessions", "one_login_twice", "stale_snapshot")
        ]
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


def _stale(minutes: int = 15) -> dict:
    """The worker stopped: the last snapshot is ``minutes`` old when the alert is judged."""
    snapshot.refresh(full=True)
    Snapshot.objects.update(taken_at=F("taken_at") - timedelta(minutes=minutes))
    return alerts.check_store_and_alert()


def _session_events(server) -> list[dict]:
    return [e for e in server.events() if e.get("tags", {}).get("operation") == "alerts.session"]


def test_check_store_and_alert__a_failing_session_is_one_sentry_event_not_two(sentry_server):
    """A session turning FAIL is one event (transition stream), not a store alert as well."""
    _healthy("962302")
    _healthy("962303")
    assert _check()["status"] == "OK"
    _fail_again("962303")
    result = _check()
    assert result["status"] == "FAIL" and result["previous_status"] == "OK"
    assert result["failing_causes"] == ["failing_sessions"] and result["reported"] == []
    assert alerts.dispatch_transitions()["sent"] == 1
    assert sentry_server.wait_for(lambda s: len(_session_events(s)) == 1)
    sentry_server.wait_for(lambda s: False, timeout=0.3)
    assert len(sentry_server.events()) == 1
    assert b"79001234567" not in sentry_server.raw


def test_check_store_and_alert__one_login_twice_is_reported_per_session_only(sentry_server):
    """One number under both spellings: each session's FAIL is an event, the store adds none."""
    _healthy("962302")
    _healthy("company_962302")
    result = _check()
    assert result["failing_causes"] == ["failing_sessions", "one_login_twice"]
    assert result["reported"] == []
    sentry_server.wait_for(lambda s: False, timeout=0.3)
    assert not _alert_events(sentry_server)


def test_check_store_and_alert__stays_quiet_while_it_keeps_failing(sentry_server):
    """A store that was already failing at the previous run is not reported again."""
    _healthy("962302")
    assert _stale()["reported"] == ["stale_snapshot"]
    assert _stale(16)["reported"] == []
    assert sentry_server.wait_for(lambda s: len(_alert_events(s)) >= 1)
    sentry_server.wait_for(lambda s: False, timeout=0.3)
    assert len(_alert_events(sentry_server)) == 1


def test_check_store_and_alert__cooldown_suppresses_a_flapping_cause(sentry_server):
    """FAIL, OK, FAIL within the cooldown: the cause is reported once, then suppressed."""
    _healthy("962302")
    assert _stale()["reported"] == ["stale_snapshot"]
    assert _check()["status"] == "OK"
    result = _stale(20)
    assert result["reported"] == []
    assert result["suppressed"] == ["stale_snapshot"]
    sentry_server.wait_for(lambda s: False, timeout=0.3)
    assert len(_alert_events(sentry_server)) == 1


def test_check_store_and_alert__reports_again_after_the_cooldown(sentry_server, settings):
    """Once the cooldown has passed, a new transition is reported again."""
    settings.OBSERVABILITY_STORE_ALERT_COOLDOWN = timedelta(seconds=1)
    _healthy("962302")
    _stale()
    assert _check()["status"] == "OK"
    time.sleep(2.1)  # the cooldown entry expires (the database cache keeps whole seconds)
    assert _stale(20)["reported"] == ["stale_snapshot"]
    assert sentry_server.wait_for(lambda s: len(_alert_events(s)) == 2)


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

    _healthy("962302")
    snapshot.refresh(full=True, now=timezone.now() - timedelta(minutes=15))
    assert check_store_health()["reported"] == ["stale_snapshot"]


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
    assert "· 15 minutes ago" in text and "worker" in text
