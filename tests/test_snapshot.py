"""Tests for observability.snapshot: refresh, incremental = full, history rows, retention, lock."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from observability import rules, sessions, snapshot
from observability.exceptions import BotDatabaseUnavailable, SnapshotMissing
from observability.models import (
    CleanupRun,
    Company,
    SessionChange,
    SessionState,
    Snapshot,
    WhatsAppAuth,
    WhatsAppKey,
)
from observability.sessions import Status
from observability.snapshot import codec
from observability.snapshot.refresh import LOCK_KEY
from tests import factories
from tests.health_support import connection_params

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

#: The refresh module (``observability.snapshot.refresh`` the attribute is the function).
refresh_module = sys.modules["observability.snapshot.refresh"]


def healthy(session_id: str, *, written_at=None, **auth) -> None:
    """A session the bot uses: auth row, enough session keys, some pre-keys."""
    factories.make_auth(session_id, written_at=written_at, **auth)
    factories.make_keys(session_id, "session", 20, written_at=written_at)
    factories.make_keys(session_id, "pre-key", 5, written_at=written_at)


def stored() -> dict[str, tuple]:
    """Every stored state as comparable values (what an incremental and a full must agree on)."""
    return {
        state.session_id: (
            state.status,
            tuple(state.reasons),
            state.total_keys,
            state.phone_digits,
            state.is_duplicate,
            state.facts,
            state.bot_flagged_disconnected,
            tuple(state.login_marks),
        )
        for state in SessionState.objects.all()
    }


def test_refresh__full_stores_every_session_keys_only_included():
    """A first refresh is full and stores every session, keys-only ones too, as judged."""
    factories.make_company(962302, title="Лотос")
    healthy("962302", phone="79001234567")
    factories.make_keys("company_5", "session", 3)  # keys without an auth row
    result = snapshot.refresh()
    assert (result.outcome, result.kind, result.sessions_total) == ("succeeded", "full", 2)
    state = SessionState.objects.get(session_id="962302")
    assert (state.status, state.salon_title, state.phone_masked) == ("OK", "Лотос", "7900***4567")
    assert state.phone_digits == "79001234567"
    assert "79001234567" not in str(state.facts)
    orphan = SessionState.objects.get(session_id="company_5")
    assert not orphan.has_auth and orphan.status == "WARN"
    assert set(SessionChange.objects.values_list("session_id", "kind")) == {
        ("962302", "appeared"),
        ("company_5", "appeared"),
    }


def test_state_health__decodes_to_the_fresh_health():
    """A stored state reads back as exactly the SessionHealth the refresh computed."""
    now = timezone.now()
    healthy("1001", written_at=now - timedelta(hours=30))
    factories.make_keys("1001", "sender-key", 4, expires_at=now - timedelta(days=1))
    healthy("company_1001")
    snapshot.refresh(now=now)
    for fresh in sessions.list_sessions(now=now):
        assert snapshot.session_health(fresh.session_id) == fresh
        assert snapshot.session_health(fresh.session_id).phone_digits == fresh.phone_digits


def test_store_health__read_from_the_snapshot_equals_the_live_one():
    """The store's verdict read back from the snapshot equals the one computed live."""
    now = timezone.now()
    healthy("1001")
    factories.make_auth("1002", registered=False)
    snapshot.refresh(now=now)
    assert snapshot.store_health() == sessions.store_health(now=now)


def test_store_health__before_any_snapshot_is_snapshot_missing():
    """Nothing to read yet: a clear SnapshotMissing, not an empty store."""
    with pytest.raises(SnapshotMissing):
        snapshot.store_health()
    assert snapshot.freshness().status is Status.FAIL


def test_refresh__incremental_equals_full_after_writes_rewrites_expiry_and_cleanup():
    """After writes, rewrites, expiries, a cleanup and silence, incremental agrees with full."""
    t0 = timezone.now()
    t1 = t0 + timedelta(minutes=5)
    written = t0 - timedelta(hours=2)
    for sid in ("2001", "2002", "2003", "2004", "2005", "2006"):
        healthy(sid, written_at=written, phone=f"7900000{sid}")
    # A session about to cross the 24 h silence threshold between the two snapshots.
    healthy("2007", written_at=t0 + timedelta(minutes=2) - timedelta(hours=24), phone="790002007")
    # Keys that expire between the two snapshots (written a week before).
    factories.make_keys(
        "2005", "sender-key", 30, written_at=t0 + timedelta(minutes=3) - timedelta(days=7)
    )
    for n in range(40):  # untouched sessions an incremental must not recompute
        healthy(f"company_{3000 + n}", written_at=written, phone=f"7911000{3000 + n}")
    snapshot.refresh(full=True, now=t0)

    during = t0 + timedelta(minutes=2)
    factories.make_keys("2001", "session", 10, written_at=during, seed=2)  # 7-day type
    factories.make_keys("2002", "device-list", 4, written_at=during)  # 14-day type
    factories.make_auth("2009", written_at=during, phone="79000002009")  # a new session
    WhatsAppKey.objects.filter(company_id="2003", key_type="pre-key").update(  # rewrites
        updated_at=during, expires_at=during + timedelta(days=7)
    )
    WhatsAppAuth.objects.filter(company_id="2004").update(creds={"me": {"id": "1@s"}})
    # A cleanup deleted keys of 2006 and recorded it.
    WhatsAppKey.objects.filter(company_id="2006", key_type="session").delete()
    CleanupRun.objects.create(
        operation="expired_keys",
        started_by="test",
        dry_run=False,
        started_at=during,
        finished_at=during,
        rows_deleted={"2006": {"session": 20}},
        outcome="succeeded",
    )

    result = snapshot.refresh(full=False, now=t1)
    assert result.kind == "incremental"
    assert result.sessions_refreshed < 20  # the 40 untouched sessions were not recomputed
    incremental = stored()
    snapshot.refresh(full=True, now=t1)
    assert stored() == incremental
    assert incremental["2007"][0] == "WARN"  # crossed the silence threshold with no write
    assert incremental["2006"][2] == 5
    assert "2009" in incremental


def test_refresh__a_delete_the_bot_made_is_corrected_by_the_full_recount():
    """Rows the bot deleted are invisible incrementally; the hourly full recount fixes them."""
    t0 = timezone.now()
    healthy("2101", written_at=t0 - timedelta(hours=1))
    snapshot.refresh(full=True, now=t0)
    WhatsAppKey.objects.filter(company_id="2101", key_type="session").delete()
    snapshot.refresh(full=False, now=t0 + timedelta(minutes=1))
    assert SessionState.objects.get(session_id="2101").total_keys == 25
    snapshot.refresh(now=t0 + timedelta(hours=1, minutes=1))  # the hourly full recount
    state = SessionState.objects.get(session_id="2101")
    assert state.total_keys == 5
    assert SessionChange.objects.filter(session_id="2101", kind="session_rows_lost").exists()


def test_refresh__incremental_equals_full_after_deletes_with_writes_and_expired_rewrites():
    """A pre-key used (deleted beside a session write), expired keys rewritten: still equal."""
    t0 = timezone.now()
    t1 = t0 + timedelta(minutes=1)
    during = t0 + timedelta(seconds=30)
    for sid in ("2101", "2102", "2103"):
        healthy(sid, written_at=t0 - timedelta(hours=1))
    # Written nine days ago: past expires_at, the kind Baileys rewrites when the contact
    # writes again.
    factories.make_keys("2102", "session", 6, written_at=t0 - timedelta(days=9), seed=3)
    snapshot.refresh(full=True, now=t0)
    assert SessionState.objects.get(session_id="2102").facts["expired_keys"] == 6

    # A new contact used pre-key 5 of 2101: Baileys deletes it (removePreKey) and stores the
    # contact's session in the same exchange.
    WhatsAppKey.objects.filter(company_id="2101", key_type="pre-key", key_id="5").delete()
    factories.make_keys("2101", "session", 1, written_at=during, seed=9)
    # The old contacts of 2102 wrote again: their expired rows are rewritten.
    WhatsAppKey.objects.filter(company_id="2102", updated_at__lt=t0 - timedelta(days=8)).update(
        updated_at=during, expires_at=during + timedelta(days=7)
    )
    # 2103 gets new keys of a 14-day type.
    factories.make_keys("2103", "device-list", 3, written_at=during)

    result = snapshot.refresh(full=False, now=t1)
    assert result.sessions_refreshed == 3
    incremental = stored()
    snapshot.refresh(full=True, now=t1)
    assert stored() == incremental
    facts = {sid: SessionState.objects.get(session_id=sid).facts for sid in ("2101", "2102")}
    assert facts["2101"]["facts"]["max_pre_key_id"] == 4
    assert facts["2101"]["key_counts"] == {"pre-key": 4, "session": 21}
    assert facts["2102"]["expired_keys"] == 0


def test_refresh__incremental_reads_only_what_was_written_since_the_previous_one(monkeypatch):
    """Refreshes a minute apart: a write seen once is not recomputed by the next one."""
    monkeypatch.setattr(refresh_module, "CLOCK_MARGIN", timedelta(0))  # no sleep in a test
    t0 = timezone.now()
    healthy("2151", written_at=t0 - timedelta(hours=1))
    snapshot.refresh(full=True, now=t0)
    factories.make_keys("2151", "session", 2, written_at=t0 + timedelta(seconds=30), seed=4)
    # Judged at moments of the test's choosing, so an unrelated open transaction elsewhere on
    # the server (which moves the real clock's high-water mark back) cannot widen the window.
    first = snapshot.refresh(full=False, now=t0 + timedelta(minutes=2))
    assert first.sessions_refreshed == 1
    second = snapshot.refresh(full=False, now=t0 + timedelta(minutes=3))
    assert second.sessions_refreshed == 0


def test_refresh__incremental_fails_at_once_when_the_bot_flag_turns_false(monkeypatch):
    """A bare UPDATE companies SET whatsapp_connected = false: FAIL at the next incremental."""
    monkeypatch.setattr(refresh_module, "CLOCK_MARGIN", timedelta(0))  # no sleep in a test
    hour_ago = timezone.now() - timedelta(hours=1)
    factories.make_company(2155, created_at=hour_ago, updated_at=hour_ago)
    healthy("company_2155", written_at=hour_ago)
    snapshot.refresh(full=True)
    assert SessionState.objects.get(pk="company_2155").status == "OK"
    with connections["bot"].cursor() as cursor:  # no trigger stamps companies.updated_at
        cursor.execute("UPDATE companies SET whatsapp_connected = false WHERE company_id = 2155")
    result = snapshot.refresh(full=False)
    assert result.kind == "incremental" and result.sessions_refreshed == 1
    state = SessionState.objects.get(pk="company_2155")
    assert state.status == "FAIL" and "companies.whatsapp_connected" in state.reasons[0]
    # Once stored, the flag is not recomputed at every refresh; turning true again is seen.
    assert snapshot.refresh(full=False).sessions_refreshed == 0
    with connections["bot"].cursor() as cursor:
        cursor.execute("UPDATE companies SET whatsapp_connected = true WHERE company_id = 2155")
    assert snapshot.refresh(full=False).sessions_refreshed == 1
    assert SessionState.objects.get(pk="company_2155").status == "OK"


def test_refresh__a_bot_transaction_open_during_a_refresh_is_read_by_the_next(monkeypatch):
    """Rows stamped before a refresh but committed after it are found by the next one."""
    monkeypatch.setattr(refresh_module, "CLOCK_MARGIN", timedelta(0))  # the mark alone
    t0 = timezone.now()
    healthy("2161", written_at=t0 - timedelta(hours=1))
    params = connection_params("bot", "bot-writer")
    params["autocommit"] = False
    with psycopg.connect(**params) as writer:
        writer.execute("SELECT txid_current()")  # a write in flight: it holds a transaction id
        (opened,) = writer.execute(
            "SELECT xact_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
        time.sleep(0.2)
        snapshot.refresh(full=True, now=timezone.now())
        writer.rollback()
    mark = Snapshot.objects.get().keys_seen_until
    assert mark <= opened
    # What that transaction wrote, stamped when it ran, becomes visible only now.
    factories.make_keys(
        "2161", "session", 3, written_at=opened + timedelta(milliseconds=100), seed=7
    )
    snapshot.refresh(full=False, now=timezone.now())
    assert SessionState.objects.get(session_id="2161").total_keys == 28


def test_refresh__creds_copied_to_another_session_fail_both_incrementally():
    """A salon's creds copied under a second id: both FAIL at the next incremental, as full."""
    t0 = timezone.now()
    t1 = t0 + timedelta(minutes=1)
    for sid in ("2401", "2402", "2403"):
        healthy(sid, written_at=t0 - timedelta(hours=1), phone=f"7900000{sid}")
    snapshot.refresh(full=True, now=t0)
    # Only 2402's row is written: 2401, whose login it now holds, has no write at all.
    copied = WhatsAppAuth.objects.get(company_id="2401").creds
    WhatsAppAuth.objects.filter(company_id="2402").update(
        creds=copied, updated_at=t0 + timedelta(seconds=30)
    )
    with CaptureQueriesContext(connections["bot"]) as bot_reads:
        result = snapshot.refresh(full=False, now=t1)
    assert result.sessions_refreshed == 2  # the copy and the session it copied, not 2403
    # No read of every creds row: the other sessions' logins are compared as stored.
    auth_reads = [q["sql"] for q in bot_reads.captured_queries if "whatsapp_auth a" in q["sql"]]
    assert auth_reads and all("ANY(" in sql for sql in auth_reads)
    incremental = stored()
    for sid in ("2401", "2402"):
        assert incremental[sid][0] == "FAIL" and "one_login_twice" in incremental[sid][5]["rules"]
    assert incremental["2403"][0] == "OK"
    snapshot.refresh(full=True, now=t1)
    assert stored() == incremental
    # Paired again under its own login: both recover, 2401 through its stored login marks.
    WhatsAppAuth.objects.filter(company_id="2402").update(
        creds=factories.make_auth("2499", seed=99, phone="79000002402").creds,
        updated_at=t1 + timedelta(seconds=30),
    )
    WhatsAppAuth.objects.filter(company_id="2499").delete()
    snapshot.refresh(full=False, now=t1 + timedelta(minutes=1))
    recovered = {sid: SessionState.objects.get(pk=sid) for sid in ("2401", "2402")}
    assert recovered["2401"].status == "OK"
    assert recovered["2402"].status != "FAIL"  # a WARN for the new pairing, no more
    assert all("one_login_twice" not in state.facts["rules"] for state in recovered.values())
    incremental = stored()
    snapshot.refresh(full=True, now=t1 + timedelta(minutes=1))
    assert stored() == incremental


def stored_rows() -> dict[str, dict]:
    """Every stored state's row exactly as PostgreSQL holds it (types, NULLs, empty arrays)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT session_id, to_jsonb(s) FROM observability_sessionstate AS s")
        return {session_id: json.loads(row) for session_id, row in cursor.fetchall()}


def test_refresh__incremental_stores_every_column_as_a_first_full_recount_inserts_it(
    monkeypatch,
):
    """States rewritten by an incremental hold, column for column, what a first full inserts."""
    monkeypatch.setattr(refresh_module, "UPDATE_BATCH", 2)  # three states: two statements
    t0 = timezone.now()
    t1 = t0 + timedelta(minutes=1)
    during = t0 + timedelta(seconds=30)
    factories.make_company(
        2501, title="Salon", updated_at=(t0 - timedelta(days=1)).replace(tzinfo=None)
    )
    healthy("2501", written_at=t0 - timedelta(hours=1))
    factories.make_auth("2502", written_at=t0 - timedelta(hours=1))  # no keys: NULL newest write
    factories.make_keys("company_2503", "session", 4, written_at=t0 - timedelta(hours=1))
    healthy("2504", written_at=t0 - timedelta(hours=1))  # untouched
    snapshot.refresh(full=True, now=t0)
    before = stored_rows()

    Company.objects.filter(company_id=2501).update(
        title="Лотос", updated_at=during.replace(tzinfo=None)
    )
    factories.make_keys("2501", "session", 3, written_at=during, seed=3)
    WhatsAppAuth.objects.filter(company_id="2502").update(  # paired again: another login
        creds=factories.make_auth("2599", seed=99, phone="79000002502").creds, updated_at=during
    )
    WhatsAppAuth.objects.filter(company_id="2599").delete()
    factories.make_keys("company_2503", "pre-key", 2, written_at=during)  # keys only: no marks
    assert snapshot.refresh(full=False, now=t1).kind == "incremental"
    incremental = stored_rows()
    updated = {sid for sid, row in incremental.items() if row != before[sid]}
    assert updated == {"2501", "2502", "company_2503"}
    assert incremental["2501"]["salon_title"] == "Лотос"
    assert incremental["2502"]["newest_key_write"] is None
    assert incremental["2502"]["login_marks"] not in ([], None, before["2502"]["login_marks"])
    assert incremental["company_2503"]["login_marks"] == []  # not NULL: "stored before marks"

    SessionState.objects.all().delete()  # the full recount inserts every state afresh
    snapshot.refresh(full=True, now=t1)
    full = stored_rows()
    for sid in updated:  # the same statuses: only when first seen and since when differ
        for column in ("first_seen", "status_since"):
            assert datetime.fromisoformat(full[sid].pop(column)) == t1
            assert incremental[sid].pop(column) == before[sid][column]
        assert incremental[sid] == full[sid]  # facts_changed_at included: t1 on both sides


def test_refresh__judges_each_session_once_with_its_history(monkeypatch):
    """A refresh judges each session it reads once, history included; a live list judges too."""
    real = rules.judge
    histories = []
    monkeypatch.setattr(
        rules,
        "judge",
        lambda facts, now, history=None: histories.append(history) or real(facts, now, history),
    )
    t0 = timezone.now()
    healthy("2601", written_at=t0 - timedelta(hours=1))
    healthy("2602", written_at=t0 - timedelta(hours=1))
    factories.make_auth("2603", written_at=t0 - timedelta(hours=1), paired=False)
    snapshot.refresh(full=True, now=t0)
    assert len(histories) == 3 and None not in histories
    histories.clear()
    factories.make_keys("2601", "session", 2, written_at=t0 + timedelta(seconds=30), seed=4)
    t1 = t0 + timedelta(minutes=1)
    result = snapshot.refresh(full=False, now=t1)
    assert len(histories) == result.sessions_refreshed and None not in histories
    histories.clear()
    listed = {health.session_id: health.status.value for health in sessions.list_sessions(now=t1)}
    assert histories == [None] * 3  # the fact rules alone, as pages judge live
    assert listed["2603"] == "FAIL"  # the verdict is stored, not an unjudged placeholder
    assert listed == dict(SessionState.objects.values_list("session_id", "status"))


def test_refresh__states_stored_before_the_login_marks_make_the_next_one_full():
    """States without login marks (stored by an older version): the next refresh is full."""
    t0 = timezone.now()
    healthy("2411", written_at=t0 - timedelta(hours=1))
    snapshot.refresh(full=True, now=t0)
    assert SessionState.objects.get(pk="2411").login_marks  # the two key hashes
    SessionState.objects.update(login_marks=None)
    assert snapshot.refresh(now=t0 + timedelta(minutes=1)).kind == "full"
    assert SessionState.objects.get(pk="2411").login_marks
    assert snapshot.refresh(now=t0 + timedelta(minutes=2)).kind == "incremental"
    SessionState.objects.update(login_marks=None)  # even when asked for an incremental
    assert snapshot.refresh(full=False, now=t0 + timedelta(minutes=3)).kind == "full"


def test_refresh__after_a_worker_restart_the_summary_still_counts_every_session(monkeypatch):
    """A new process decodes the unchanged states it has not seen: the summary stays whole."""
    t0 = timezone.now()
    for sid in ("2171", "2172", "2173"):
        healthy(sid, written_at=t0 - timedelta(hours=1))
    factories.make_auth("2174", registered=False, paired=False)  # a FAIL among them
    snapshot.refresh(full=True, now=t0)
    monkeypatch.setattr(refresh_module, "_DECODED", {})  # what a restarted worker knows
    factories.make_keys("2171", "session", 2, written_at=t0 + timedelta(seconds=30), seed=5)
    t1 = t0 + timedelta(minutes=1)
    assert snapshot.refresh(full=False, now=t1).sessions_refreshed < 4  # not all recomputed
    assert snapshot.store_health() == sessions.store_health(now=t1)


def test_refresh__decides_full_hourly(settings):
    """Without an explicit choice a refresh is incremental until the last full one is stale."""
    settings.OBSERVABILITY_SNAPSHOT_FULL_INTERVAL = timedelta(minutes=30)
    t0 = timezone.now()
    healthy("2201")
    assert snapshot.refresh(now=t0).kind == "full"
    assert snapshot.refresh(now=t0 + timedelta(minutes=10)).kind == "incremental"
    assert snapshot.refresh(now=t0 + timedelta(minutes=31)).kind == "full"


def test_refresh__records_status_and_fact_changes_not_unchanged_state():
    """A status change, a new phone and a pre-key top-up are rows; an unchanged refresh none."""
    t0 = timezone.now()
    healthy("2301", written_at=t0 - timedelta(minutes=10), phone="79001112233")
    snapshot.refresh(now=t0)
    snapshot.refresh(full=True, now=t0 + timedelta(minutes=1))
    assert SessionChange.objects.filter(session_id="2301").count() == 1  # appeared only

    t1 = t0 + timedelta(minutes=2)
    WhatsAppAuth.objects.filter(company_id="2301").delete()
    factories.make_auth("2301", phone="79005556677", next_pre_key_id=818, written_at=t1)
    WhatsAppKey.objects.bulk_create(
        WhatsAppKey(
            company_id="2301",
            key_type="pre-key",
            key_id=str(900 + n),
            value={"n": n},
            created_at=t1,
            updated_at=t1,
            expires_at=t1 + timedelta(days=7),
        )
        for n in range(5)
    )
    snapshot.refresh(now=t1 + timedelta(minutes=1))
    kinds = dict(SessionChange.objects.filter(session_id="2301").values_list("kind", "detail"))
    assert kinds["status"] == ""
    assert kinds["phone_changed"] == "7900***2233 → 7900***6677"
    assert kinds["prekeys_topped_up"].startswith("nextPreKeyId ")
    assert kinds["prekeys_topped_up"].endswith(" → 818")
    assert "creds_rewritten" in kinds
    status = SessionChange.objects.get(session_id="2301", kind="status")
    assert (status.old_status, status.new_status) == ("OK", "FAIL")
    assert status.reasons and "79005556677" not in str(status.reasons)
    state = SessionState.objects.get(session_id="2301")
    assert state.status_since == t1 + timedelta(minutes=1)


def test_refresh__a_session_that_disappears_is_recorded_as_gone():
    """A session whose rows are all gone loses its state and gets a 'gone' change."""
    t0 = timezone.now()
    healthy("2401")
    snapshot.refresh(now=t0)
    WhatsAppKey.objects.filter(company_id="2401").delete()
    WhatsAppAuth.objects.filter(company_id="2401").delete()
    snapshot.refresh(full=True, now=t0 + timedelta(minutes=1))
    assert not SessionState.objects.filter(session_id="2401").exists()
    gone = SessionChange.objects.get(session_id="2401", kind="gone")
    assert (gone.old_status, gone.new_status) == ("OK", "")


def test_prune__removes_old_changes_and_keeps_the_latest_state(settings):
    """Retention removes changes older than the setting and never the latest state."""
    settings.OBSERVABILITY_SNAPSHOT_HISTORY_RETENTION = timedelta(days=90)
    t0 = timezone.now() - timedelta(days=100)
    healthy("2501", written_at=t0)
    snapshot.refresh(now=t0)
    assert SessionChange.objects.filter(session_id="2501").exists()
    result = snapshot.refresh(full=True, now=t0 + timedelta(days=100))
    assert result.pruned == 1
    assert not SessionChange.objects.filter(at__lt=t0 + timedelta(days=10)).exists()
    state = SessionState.objects.get(session_id="2501")
    assert state.first_seen == t0 and state.status == "FAIL"
    assert Snapshot.objects.filter(taken_at=t0).count() == 0  # the refresh log is pruned too
    assert Snapshot.objects.get().store is not None


def test_refresh__only_the_newest_record_keeps_the_store_summary():
    """History is the changes: older refresh records drop their copy of the store summary."""
    t0 = timezone.now()
    healthy("2601")
    snapshot.refresh(now=t0)
    snapshot.refresh(now=t0 + timedelta(minutes=1))
    summaries = list(Snapshot.objects.order_by("taken_at").values_list("store", flat=True))
    assert summaries[0] is None and summaries[1]["total_sessions"] == 1


def test_refresh__skips_when_another_refresh_holds_the_lock():
    """A second refresh does not wait: it returns 'skipped' while the lock is held."""
    healthy("2701")
    params = connection_params("default", "snapshot-lock-holder")
    params["autocommit"] = False
    with psycopg.connect(**params) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        result = snapshot.refresh()
        holder.rollback()
    assert result.outcome == "skipped"
    assert not Snapshot.objects.exists()


def test_refresh__bot_down_is_recorded_and_the_last_snapshot_stays(bot_database_down):
    """A refresh that cannot read the bot records its failure; the last snapshot still reads."""
    t0 = timezone.now()
    Snapshot.objects.create(
        taken_at=t0 - timedelta(minutes=5),
        kind="full",
        outcome="succeeded",
        store=codec.encode(sessions.summarize([])),
    )
    with pytest.raises(BotDatabaseUnavailable):
        snapshot.refresh(now=t0)
    failed = Snapshot.objects.get(outcome="failed")
    assert "unavailable" in failed.error
    fresh = snapshot.freshness(now=t0)
    assert fresh.status is Status.WARN and fresh.failed_since == failed
    assert "· 5 minutes ago" in fresh.message and "failed" in fresh.message
    assert snapshot.store_health().total_sessions == 0


def test_take_snapshot__command_reports_and_fails_cleanly(bot_database_down, capsys):
    """The command fails with the bot's exit code and a message, never a traceback."""
    with pytest.raises(CommandError) as raised:
        call_command("take_snapshot", "--full")
    assert raised.value.returncode == 3
    assert "unavailable" in str(raised.value)


def test_take_snapshot__command_takes_one(capsys):
    """``take_snapshot --full`` takes a full snapshot and says how many sessions it stored."""
    healthy("2801")
    call_command("take_snapshot", "--full")
    out = capsys.readouterr().out
    assert "Full snapshot taken" in out and "1 stored" in out
    assert connections["default"].in_atomic_block  # the test's own transaction, untouched


# --- History: timeline, incidents, recovery, flapping ---------------------------------------


def _rewrite_keys(session_id: str, written_at) -> None:
    """Replace the session's creds and keys by the same ones written at ``written_at``."""
    WhatsAppKey.objects.filter(company_id=session_id).delete()
    WhatsAppAuth.objects.filter(company_id=session_id).delete()
    healthy(session_id, written_at=written_at, phone=f"7900{session_id}000")


def _fail(session_id: str) -> None:
    """The session's keys were last written three days ago (FAIL)."""
    _rewrite_keys(session_id, timezone.now() - timedelta(days=3))


def _recover(session_id: str) -> None:
    """The bot writes the session again."""
    _rewrite_keys(session_id, timezone.now())


def test_incidents__fail_then_recover_is_one_incident_with_its_duration():
    """A session failing at t1 and recovering at t2 gives one incident t1..t2, and the MTTR."""
    from observability.snapshot import history

    t0 = timezone.now()
    healthy("2901", phone="79002901000")
    healthy("2902", phone="79002902000")
    snapshot.refresh(full=True, now=t0)
    _fail("2901")
    t1 = t0 + timedelta(minutes=5)
    snapshot.refresh(full=True, now=t1)
    snapshot.refresh(full=True, now=t1 + timedelta(minutes=1))  # still failing: no new row
    _recover("2901")
    t2 = t0 + timedelta(minutes=50)
    snapshot.refresh(full=True, now=t2)

    (incident,) = history.incidents(since=t0 - timedelta(days=1), now=t2)
    assert (incident.session_id, incident.start, incident.end) == ("2901", t1, t2)
    assert incident.duration == timedelta(minutes=45) and incident.ended_by == "OK"
    assert history.median_time_to_recovery(now=t2) == timedelta(minutes=45)
    line = history.timeline("2901", days=7, now=t2 + timedelta(minutes=10))
    assert [s.status for s in line.segments] == ["", "OK", "FAIL", "OK"]
    assert line.segments[2].start == t1 and line.segments[2].end == t2
    assert abs(sum(s.share for s in line.segments) - 1) < 1e-9
    assert [c.kind for c in line.changes if c.kind != "creds_rewritten"] == [
        "status",
        "status",
        "appeared",
    ]


def test_incidents__an_ongoing_failure_counts_until_now():
    """A session still failing is an open incident from its status_since."""
    from observability.snapshot import history

    t0 = timezone.now()
    healthy("2903", written_at=t0 - timedelta(days=3))
    snapshot.refresh(now=t0)
    (incident,) = history.incidents(since=t0 - timedelta(days=30), now=t0 + timedelta(hours=2))
    assert incident.ongoing and incident.start == t0
    assert incident.duration == timedelta(hours=2)
    assert history.median_time_to_recovery(now=t0 + timedelta(hours=2)) is None
    assert history.failing_by_duration(
        (timedelta(hours=1), timedelta(hours=6)), now=t0 + timedelta(hours=2)
    ) == [(timedelta(hours=1), 0), (timedelta(hours=6), 1), (None, 0)]


def test_flapping__a_session_changing_status_often_is_named(settings):
    """Three status changes within the window make a session flap; a day later it does not."""
    from observability.snapshot import history

    settings.OBSERVABILITY_FLAPPING_MIN_CHANGES = 3
    t0 = timezone.now()
    healthy("2904", phone="79002904000")
    snapshot.refresh(full=True, now=t0)
    for step in range(1, 5):
        (_fail if step % 2 else _recover)("2904")
        snapshot.refresh(full=True, now=t0 + timedelta(minutes=step))
    # The fourth rewrite within minutes is a reconnect loop: it stays FAIL (3 changes).
    assert history.flapping(now=t0 + timedelta(minutes=5)) == [("2904", 3)]
    assert history.flapping(now=t0 + timedelta(days=2)) == []


def test_refresh__creds_rewrites_are_one_row_per_session_and_day():
    """Creds rewritten at two refreshes of one day make one row counting two rewrites."""
    t0 = timezone.now().replace(hour=1, minute=0)
    healthy("3001", written_at=t0 - timedelta(hours=1))
    snapshot.refresh(now=t0)
    for step in (1, 2):
        WhatsAppAuth.objects.filter(company_id="3001").delete()
        factories.make_auth("3001", written_at=t0 + timedelta(minutes=step))
        snapshot.refresh(full=True, now=t0 + timedelta(minutes=step, seconds=30))
    (row,) = SessionChange.objects.filter(session_id="3001", kind="creds_rewritten")
    assert row.detail == f"2 rewrites, last at {t0 + timedelta(minutes=2):%H:%M} UTC"
    assert row.reasons is None


def test_overview__shows_the_median_time_to_recovery_and_the_flapping_session(
    admin_client, settings
):
    """Two incidents of 20 and 40 min: the overview says 30 min, and names the flapping one."""
    from django.urls import reverse

    settings.OBSERVABILITY_FLAPPING_MIN_CHANGES = 4
    t0 = timezone.now() - timedelta(hours=3)
    healthy("2905", written_at=t0, phone="79002905000")
    healthy("2906", written_at=t0, phone="79002906000")  # steady: never named
    snapshot.refresh(full=True, now=t0)
    for minutes, written in ((10, -3 * 24 * 60), (30, 30), (60, -3 * 24 * 60), (100, 100)):
        moment = t0 + timedelta(minutes=minutes)
        _rewrite_keys("2905", t0 + timedelta(minutes=written))
        snapshot.refresh(full=True, now=moment)

    html = admin_client.get(reverse("admin:observability_sessionstate_overview")).content.decode()
    mttr = html.split('id="mttr"', 1)[1].split("</div></div>", 1)[0]
    assert '<div class="obs-big">30 min</div>' in mttr
    flapping = html.split('id="flapping"', 1)[1].split("</div>", 1)[0]
    assert ">2905</a> (4 status changes)" in flapping and "2906" not in flapping
    incidents = html.split('id="incidents"', 1)[1].split('id="flapping"', 1)[0]
    assert incidents.count(">2905</a>") == 2 and "20 min" in incidents and "40 min" in incidents
