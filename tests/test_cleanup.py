"""The cleanup service deletes exactly what it reports, in locked, recorded, safe batches."""

from __future__ import annotations

import json
import os
import random
import stat
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connections
from django.utils import timezone

from observability import cleanup, key_types
from observability.cleanup import LOCK_KEY
from observability.exceptions import (
    BadInput,
    BotDatabaseUnavailable,
    CleanupAlreadyRunning,
    MalformedSessionId,
    QueryTimedOut,
    SessionNotFound,
)
from observability.models import CleanupRun, WhatsAppAuth, WhatsAppKey
from observability_demo import fakes
from tests import factories
from tests.cleanup_support import duplicate_salon

bot_tables = pytest.mark.django_db(databases=["default", "bot"])
bot_tables_committed = pytest.mark.django_db(databases=["default", "bot"], transaction=True)

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


def _aged(session_id: str, key_type: str, count: int, *, days_ago: float = 100, seed=1):
    """Keys last written ``days_ago`` days ago, with the bot's ``expires_at`` (7 or 14 days on)."""
    written = timezone.now() - timedelta(days=days_ago)
    return factories.make_keys(session_id, key_type, count, written_at=written, seed=seed)


def _keys(session_id: str | None = None) -> dict[tuple[str, str], int]:
    """Key counts by (session, key type), as a user of the table would see them."""
    queryset = WhatsAppKey.objects.all()
    if session_id:
        queryset = queryset.filter(company_id=session_id)
    counts: dict[tuple[str, str], int] = {}
    for key in queryset.only("company_id", "key_type"):
        counts[(key.company_id, key.key_type)] = counts.get((key.company_id, key.key_type), 0) + 1
    return counts


def _wait_until_no_advisory_lock(timeout: float = 5) -> None:
    """Wait until the server holds no advisory lock (a closed backend releases its own late)."""
    deadline = time.monotonic() + timeout
    with _raw_bot_connection() as watcher:
        while watcher.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'").fetchone():
            assert time.monotonic() < deadline, "a closed connection's advisory lock outlived it"
            time.sleep(0.02)


def _raw_bot_connection() -> psycopg.Connection:
    """A second, real connection to the test bot database (autocommit)."""
    settings_dict = connections["bot"].settings_dict
    return psycopg.connect(
        dbname=settings_dict["NAME"],
        host=settings_dict["HOST"],
        user=settings_dict["USER"],
        autocommit=True,
    )


@pytest.fixture
def truncate_bot_tables():
    """Committed rows of the unmanaged bot tables are not flushed by Django: remove them."""
    yield
    with _raw_bot_connection() as conn:
        conn.execute("TRUNCATE whatsapp_keys, whatsapp_auth")


class Hook:
    """A progress receiver that calls ``action`` after the ``after``-th committed batch."""

    def __init__(self, after: int, action) -> None:
        self.after, self.action, self.batches, self.total = after, action, 0, None

    def start(self, total: int) -> None:
        self.total = total

    def advance(self, rows: int) -> None:
        self.batches += 1
        if self.batches == self.after:
            self.action()

    def close(self) -> None:
        pass


# --- A healthy QR-paired v7 session, as Baileys writes it ----------------------------------

#: What age never deletes in a Baileys session (observability/cleanup/policy.py).
NEVER_BY_AGE = (
    "pre-key",
    "app-state-sync-key",
    "app-state-sync-version",
    "lid-mapping",
    "identity-key",
)


def _write(session_id, key_type, key_id, written, rng) -> WhatsAppKey:
    return WhatsAppKey(
        company_id=session_id,
        key_type=key_type,
        key_id=key_id,
        value=fakes.key_value(rng, key_type),
        created_at=written,
        updated_at=written,
        expires_at=key_types.bot_expires_at(key_type, written),
    )


@bot_tables
@pytest.mark.parametrize("years_later", [0, 0.25, 1, 5])
def test_cleanup_expired_keys__healthy_qr_paired_v7_session_keeps_every_prekey_and_app_state_key(
    years_later,
):
    """Three weeks after pairing, and years later: no pre-key or app-state key ever goes."""
    life = fakes.Lifecycle(tctokens=10)  # v7, QR-paired 21 days ago, 812 pre-keys uploaded
    factories.make_session("company_962302", life=life)
    creds = WhatsAppAuth.objects.get(company_id="company_962302").creds
    assert creds["registered"] is False
    before = _keys()
    expired = WhatsAppKey.objects.filter(expires_at__lt=timezone.now())
    assert expired.filter(key_type="pre-key").count() == life.key_counts()["pre-key"] > 700
    assert expired.filter(key_type="app-state-sync-key").count() == life.app_state_keys

    report = cleanup.cleanup_expired_keys(
        apply=True, now=timezone.now() + timedelta(days=365 * years_later)
    )

    after = _keys()
    for key_type in NEVER_BY_AGE:
        assert after[("company_962302", key_type)] == before[("company_962302", key_type)]
    assert WhatsAppKey.objects.filter(
        key_type="app-state-sync-key", key_id=creds["myAppStateKeyId"]
    ).exists()
    deleted_types = {t for by_type in report.rows_deleted.values() for t in by_type}
    assert not deleted_types & set(NEVER_BY_AGE)
    if years_later == 0:  # three weeks in, every contact record is within its retention
        assert report.total_deleted == 0 and after == before
        assert report.rows_kept == {"company_962302": life.key_counts()}
    else:  # months on, contacts unheard of since go; what Baileys needs stays
        contact_types = ("session", "sender-key", "sender-key-memory", "device-list", "tctoken")
        assert report.rows_deleted == {
            "company_962302": {t: life.key_counts()[t] for t in contact_types}
        }


@bot_tables
def test_cleanup_expired_keys__contact_records_go_after_their_retention_and_only_then():
    """A session unwritten 91 days goes, one unwritten 89 days stays; tctoken after 60 days."""
    _aged("962302", "session", 3, days_ago=91, seed=1)
    _aged("962302", "session", 2, days_ago=89, seed=2)
    _aged("962302", "sender-key", 2, days_ago=91)
    _aged("962302", "sender-key-memory", 2, days_ago=91)
    _aged("962302", "device-list", 2, days_ago=91)
    _aged("962302", "tctoken", 1, days_ago=61, seed=1)
    _aged("962302", "tctoken", 1, days_ago=59, seed=2)
    _aged("962302", "lid-mapping", 2, days_ago=400)
    _aged("962302", "identity-key", 2, days_ago=400)  # v7 type the bot's list does not name
    _aged("962302", "some-future-type", 1, days_ago=400)
    factories.make_keys("962302", "session", 1, seed=3, expires_at=None)  # cannot be dated

    report = cleanup.cleanup_expired_keys(apply=True)

    assert report.rows_deleted == {
        "962302": {
            "session": 3,
            "sender-key": 2,
            "sender-key-memory": 2,
            "device-list": 2,
            "tctoken": 1,
        }
    }
    assert report.rows_kept == {
        "962302": {
            "session": 3,
            "tctoken": 1,
            "lid-mapping": 2,
            "identity-key": 2,
            "some-future-type": 1,
        }
    }
    assert _keys() == {
        ("962302", "session"): 3,
        ("962302", "tctoken"): 1,
        ("962302", "lid-mapping"): 2,
        ("962302", "identity-key"): 2,
        ("962302", "some-future-type"): 1,
    }


@bot_tables
def test_cleanup_expired_keys__dry_run_and_record_show_what_is_kept_and_why():
    """The dry run counts kept rows per session and type with a reason; the record too."""
    life = fakes.Lifecycle(paired_days_ago=120)
    factories.make_session("company_962302", life=life)
    _aged("company_555", "session", 4, days_ago=200)
    before = _keys()

    dry = cleanup.cleanup_expired_keys()
    assert _keys() == before
    counts = life.key_counts()
    for key_type in NEVER_BY_AGE:
        assert dry.rows_kept["company_962302"][key_type] == counts[key_type]
    assert "company_555" not in dry.rows_kept
    assert dry.rows_seen["company_555"] == {"session": 4}
    assert "removePreKey" in dry.kept_reasons["pre-key"]
    assert "never deleted for its age" in dry.kept_reasons["pre-key"]
    assert "myAppStateKeyId" in dry.kept_reasons["app-state-sync-key"]
    assert "last 90 days" in dry.kept_reasons["session"]

    record = CleanupRun.objects.get(pk=dry.run_id)
    assert record.rows_kept == dry.rows_kept and record.kept_reasons == dry.kept_reasons
    assert (
        record.total_kept
        == dry.total_kept
        == sum(n for by_type in dry.rows_kept.values() for n in by_type.values())
    )
    retention = {rule["key_type"]: rule for rule in record.parameters["retention"]}
    assert retention["pre-key"]["deletable_by_age"] is False
    assert retention["session"]["retention_days"] == 90
    assert "src/Signal/libsignal.ts" in retention["pre-key"]["baileys_source"]

    applied = cleanup.cleanup_expired_keys(apply=True)
    assert applied.rows_deleted == dry.rows_seen
    assert CleanupRun.objects.get(pk=applied.run_id).rows_kept == dry.rows_kept


@bot_tables
def test_cleanup_expired_keys__retention_setting_changes_contact_types_only(settings):
    """Settings shorten or lengthen a contact type's retention; pre-keys cannot be given one."""
    _aged("962302", "session", 2, days_ago=40)
    _aged("962302", "identity-key", 2, days_ago=40)
    settings.OBSERVABILITY_CLEANUP_RETENTION = {"session": 30, "identity-key": timedelta(days=35)}
    report = cleanup.cleanup_expired_keys()
    assert report.rows_seen == {"962302": {"session": 2, "identity-key": 2}}
    retention = {rule["key_type"]: rule for rule in report.parameters["retention"]}
    assert retention["session"]["configured"] is True
    assert retention["session"]["retention_days"] == 30

    settings.OBSERVABILITY_CLEANUP_RETENTION = {"pre-key": 30}
    with pytest.raises(BadInput, match="never deleted for its age"):
        cleanup.cleanup_expired_keys(apply=True)
    settings.OBSERVABILITY_CLEANUP_RETENTION = {"session": -3}
    with pytest.raises(BadInput, match="at least one day"):
        cleanup.cleanup_expired_keys(apply=True)
    assert _keys() == {("962302", "session"): 2, ("962302", "identity-key"): 2}


# --- Expired keys: batches, records, selection -------------------------------------------


@bot_tables
def test_cleanup_expired_keys__dry_run_deletes_nothing_and_apply_deletes_what_it_reported():
    """A dry run changes nothing; the applied run then deletes exactly the counts reported."""
    factories.make_auth("962302")
    _aged("962302", "session", 12)
    _aged("962302", "sender-key", 5)
    _aged("company_111", "device-list", 3)
    factories.make_keys("962302", "session", 4, seed=2)  # written now: live
    before = _keys()

    dry = cleanup.cleanup_expired_keys()
    assert _keys() == before
    assert dry.dry_run and dry.total_deleted == 0
    assert dry.rows_seen == {
        "962302": {"session": 12, "sender-key": 5},
        "company_111": {"device-list": 3},
    }

    batches = []
    hook = Hook(after=0, action=None)
    hook.advance = batches.append
    applied = cleanup.cleanup_expired_keys(apply=True, batch_size=4, progress=hook)
    # An applied run over every session counts each session again.
    assert applied.rows_deleted == applied.rows_seen == dry.rows_seen
    assert applied.total_deleted == applied.total_seen == 20
    assert hook.total == 20
    # Each group of keys was written at one instant: taken a batch at a time.
    assert sum(batches) == 20 and max(batches) == 4
    assert applied.batches == len(batches)
    assert _keys() == {("962302", "session"): 4}
    assert applied.bytes_before > 0 and applied.bytes_after > 0
    assert applied.row_bytes_deleted > 0


@bot_tables
def test_cleanup_expired_keys__batches_walk_the_expiry_index_past_kept_rows():
    """Keys with distinct expiries go in batches of the batch size; old pre-keys between stay."""
    now, rng = timezone.now(), random.Random(1)
    WhatsAppKey.objects.bulk_create(
        _write("962302", key_type, str(minute), now - 100 * DAY - minute * MINUTE, rng)
        for minute in range(30)  # 30 sessions, each last written at its own instant...
        for key_type in ("session", "pre-key")  # ...and a pre-key uploaded then
    )
    batches = []
    hook = Hook(after=0, action=None)
    hook.advance = batches.append
    report = cleanup.cleanup_expired_keys(apply=True, batch_size=7, progress=hook)
    assert batches == [7, 7, 7, 7, 2]
    assert report.total_deleted == 30
    assert _keys() == {("962302", "pre-key"): 30}


@bot_tables
def test_cleanup_expired_keys__a_row_that_changes_mid_batch_is_kept_and_counts_stay_exact():
    """A row that does not go when its batch deletes (as if rewritten) is kept, counts exact."""
    now = timezone.now()
    for minute in range(10):
        factories.make_keys(
            "962302", "session", 1, seed=minute, written_at=now - 100 * DAY - minute * MINUTE
        )
    kept = WhatsAppKey.objects.order_by("expires_at")[5].key_id
    with connections["bot"].cursor() as cursor:  # rolled back with the test
        cursor.execute(
            "CREATE FUNCTION test_keep_row() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NULL; END $$; "
            "CREATE TRIGGER test_keep_row BEFORE DELETE ON whatsapp_keys FOR EACH ROW "
            f"WHEN (OLD.key_id = '{kept}') EXECUTE FUNCTION test_keep_row()"
        )
    report = cleanup.cleanup_expired_keys(apply=True, batch_size=4)
    assert report.total_deleted == 9
    assert report.rows_deleted == {"962302": {"session": 9}}
    assert list(WhatsAppKey.objects.values_list("key_id", flat=True)) == [kept]
    assert CleanupRun.objects.get().outcome == "succeeded"


@bot_tables
def test_cleanup_expired_keys__every_run_is_recorded_per_session():
    """Dry and applied runs over every session leave a CleanupRun counted per session and type."""
    _aged("962302", "session", 3)
    _aged("company_777", "sender-key", 2)
    dry = cleanup.cleanup_expired_keys(started_by="task")
    applied = cleanup.cleanup_expired_keys(apply=True)

    dry_run = CleanupRun.objects.get(pk=dry.run_id)
    assert dry_run.dry_run is True
    assert dry_run.outcome == "succeeded"
    assert dry_run.started_by == "task"
    assert dry_run.rows_seen == {"962302": {"session": 3}, "company_777": {"sender-key": 2}}
    assert dry_run.total_deleted == 0
    assert dry_run.finished_at >= dry_run.started_at

    applied_run = CleanupRun.objects.get(pk=applied.run_id)
    assert applied_run.dry_run is False
    assert applied_run.outcome == "succeeded"
    assert applied_run.parameters["session_ids"] is None  # every session
    assert (
        applied_run.rows_deleted
        == applied_run.rows_seen
        == {"962302": {"session": 3}, "company_777": {"sender-key": 2}}
    )
    assert applied_run.total_seen == applied_run.total_deleted == 5
    assert applied_run.bytes_before is not None and applied_run.bytes_after is not None
    assert applied_run.parameters["batch_size"] == 5000


@bot_tables
def test_cleanup_expired_keys__key_type_filter_touches_only_that_type():
    """--key-type session deletes old sessions only."""
    _aged("962302", "session", 4)
    _aged("962302", "sender-key", 4)
    report = cleanup.cleanup_expired_keys(apply=True, key_types=["session"])
    assert report.rows_deleted == {"962302": {"session": 4}}
    assert _keys() == {("962302", "sender-key"): 4}


@bot_tables
@pytest.mark.parametrize("typed", ["962302", "company_962302", " 962302 "])
def test_cleanup_expired_keys__salon_selects_both_spellings(typed):
    """A salon id in either spelling cleans both of its sessions and no other salon's."""
    _aged("962302", "session", 2)
    _aged("company_962302", "session", 3)
    _aged("company_555", "session", 4)
    report = cleanup.cleanup_expired_keys(apply=True, salons=[typed])
    assert report.rows_deleted == {"962302": {"session": 2}, "company_962302": {"session": 3}}
    assert _keys() == {("company_555", "session"): 4}


@bot_tables
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"salons": ["96x302"]}, MalformedSessionId),
        ({"salons": ["company_"]}, MalformedSessionId),
        ({"salons": ["777"]}, SessionNotFound),
        ({"batch_size": -5}, BadInput),
        ({"batch_size": 0}, BadInput),
        ({"key_types": ["prekey"]}, BadInput),
        ({"sessions": []}, BadInput),
    ],
)
def test_cleanup_expired_keys__bad_input_is_refused_before_anything_runs(kwargs, error):
    """Bad input raises an exit-code-2 error, deletes nothing and records no run."""
    _aged("962302", "session", 3)
    with pytest.raises(error) as raised:
        cleanup.cleanup_expired_keys(apply=True, **kwargs)
    assert raised.value.exit_code == 2
    assert _keys() == {("962302", "session"): 3}
    assert not CleanupRun.objects.exists()


def _cleanup_lock_held(conn) -> bool:
    """Whether any server process holds the cleanup's advisory lock (a 64-bit key)."""
    return bool(
        conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            [(LOCK_KEY >> 32) & 0xFFFFFFFF, LOCK_KEY & 0xFFFFFFFF],
        ).fetchone()
    )


@bot_tables
def test_cleanup_expired_keys__second_run_is_refused_while_the_lock_is_held():
    """A run holding the advisory lock (a real second connection) makes an applied run refuse."""
    _aged("962302", "session", 3)
    with _raw_bot_connection() as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
        assert _cleanup_lock_held(other)
        with pytest.raises(CleanupAlreadyRunning) as raised:
            cleanup.cleanup_expired_keys(apply=True)
        assert raised.value.exit_code == 5
        # A dry run deletes nothing, so it does not need the lock.
        assert cleanup.cleanup_expired_keys().total_seen == 3
    _wait_until_no_advisory_lock()
    assert _keys() == {("962302", "session"): 3}
    refused = CleanupRun.objects.get(outcome="refused")
    assert refused.dry_run is False
    assert "in progress" in refused.error
    # The other connection is gone, and with it the lock (once its server process has ended:
    # closing the client side does not wait for that).
    with _raw_bot_connection() as observer:
        assert _wait_until(lambda: not _cleanup_lock_held(observer))
    assert cleanup.cleanup_expired_keys(apply=True).total_deleted == 3


@bot_tables
def test_cleanup_expired_keys__stops_when_its_lock_connection_is_lost():
    """If the lock's connection dies mid-run (so the lock is gone), the run stops, recorded."""
    _aged("962302", "session", 12)
    killer = _raw_bot_connection()

    def kill_the_lock_connection():
        killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE '%%:cleanup-lock'"
        )

    try:
        with pytest.raises(BotDatabaseUnavailable, match="lost its lock connection"):
            cleanup.cleanup_expired_keys(
                apply=True, batch_size=4, progress=Hook(after=1, action=kill_the_lock_connection)
            )
    finally:
        killer.close()
    assert WhatsAppKey.objects.count() == 8  # one batch done, then it stopped
    run = CleanupRun.objects.get()
    assert (run.outcome, run.total_deleted) == ("failed", 4)
    assert run.rows_deleted == {"962302": {"session": 4}}


@bot_tables
def test_cleanup_expired_keys__releases_the_lock_after_the_run():
    """After a run the lock is free for anyone (nothing lingers in pg_locks)."""
    _aged("962302", "session", 1)
    cleanup.cleanup_expired_keys(apply=True)
    with _raw_bot_connection() as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]


# --- Orphan keys ---------------------------------------------------------------------------


@bot_tables
def test_cleanup_orphan_keys__deletes_old_keys_of_sessions_without_auth():
    """Old keys of a session with no auth row go; recent orphans and paired sessions stay."""
    written_old = timezone.now() - 10 * DAY
    factories.make_auth("962302")
    factories.make_keys("962302", "session", 3, written_at=written_old)
    factories.make_keys("company_444", "session", 5, written_at=written_old)
    factories.make_keys("company_444", "pre-key", 2, written_at=written_old)
    factories.make_keys("company_333", "session", 2)  # pairing right now: keep

    dry = cleanup.cleanup_orphan_keys()
    assert dry.rows_seen == {"company_444": {"session": 5, "pre-key": 2}}
    applied = cleanup.cleanup_orphan_keys(apply=True, batch_size=3)
    assert applied.rows_deleted == dry.rows_seen
    assert _keys() == {("962302", "session"): 3, ("company_333", "session"): 2}
    assert cleanup.cleanup_orphan_keys(apply=True, min_age=timedelta(0)).rows_deleted == {
        "company_333": {"session": 2}
    }


# --- Duplicate spellings -------------------------------------------------------------------


def _rows_exactly(session_id: str) -> list[str]:
    """Every column of a session's rows as PostgreSQL prints them."""
    with connections["bot"].cursor() as cursor:
        cursor.execute(
            "SELECT a::text FROM whatsapp_auth a WHERE company_id = %s "
            "UNION ALL SELECT k::text FROM whatsapp_keys k WHERE company_id = %s ORDER BY 1",
            [session_id, session_id],
        )
        return [row[0] for row in cursor.fetchall()]


@bot_tables
def test_cleanup_duplicates__reports_both_sides():
    """The report shows each side's auth age, key counts and newest write, and the stale side."""
    duplicate_salon()
    report = cleanup.cleanup_duplicates()
    (pair,) = report.duplicates
    assert pair.salon_id == 962302
    assert pair.bare.keys == {"session": 4, "pre-key": 3}
    assert pair.prefixed.keys == {"session": 6}
    assert pair.bare.has_auth and pair.prefixed.has_auth
    assert pair.prefixed.newest_write > pair.bare.newest_write
    assert (pair.stale, pair.live, pair.verdict) == ("962302", "company_962302", "remove-stale")
    assert report.rows_seen == {"962302": {"session": 4, "pre-key": 3, "whatsapp_auth": 1}}
    assert WhatsAppAuth.objects.count() == 2


@bot_tables
def test_cleanup_duplicates__removes_the_stale_side_and_the_backup_restores_it_exactly(
    tmp_path, settings
):
    """Apply keeps the live side, writes a 0600 backup, and restore puts every byte back."""
    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path / "backups"
    duplicate_salon()
    stale_before = _rows_exactly("962302")
    live_before = _rows_exactly("company_962302")

    report = cleanup.cleanup_duplicates(apply=True, salons=["962302"])
    (pair,) = report.duplicates
    assert pair.verdict == "removed"
    assert pair.removed == {"session": 4, "pre-key": 3, "whatsapp_auth": 1}
    assert _rows_exactly("962302") == []
    assert _rows_exactly("company_962302") == live_before
    path = report.backup_paths[0]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    run = CleanupRun.objects.get(pk=report.run_id)
    assert run.backup_path == path and run.total_deleted == 8 and run.outcome == "succeeded"

    check = cleanup.restore_backup(path)  # dry run: reads and counts only
    assert check.total_seen == 8 and _rows_exactly("962302") == []
    cleanup.restore_backup(path, apply=True)
    assert _rows_exactly("962302") == stale_before
    assert _rows_exactly("company_962302") == live_before

    with pytest.raises(BadInput, match="exist already"):
        cleanup.restore_backup(path, apply=True)
    assert _rows_exactly("962302") == stale_before


@bot_tables
def test_cleanup_duplicates__refuses_when_the_stale_side_is_still_written(tmp_path, settings):
    """Both sides written within the idle time: reported as refused, nothing removed."""
    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    duplicate_salon(stale_days=0.1)
    report = cleanup.cleanup_duplicates(apply=True)
    (pair,) = report.duplicates
    assert pair.verdict == "refused"
    assert "may still be writing both" in pair.reason
    assert report.total_deleted == 0
    # The record reads refused, with the reason, not "succeeded".
    run = CleanupRun.objects.get(pk=report.run_id)
    assert (run.outcome, report.outcome) == ("refused", "refused")
    assert run.error.startswith("Refused: salon ") and "may still be writing both" in run.error
    assert WhatsAppAuth.objects.count() == 2
    assert list(tmp_path.iterdir()) == []


@bot_tables
def test_restore_backup__refuses_a_truncated_file(tmp_path, settings):
    """A backup cut short is refused before anything is inserted."""
    import gzip

    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    duplicate_salon()
    path = cleanup.cleanup_duplicates(apply=True).backup_paths[0]
    with gzip.open(path, "rt") as stream:
        lines = stream.read().splitlines()
    broken = tmp_path / "broken.jsonl.gz"
    with gzip.open(broken, "wt") as stream:
        stream.write("\n".join(lines[:-2]) + "\n")
    with pytest.raises(BadInput, match="incomplete"):
        cleanup.restore_backup(broken, apply=True)
    assert _rows_exactly("962302") == []


# --- Faults (real second connections, committed data) -------------------------------------


@bot_tables_committed
def test_cleanup_expired_keys__lock_timeout_mid_run_keeps_committed_batches(
    truncate_bot_tables, settings
):
    """A batch timing out on a lock rolls back alone; the run is recorded failed; rerun ends it."""
    settings.OBSERVABILITY_CLEANUP_LOCK_TIMEOUT = timedelta(milliseconds=100)
    _aged("962302", "session", 50)
    blocker = _raw_bot_connection()
    blocker.autocommit = False

    def block_the_table():
        # SHARE mode conflicts with DELETE's ROW EXCLUSIVE lock: the next batch must wait.
        blocker.execute("LOCK TABLE whatsapp_keys IN SHARE MODE")

    try:
        with pytest.raises(QueryTimedOut):
            cleanup.cleanup_expired_keys(
                apply=True, batch_size=10, progress=Hook(after=2, action=block_the_table)
            )
    finally:
        blocker.rollback()
        blocker.close()
    assert WhatsAppKey.objects.count() == 30  # two batches of 10 committed, the third not
    failed = CleanupRun.objects.get()
    assert failed.outcome == "failed"
    assert failed.total_deleted == 20
    assert failed.rows_deleted == {"962302": {"session": 20}}
    assert "did not answer in time" in failed.error

    rerun = cleanup.cleanup_expired_keys(apply=True, batch_size=10)
    assert rerun.total_seen == rerun.total_deleted == 30
    assert WhatsAppKey.objects.count() == 0


@bot_tables_committed
def test_cleanup_expired_keys__connection_killed_mid_run_is_recorded_and_rerun_continues(
    truncate_bot_tables,
):
    """pg_terminate_backend on the cleanup's connection: committed batches stay, run failed."""
    _aged("962302", "session", 40)
    with connections["bot"].cursor() as cursor:
        cursor.execute("SELECT 1")
    pid = connections["bot"].connection.info.backend_pid
    killer = _raw_bot_connection()

    def terminate():
        killer.execute("SELECT pg_terminate_backend(%s)", [pid])

    try:
        with pytest.raises(BotDatabaseUnavailable):
            cleanup.cleanup_expired_keys(
                apply=True, batch_size=10, progress=Hook(after=1, action=terminate)
            )
    finally:
        killer.close()
    assert WhatsAppKey.objects.count() == 30
    failed = CleanupRun.objects.get()
    assert (failed.outcome, failed.total_deleted) == ("failed", 10)

    rerun = cleanup.cleanup_expired_keys(apply=True, batch_size=10)
    assert rerun.total_deleted == 30
    assert WhatsAppKey.objects.count() == 0


# --- A killed process and a concurrent writer (real processes and connections) ------------


_SLOW_DELETE_SQL = """
CREATE OR REPLACE FUNCTION test_slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.002); RETURN OLD; END $$;
CREATE TRIGGER test_slow_delete BEFORE DELETE ON whatsapp_keys
    FOR EACH ROW EXECUTE FUNCTION test_slow_delete();
"""


def _insert_expired_sql(conn, count: int, session_id: str = "962302") -> None:
    """Insert ``count`` sessions last written 120 days ago (past retention), in one statement."""
    conn.execute(
        "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, created_at, "
        "updated_at, expires_at) SELECT %s, 'session', 'k' || g, "
        "jsonb_build_object('n', g), now() - interval '120 days', now() - interval '120 days', "
        "now() - interval '113 days' FROM generate_series(1, %s) g",
        [session_id, count],
    )


def _wait_until(predicate, timeout: float = 10.0, step: float = 0.02) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


@pytest.mark.slow
@bot_tables_committed
def test_cleanup_expired_keys__sigkill_mid_batch_leaves_no_partial_batch(truncate_bot_tables):
    """A real process killed with SIGKILL inside a batch: only whole batches are gone."""
    import signal

    from tests.cleanup_support import start_manage

    total, batch = 2000, 200
    observer = _raw_bot_connection()
    try:
        _insert_expired_sql(observer, total)
        observer.execute(_SLOW_DELETE_SQL)  # ~0.4 s per batch: time to kill one mid-way

        def remaining() -> int:
            return observer.execute("SELECT count(*) FROM whatsapp_keys").fetchone()[0]

        def deleting_pid():
            row = observer.execute(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE '%%DELETE FROM whatsapp_keys%%' AND pid <> pg_backend_pid()"
            ).fetchone()
            return row[0] if row else None

        process = start_manage("cleanup_expired_keys", "--apply", "--batch-size", str(batch))
        try:
            # Wait for a committed batch, then for the next batch's DELETE to be running.
            assert _wait_until(lambda: remaining() < total, timeout=12), process.stderr
            assert _wait_until(lambda: deleting_pid() is not None)
            pid = deleting_pid()
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=5)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == -signal.SIGKILL
        # The orphaned backend finishes its statement, cannot commit, and goes away.
        assert _wait_until(
            lambda: (
                not observer.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
            )
        )
        left = remaining()
        assert 0 < left < total
        assert (total - left) % batch == 0, f"a partial batch was committed: {left} left"
        killed = CleanupRun.objects.get()
        assert killed.outcome == "running"  # nobody could record its end...
        assert killed.total_deleted == total - left  # ...but its committed batches are counted

        observer.execute("DROP TRIGGER test_slow_delete ON whatsapp_keys")
        # The killed process's lock went with its connection: a rerun finishes the job.
        assert _wait_until(
            lambda: (
                observer.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                ).fetchone()[0]
                == 0
            )
        )
        rerun = cleanup.cleanup_expired_keys(apply=True)
        assert rerun.total_deleted == left
        assert remaining() == 0
        killed.refresh_from_db()
        assert killed.outcome == "failed" and "Interrupted" in killed.error
    finally:
        observer.execute("DROP TRIGGER IF EXISTS test_slow_delete ON whatsapp_keys")
        observer.close()


@bot_tables_committed
def test_cleanup_expired_keys__concurrent_writer_waits_at_most_one_batch(truncate_bot_tables):
    """The bot rewriting expired keys mid-cleanup waits at most one batch; its keys survive."""
    import random
    import threading
    import time

    total = 20_000
    with _raw_bot_connection() as setup:
        _insert_expired_sql(setup, total)
    written: set[str] = set()
    latencies: list[float] = []
    stop = threading.Event()
    warmed_up = threading.Event()

    def bot_writer():
        rng = random.Random(7)
        with _raw_bot_connection() as conn:
            while not stop.is_set():
                key_id = f"k{rng.randint(1, total)}"
                started = time.monotonic()
                conn.execute(
                    "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, expires_at) "
                    "VALUES ('962302', 'session', %s, '{\"rewritten\": true}', "
                    "now() + interval '7 days') ON CONFLICT (company_id, key_type, key_id) "
                    "DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                    [key_id],
                )
                latencies.append(time.monotonic() - started)
                written.add(key_id)
                if len(latencies) == 20:
                    warmed_up.set()

    thread = threading.Thread(target=bot_writer)
    thread.start()
    try:
        assert warmed_up.wait(10)
        during_start = len(latencies)
        report = cleanup.cleanup_expired_keys(apply=True, batch_size=2000)
        during = latencies[during_start:]
    finally:
        stop.set()
        thread.join(10)
    assert report.batches >= 9
    assert len(during) > 20, "the writer must have written while the cleanup ran"
    assert max(during) <= report.slowest_batch_seconds + 0.25
    survivors = set(
        WhatsAppKey.objects.filter(company_id="962302").values_list("key_id", flat=True)
    )
    assert survivors == written  # every rewritten key kept, every other expired key gone
    assert not WhatsAppKey.objects.filter(expires_at__lt=timezone.now()).exists()


def _header() -> str:
    from observability.cleanup import backup

    return json.dumps({"kind": "header", "format": backup.FORMAT, "version": backup.VERSION})


@pytest.mark.parametrize(
    "lines",
    [
        ["[1, 2]"],  # a line that is JSON but no object
        ["1"],
        [_header(), "[]", '{"kind": "footer", "rows": {}}'],
        [_header(), '{"kind": "footer", "rows": [1]}'],
        [
            _header(),
            '{"kind": "row", "table": "whatsapp_keys", "row": {"company_id": "1"}}',
            '{"kind": "footer", "rows": {"whatsapp_keys": 1}}',
        ],
        [
            _header(),
            '{"kind": "row", "table": "whatsapp_keys", "row": "not json"}',
            '{"kind": "footer", "rows": {"whatsapp_keys": 1}}',
        ],
        [
            _header(),
            '{"kind": "row", "table": "whatsapp_keys", "row": "[1]"}',
            '{"kind": "footer", "rows": {"whatsapp_keys": 1}}',
        ],
    ],
)
def test_backup_read__a_malformed_file_is_bad_input_not_a_crash(tmp_path, lines):
    """A backup whose lines or rows are not the objects it writes is refused with BadInput."""
    import gzip

    from observability.cleanup import backup

    path = tmp_path / "crafted.jsonl.gz"
    with gzip.open(path, "wt") as stream:
        stream.write("\n".join(lines) + "\n")
    with pytest.raises(BadInput, match="crafted.jsonl.gz"):
        backup.read(path)
