"""Tests for observability.sessions: each status and reason from real rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from observability import sessions
from observability.exceptions import SessionNotFound
from observability.session_ids import Spelling
from observability.sessions import Status
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


def healthy(session_id: str, *, written_at=None, session_keys: int = 20, **auth) -> None:
    """A session the bot uses: auth row, enough session keys, all written recently."""
    factories.make_auth(session_id, written_at=written_at, **auth)
    factories.make_keys(session_id, "session", session_keys, written_at=written_at)
    factories.make_keys(session_id, "pre-key", 5, written_at=written_at)


def test_status__worst_and_severity():
    """FAIL outranks WARN outranks OK, and nothing at all is OK."""
    assert sessions.worst(Status.OK, Status.FAIL, Status.WARN) is Status.FAIL
    assert sessions.worst() is Status.OK
    assert Status.WARN.severity > Status.OK.severity


def test_get_session__healthy_is_ok_with_facts():
    """A freshly written QR-paired session is OK and carries its facts, phone masked."""
    factories.make_company(962302, title="Лотос")
    healthy("962302", phone="79001234567", platform="smba")
    health = sessions.get_session("962302")
    assert health.status is Status.OK
    assert health.reasons == ()
    assert health.salon_id == 962302
    assert health.spelling is Spelling.BARE
    assert health.salon_title == "Лотос"
    assert health.key_counts == {"pre-key": 5, "session": 20}
    assert health.total_keys == 25 and health.session_keys == 20
    assert health.expired_keys == 0 and health.expired_share == 0.0
    assert health.phone_masked == "7900***4567"
    assert health.registered is False and health.platform == "smba"
    assert health.paired and health.pairing == "QR"
    assert health.has_auth and health.has_keys
    assert health.twin_session_id is None
    assert "79001234567" not in repr(health)


def test_get_session__quiet_for_a_day_warns():
    """No key written for 30 hours is a WARN that says so."""
    healthy("company_1001", written_at=timezone.now() - timedelta(hours=30))
    health = sessions.get_session("company_1001")
    assert health.status is Status.WARN
    assert health.spelling is Spelling.PREFIXED
    assert any("No key written for 30 hours" in r and "quiet salon" in r for r in health.reasons)


def test_get_session__quiet_for_two_days_fails():
    """No key written for 3 days is a FAIL: the bot is likely disconnected."""
    healthy("1002", written_at=timezone.now() - timedelta(days=3))
    health = sessions.get_session("1002")
    assert health.status is Status.FAIL
    assert any("No key written for 3 days" in r and "disconnected" in r for r in health.reasons)


def test_get_session__mostly_expired_is_counted_not_judged():
    """Keys past expires_at are a fact, never a fault (pre-keys stay live past it)."""
    healthy("1003")
    past = timezone.now() - timedelta(days=1)
    factories.make_keys("1003", "pre-key", 30, expires_at=past, first_id=100)
    health = sessions.get_session("1003")
    assert health.expired_keys == 30 and health.expired_share > 0.5
    assert health.status is Status.OK and health.reasons == ()


def test_get_session__few_session_keys_is_ok():
    """Few 'session' rows is a small salon, not a fault (they exist per contact)."""
    healthy("1004", session_keys=3)
    assert sessions.get_session("1004").status is Status.OK


def test_get_session__both_spellings_with_one_login_fail_and_point_at_each_other():
    """The same creds under both spellings fail on both ids, each naming its twin."""
    healthy("1005", seed=1)
    healthy("company_1005", seed=1)
    bare, prefixed = sessions.get_session("1005"), sessions.get_session("company_1005")
    assert bare.status is Status.FAIL and prefixed.status is Status.FAIL
    assert bare.twin_session_id == "company_1005"
    assert prefixed.twin_session_id == "1005"
    assert "One login in two places: 'company_1005'" in bare.reasons[0]


def test_get_session__keys_without_auth_warn():
    """Keys without an auth row are a WARN naming them leftovers."""
    factories.make_keys("1006", "session", 20)
    health = sessions.get_session("1006")
    assert health.status is Status.WARN
    assert not health.has_auth and health.is_orphan
    assert health.registered is None and health.phone_masked is None
    assert any("without an auth row" in r for r in health.reasons)


def test_get_session__unfinished_pairing_fails():
    """Creds without me.id and account are a FAIL asking to pair again."""
    factories.make_auth("1007", paired=False)
    health = sessions.get_session("1007")
    assert health.status is Status.FAIL
    assert health.registered is False and not health.paired and health.pairing is None
    assert any("Not paired" in r and "Pair the salon" in r for r in health.reasons)


def test_get_session__paired_auth_without_keys_fails():
    """A paired auth row with no key at all FAILs: no pre-key for new contacts."""
    factories.make_auth("1008")
    health = sessions.get_session("1008")
    assert health.status is Status.FAIL
    assert not health.has_keys and health.newest_key_write is None
    assert any("No pre-key is stored" in r for r in health.reasons)


def test_get_session__unknown_raises_not_found():
    """An id with neither auth nor keys raises SessionNotFound."""
    with pytest.raises(SessionNotFound):
        sessions.get_session("424242")


def test_get_session__thresholds_come_from_settings(settings):
    """Raising the minimum of pre-keys in settings turns an OK session into WARN."""
    healthy("1009", session_keys=20)
    assert sessions.get_session("1009").status is Status.OK
    settings.OBSERVABILITY_MIN_PREKEY_COUNT = 50
    assert sessions.get_session("1009").status is Status.WARN


def test_list_sessions__worst_first_and_filtered():
    """The list puts FAIL before WARN before OK, and session_ids restricts it."""
    healthy("2001")
    healthy("2002", written_at=timezone.now() - timedelta(hours=30))
    factories.make_auth("2003", paired=False)
    listed = sessions.list_sessions()
    assert [h.session_id for h in listed] == ["2003", "2002", "2001"]
    only = sessions.list_sessions(session_ids=["2001"])
    assert [h.session_id for h in only] == ["2001"]
    assert sessions.list_sessions(session_ids=[]) == []


def test_list_sessions__filtered_still_sees_twins():
    """Asking for one spelling still detects the other stored spelling."""
    healthy("2004")
    factories.make_keys("company_2004", "session", 1)
    (health,) = sessions.list_sessions(session_ids=["2004"])
    assert health.twin_session_id == "company_2004"
    assert health.status is Status.OK  # the keys-only twin is the orphan, not this session
    (twin,) = sessions.list_sessions(session_ids=["company_2004"])
    assert twin.status is Status.WARN and twin.rules == ("orphan_keys",)


def test_list_sessions__filtered_still_sees_shared_logins_outside_the_filter():
    """A session filtered alone still learns that another id holds its login."""
    healthy("2005", seed=1)
    healthy("2006", seed=1)  # same seed: the same creds
    (health,) = sessions.list_sessions(session_ids=["2005"])
    assert health.facts.shares_login_with == ("2006",)
    assert health.status is Status.FAIL


def test_list_sessions__filtered_sees_one_number_written_another_way_outside_the_filter():
    """A number stored as 79... and as its bare ten digits is one number, filtered or not."""
    healthy("2007", phone="79001112233")
    healthy("2008", phone="9001112233")  # creds.me.id without the country code
    healthy("2009", phone="79005556677")
    (health,) = sessions.list_sessions(session_ids=["2007"])
    assert health.facts.shares_phone_with == ("2008",)
    assert health.facts.shares_login_with == ()
    every = {h.session_id: h for h in sessions.list_sessions()}
    assert every["2007"].facts == health.facts


def test_list_sessions__many_ids_read_in_one_scan_answer_as_looked_up_one_by_one(monkeypatch):
    """Past the lookups' limit the ids are read in one scan: the same facts either way."""
    now = timezone.now()
    healthy("2011")
    factories.make_keys("2011", "pre-key", 3, first_id=40, expires_at=now - timedelta(days=1))
    healthy("2012", written_at=now - timedelta(hours=30))
    factories.make_auth("2013")  # no keys at all
    wanted = ["2011", "2012", "2013"]
    looked_up = sessions.list_sessions(session_ids=wanted, now=now)
    monkeypatch.setattr(sessions, "_LOOKUPS_MAX", 2)
    scanned = sessions.list_sessions(session_ids=wanted, now=now)
    assert [h.facts for h in scanned] == [h.facts for h in looked_up]
    assert scanned == looked_up
    first = next(h for h in scanned if h.session_id == "2011")
    assert (first.expired_keys, first.facts.max_pre_key_id) == (3, 42)


def _seed_many(count: int, start: int) -> None:
    for index in range(count):
        sid = str(start + index)
        factories.make_auth(sid, seed=start + index, phone=f"7900{start + index:07d}")
        factories.make_keys(sid, "session", 2, seed=index)


def test_list_sessions__query_count_does_not_grow():
    """Three queries answer 10 sessions and 60 sessions alike."""
    _seed_many(10, 3000)
    with CaptureQueriesContext(connections["bot"]) as small:
        assert len(sessions.list_sessions()) == 10
    _seed_many(50, 4000)
    with CaptureQueriesContext(connections["bot"]) as large:
        assert len(sessions.list_sessions()) == 60
    assert len(small.captured_queries) == len(large.captured_queries) == 3


def test_store_health__expired_keys_are_counted_never_judged():
    """Hundreds of keys past expires_at leave the store OK: Baileys still needs pre-keys."""
    healthy("5001", session_keys=400)
    past = timezone.now() - timedelta(days=1)
    factories.make_keys("5001", "pre-key", 600, expires_at=past, first_id=100)
    store = sessions.store_health()
    assert store.total_expired_keys == 600
    assert store.status is Status.OK and store.findings == ()


def test_store_health__duplicates_orphans_and_worst():
    """One login under two spellings fails the store; orphans are listed; worst come first."""
    healthy("6001", seed=7, phone="79007777777")
    healthy("6002", seed=1)
    healthy("company_6002", seed=1)
    factories.make_keys("company_6003", "session", 12)
    store = sessions.store_health()
    assert store.total_sessions == 4
    assert store.duplicate_salon_ids == (6002,)
    assert store.orphan_session_ids == ("company_6003",)
    assert store.shared_logins == (("6002", "company_6002"),)
    assert store.status is Status.FAIL
    assert [f.cause for f in store.findings] == [
        "failing_sessions",
        "one_login_twice",
        "warning_sessions",
        "orphan_sessions",
    ]
    assert store.sessions_by_status == {Status.OK: 1, Status.WARN: 1, Status.FAIL: 2}
    assert store.keys_by_type == {"pre-key": 15, "session": 72}
    assert {h.session_id for h in store.worst[:2]} == {"6002", "company_6002"}
    assert store.worst[-1].session_id == "6001"


def test_session_detail__creds_summary_withholds_every_secret():
    """The creds walk names every field but gives values only for allow-listed ones."""
    healthy("7001", phone="79001234567", registered=True)
    detail = sessions.session_detail("7001")
    fields = {field.path: field for field in detail.creds}
    assert fields["noiseKey.private"].kind == "buffer"
    assert fields["noiseKey.private"].length == 32 and fields["noiseKey.private"].shown is None
    assert fields["advSecretKey"].shown is None and fields["advSecretKey"].is_secret
    assert fields["pairingCode"].shown is None
    assert fields["routingInfo"].kind == "buffer" and fields["routingInfo"].length == 24
    assert fields["account.details"].shown is None
    assert fields["me.id"].shown == "7900***4567"
    assert fields["registered"].shown == "true" and fields["platform"].shown == "android"
    assert all(field.shown is None for path, field in fields.items() if "private" in path)


def test_session_detail__key_types_and_charts():
    """Keys by type give counts, expired, next expiry; the charts count writes and expiries."""
    now = timezone.now()
    healthy("7002")
    factories.make_keys("7002", "sender-key", 4, written_at=now - timedelta(days=9))
    detail = sessions.session_detail("7002", now=now)
    by_type = {stats.key_type: stats for stats in detail.key_types}
    assert by_type["sender-key"].count == 4 and by_type["sender-key"].expired == 4
    assert by_type["sender-key"].next_expiry is None
    assert by_type["session"].next_expiry is not None
    assert len(detail.writes_per_day) == 14 and len(detail.expiries_per_day) == 14
    assert detail.writes_per_day[-1].count == 25  # written today
    assert sum(day.count for day in detail.writes_per_day) == 29
    assert sum(day.count for day in detail.expiries_per_day) == 25  # the live ones, in 7 days


def test_browse_keys__pages_filters_and_sizes():
    """The key browser pages by type and id, filters expiry, and measures Buffers in bytes."""
    healthy("7003")
    factories.make_keys("7003", "sender-key", 3, expires_at=timezone.now() - timedelta(days=1))
    first = sessions.browse_keys("7003", per_page=10)
    assert first.total == 28 and first.pages == 3 and len(first.rows) == 10
    assert [row.key_type for row in first.rows] == ["pre-key"] * 5 + ["sender-key"] * 3 + [
        "session"
    ] * 2
    expired = sessions.browse_keys("7003", expired=True)
    assert expired.total == 3 and all(row.expired for row in expired.rows)
    assert {row.value_bytes for row in expired.rows} == {48}
    live = sessions.browse_keys("7003", key_type="session", expired=False, page=99, per_page=5)
    assert live.total == 20 and live.page == 4
    assert all("***" in row.key_id_shown for row in live.rows)


def test_browse_keys__numeric_ids_in_numeric_order():
    """Pre-key ids read 1, 2, ..., 12 (not 1, 10, 11, 12, 2), numbered ids before named ones."""
    from observability.models import WhatsAppKey

    now = timezone.now()
    ids = [str(n) for n in range(1, 13)] + ["007", "10.1", "abc", "2x"]
    WhatsAppKey.objects.bulk_create(
        WhatsAppKey(company_id="7004", key_type="pre-key", key_id=key_id, value={}, updated_at=now)
        for key_id in ids
    )
    page = sessions.browse_keys("7004", per_page=100)
    assert [row.key_id for row in page.rows] == (
        ["1", "2", "2x", "3", "4", "5", "6", "007", "7", "8", "9", "10", "10.1", "11", "12", "abc"]
    )


def test_store_health__one_failing_session_fails_the_store_with_an_action():
    """A single failing session makes the store FAIL, naming it and what to do, worst first."""
    healthy("8001")
    factories.make_auth("8002", paired=False)
    store = sessions.store_health()
    assert store.status is Status.FAIL
    first = store.findings[0]
    assert (first.cause, first.status) == ("failing_sessions", Status.FAIL)
    assert "1 of 2 session(s) failing (worst: 8002)" in first.message
    assert store.reasons[0] == f"{first.message}: {first.action}"


def test_session_detail__chart_days_follow_the_zone_across_a_clock_change(settings):
    """Writes and expiries fall on their local calendar day on both sides of a DST change."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    settings.TIME_ZONE = "America/New_York"  # clocks went forward at 02:00 on 2026-03-08
    zone = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 9, 12, 0, tzinfo=zone)
    factories.make_auth("7005", written_at=now)
    for hour, count in ((0, 1), (23, 2)):  # 2026-03-08 00:30 (UTC-5) and 23:30 (UTC-4)
        at = datetime(2026, 3, 8, hour, 30, tzinfo=zone)
        factories.make_keys("7005", "sender-key", count, written_at=at, seed=hour, expires_at=None)
    factories.make_keys(
        "7005",
        "tctoken",
        4,
        written_at=datetime(2026, 3, 7, 23, 30, tzinfo=zone),
        expires_at=datetime(2026, 3, 10, 23, 30, tzinfo=zone),
    )
    detail = sessions.session_detail("7005", now=now)
    writes = {day.day.isoformat(): day.count for day in detail.writes_per_day if day.count}
    assert writes == {"2026-03-07": 4, "2026-03-08": 3}
    assert detail.writes_per_day[-1].day.isoformat() == "2026-03-09"
    expiries = {day.day.isoformat(): day.count for day in detail.expiries_per_day if day.count}
    assert expiries == {"2026-03-10": 4}


def test_session_detail__nothing_stored_is_not_found():
    """A session id with neither keys nor an auth row raises SessionNotFound."""
    factories.make_keys("7006", "session", 1)
    with pytest.raises(SessionNotFound):
        sessions.session_detail("7007")
    assert sessions.session_detail("7006").has_auth is False


def test_summarize__any_order_gives_the_worst_first_and_fills_them_with_ok_ones(monkeypatch):
    """The store's worst sessions and its failing examples do not depend on the input order."""
    monkeypatch.setattr(sessions, "WORST_COUNT", 4)
    for sid in ("6001", "6002", "6003", "6004"):
        healthy(sid)
    factories.make_auth("6005", paired=False)  # FAIL
    factories.make_auth("6006", registered=False, paired=False)  # FAIL
    every = sessions.list_sessions()
    ranked = sorted(every, key=sessions._worst_first_key)
    for order in (every, list(reversed(every)), ranked):
        store = sessions.summarize(order)
        assert store.worst == tuple(ranked[:4])
        assert [h.status for h in store.worst] == [Status.FAIL, Status.FAIL, Status.OK, Status.OK]
        assert store == sessions.summarize(ranked)
    failing = next(f for f in store.findings if f.cause == "failing_sessions")
    assert "2 of 6 session(s) failing" in failing.message
