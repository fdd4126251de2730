"""Salons stored under both spellings: report both sides and remove the stale one."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connections, transaction
from django.utils import timezone

from observability import config, session_ids
from observability.cleanup import backup, engine, records, selection
from observability.cleanup.locking import CleanupLock
from observability.cleanup.report import CleanupReport, DuplicatePair, SessionSide
from observability.exceptions import translate_database_errors
from observability.models import CleanupRun

#: The pseudo key type under which removed ``whatsapp_auth`` rows are counted.
AUTH = "whatsapp_auth"

# The rule that decided a pair (``DuplicatePair.rule``): the stale side is the one whose
# newest write (auth row or any key) is older, unless one of the refusals applies.
RULE_OLDER_WRITE = "older-newest-write"
RULE_UNDATED = "undated"
RULE_SAME_INSTANT = "same-instant"
RULE_STILL_WRITTEN = "stale-side-still-written"
RULE_ONLY_CREDENTIALS = "only-credentials"
RULE_CHANGED = "changed-while-running"
RULE_NOT_CONFIRMED = "not-the-confirmed-side"

# Every distinct session id in whatsapp_keys through idx_whatsapp_keys_company, one index
# probe per session (a "loose index scan"), instead of reading every key.
_KEY_SESSIONS_SQL = """
WITH RECURSIVE ids AS (
    (SELECT company_id FROM whatsapp_keys ORDER BY company_id LIMIT 1)
    UNION ALL
    SELECT (SELECT k.company_id FROM whatsapp_keys k WHERE k.company_id > ids.company_id
            ORDER BY k.company_id LIMIT 1)
    FROM ids WHERE ids.company_id IS NOT NULL
)
SELECT company_id FROM ids WHERE company_id IS NOT NULL
UNION
SELECT company_id FROM whatsapp_auth
"""


def _candidate_session_ids(cursor, salon_ids: tuple[int, ...]) -> list[str]:
    if salon_ids:
        return [s for salon_id in salon_ids for s in session_ids.spellings(salon_id)]
    cursor.execute(_KEY_SESSIONS_SQL)
    return [row[0] for row in cursor.fetchall()]


def _sides(cursor, ids: list[str]) -> dict[str, SessionSide]:
    """Auth times, key counts by type and newest key write of each session id."""
    sides = {session_id: SessionSide(session_id=session_id) for session_id in ids}
    cursor.execute(
        "SELECT company_id, created_at, updated_at FROM whatsapp_auth WHERE company_id = ANY(%s)",
        [ids],
    )
    for session_id, created_at, updated_at in cursor.fetchall():
        sides[session_id].auth_created_at = created_at
        sides[session_id].auth_updated_at = updated_at
    cursor.execute(
        "SELECT company_id, key_type, count(*), max(updated_at) FROM whatsapp_keys "
        "WHERE company_id = ANY(%s) GROUP BY 1, 2",
        [ids],
    )
    for session_id, key_type, n, newest in cursor.fetchall():
        side = sides[session_id]
        side.keys[key_type] = int(n)
        side.total_keys += int(n)
        if newest is not None and (
            side.newest_key_write is None or newest > side.newest_key_write
        ):
            side.newest_key_write = newest
    return sides


def _exists(side: SessionSide) -> bool:
    return side.has_auth or side.total_keys > 0


def decide(pair: DuplicatePair, now: datetime, min_idle: timedelta) -> None:
    """
    Choose the stale side (the one with the older newest write), or refuse to choose.

    Refuses when a side cannot be dated, both were last written at the same instant, the
    stale side was written within ``min_idle`` (the bot may still be writing both), or
    removing it would take the salon's only ``whatsapp_auth`` row.
    """
    pair.stale = pair.live = pair.held_until = None
    pair.verdict = "refused"
    bare, prefixed = pair.bare, pair.prefixed
    if bare.newest_write is None or prefixed.newest_write is None:
        pair.rule = RULE_UNDATED
        pair.reason = "a side has no dated write (no updated_at); cannot tell which is stale"
        return
    if bare.newest_write == prefixed.newest_write:
        pair.rule = RULE_SAME_INSTANT
        pair.reason = "both sides were last written at the same instant"
        return
    stale, live = (
        (bare, prefixed) if bare.newest_write < prefixed.newest_write else (prefixed, bare)
    )
    idle = now - stale.newest_write
    if idle < min_idle:
        pair.held_until = stale.newest_write + min_idle
        pair.rule = RULE_STILL_WRITTEN
        pair.reason = (
            f"the stale side {stale.session_id!r} was written {_hours(idle)} ago, less than "
            f"{_hours(min_idle)}: the bot may still be writing both spellings"
        )
        return
    if stale.has_auth and not live.has_auth:
        pair.rule = RULE_ONLY_CREDENTIALS
        pair.reason = (
            f"the live side {live.session_id!r} has no whatsapp_auth row; removing "
            f"{stale.session_id!r} would remove the salon's only credentials"
        )
        return
    pair.stale, pair.live = stale.session_id, live.session_id
    pair.verdict = "remove-stale"
    pair.rule = RULE_OLDER_WRITE
    pair.reason = (
        f"{live.session_id!r} was written {_hours(now - live.newest_write)} ago, "
        f"{stale.session_id!r} {_hours(idle)} ago"
    )


def _hours(period: timedelta) -> str:
    hours = period.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def find_duplicates(
    cursor, salon_ids: tuple[int, ...], now: datetime, min_idle: timedelta
) -> list[DuplicatePair]:
    """Every salon (of those asked, or all) present under both spellings, decided."""
    by_salon: dict[int, set[str]] = {}
    for raw in _candidate_session_ids(cursor, salon_ids):
        described = session_ids.describe(raw)
        if described.salon_id is not None:
            by_salon.setdefault(described.salon_id, set()).add(raw)
    candidates = sorted(s for salon, ids in by_salon.items() if len(ids) == 2 for s in ids)
    if not candidates:
        return []
    sides = _sides(cursor, candidates)
    pairs = []
    for salon_id in sorted(by_salon):
        if len(by_salon[salon_id]) != 2:
            continue
        bare, prefixed = (sides[s] for s in session_ids.spellings(salon_id))
        if not (_exists(bare) and _exists(prefixed)):
            continue
        pair = DuplicatePair(salon_id=salon_id, bare=bare, prefixed=prefixed)
        decide(pair, now, min_idle)
        pairs.append(pair)
    return pairs


class _SidesChanged(Exception):
    """The rows a removal deleted no longer support its decision: roll the removal back."""


def _deleted_side(session_id: str, auth_rows: list, key_rows: list) -> SessionSide:
    """The side as the rows a removal deleted describe it (what the decision is checked on)."""
    side = SessionSide(session_id=session_id)
    for _, created_at, updated_at, _ in auth_rows:
        side.auth_created_at, side.auth_updated_at = created_at, updated_at
    for key_type, _, _, updated_at, _ in key_rows:
        side.keys[key_type] = side.keys.get(key_type, 0) + 1
        side.total_keys += 1
        if updated_at is not None and (
            side.newest_key_write is None or updated_at > side.newest_key_write
        ):
            side.newest_key_write = updated_at
    return side


def _remove_stale_side(
    alias: str, pair: DuplicatePair, run_id: int, now: datetime, min_idle: timedelta
) -> None:
    """
    Delete the stale side, check the decision on what was deleted, back it up, commit.

    One transaction, with no row lock taken by hand (``SELECT ... FOR UPDATE`` needs the
    UPDATE privilege, which the cleanup role does not have: README "The bot database's
    roles"). Instead the stale side is deleted first, ``DELETE ... RETURNING`` every column:
    the deleted rows are then exactly the rows returned, and locked by the delete until the
    commit, so the bot can no longer change them. The decision is taken again on those
    rows and on the live side as it is now; if the stale side was written meanwhile (a newer
    row was deleted) or the live side lost its auth row, the whole removal is rolled back and
    the pair reported as refused. Otherwise the returned rows are written to the backup
    (fsynced) before the commit, so every committed delete has its backup. A key the bot
    inserts after the delete is not deleted. Any failure rolls the whole side back.
    """
    live_id = pair.live
    try:
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            engine.set_local_timeouts(cursor)
            cursor.execute(
                "DELETE FROM whatsapp_auth a WHERE company_id = %s "
                "RETURNING row_to_json(a)::text, a.created_at, a.updated_at, pg_column_size(a.*)",
                [pair.stale],
            )
            auth_rows = cursor.fetchall()
            cursor.execute(
                "DELETE FROM whatsapp_keys k WHERE company_id = %s "
                "RETURNING k.key_type, k.key_id, row_to_json(k)::text, k.updated_at, "
                "pg_column_size(k.*)",
                [pair.stale],
            )
            key_rows = sorted(cursor.fetchall(), key=lambda row: (row[0], row[1]))
            stale = _deleted_side(pair.stale, auth_rows, key_rows)
            live = _sides(cursor, [live_id])[live_id]
            again = DuplicatePair(
                salon_id=pair.salon_id,
                bare=stale if stale.session_id == session_ids.bare(pair.salon_id) else live,
                prefixed=live if stale.session_id == session_ids.bare(pair.salon_id) else stale,
            )
            decide(again, now, min_idle)
            if again.verdict != "remove-stale" or again.stale != pair.stale:
                raise _SidesChanged(again.reason or "the stale side changed")
            path = backup.new_backup_path(f"duplicates-{pair.salon_id}-{pair.stale}")
            header = {
                "operation": "duplicates",
                "run_id": run_id,
                "salon_id": pair.salon_id,
                "session_id": pair.stale,
                "kept_session_id": live_id,
                "written_at": timezone.now().isoformat(),
            }
            backup.write(
                path,
                header,
                [(backup.TABLES[0], row[0]) for row in auth_rows]
                + [(backup.TABLES[1], row[2]) for row in key_rows],
            )
            pair.backup_path = str(path)
    except _SidesChanged as changed:
        pair.verdict = "refused"
        pair.stale = pair.live = None
        pair.rule = RULE_CHANGED
        pair.reason = f"the sessions changed while the cleanup ran: {changed}"
        return
    removed = dict(stale.keys)
    if auth_rows:
        removed[AUTH] = len(auth_rows)
    pair.removed = removed
    pair.row_bytes = sum(row[3] for row in auth_rows) + sum(row[4] for row in key_rows)
    pair.verdict = "removed"


def cleanup_duplicates(
    *,
    salons: Iterable[str | int] | None = None,
    min_idle: timedelta | None = None,
    apply: bool = False,
    started_by: str = "command",
    now: datetime | None = None,
    confirmed_stale: Iterable[str] | None = None,
) -> CleanupReport:
    """
    Report salons stored under both spellings and, when applying, remove each stale side.

    Each removal is one transaction preceded by a backup file (see
    :func:`_remove_stale_side`); pairs that cannot be decided safely are reported as
    refused and left alone.

    Args:
        salons: restrict to these salons (either spelling); None: every salon.
        min_idle: the stale side must be unwritten this long (setting, default 24 h).
        apply: remove the stale sides; False (the default) reports only.
        started_by: who started the run, for the record.
        now: the current time (tests).
        confirmed_stale: the stale session ids a person confirmed (the admin's dry run);
            a pair now decided otherwise is refused instead of removed. None: no check.

    Returns:
        The report, with ``duplicates`` describing every pair and ``backup_paths``.

    Raises:
        BadInput, MalformedSessionId, SessionNotFound: before anything runs.
        CleanupAlreadyRunning, BotDatabaseUnavailable, QueryTimedOut: see the engine.

    """
    alias = config.bot_database_alias()
    min_idle = selection.period(min_idle, config.cleanup_duplicate_min_idle(), "minimum idle time")
    with translate_database_errors(alias):
        chosen = selection.build(salons=salons, alias=alias)
    now = now or timezone.now()
    confirmed = None if confirmed_stale is None else sorted(set(confirmed_stale))
    parameters = {
        "salon_ids": list(chosen.salon_ids),
        **({"confirmed_stale": confirmed} if confirmed is not None else {}),
        "min_idle_hours": min_idle / timedelta(hours=1),
        "now": now.isoformat(),
    }

    def body(report: CleanupReport, recorder: records.RunRecorder, lock: CleanupLock) -> None:
        with connections[alias].cursor() as cursor:
            report.duplicates = find_duplicates(cursor, chosen.salon_ids, now, min_idle)
        if confirmed is not None:
            for pair in report.duplicates:
                _refuse_unconfirmed(pair, confirmed)
        for pair in report.duplicates:
            if pair.verdict == "remove-stale":
                stale = pair.bare if pair.stale == pair.bare.session_id else pair.prefixed
                report.rows_seen[stale.session_id] = {**stale.keys}
                if stale.has_auth:
                    report.rows_seen[stale.session_id][AUTH] = 1
        report.total_seen = records.total(report.rows_seen)
        recorder.save(rows_seen=report.rows_seen, total_seen=report.total_seen)
        if not apply:
            return
        for pair in report.duplicates:
            if pair.verdict != "remove-stale":
                continue
            lock.ensure_held()
            try:
                _remove_stale_side(alias, pair, report.run_id, now, min_idle)
            finally:
                if pair.backup_path:
                    report.backup_paths.append(pair.backup_path)
            if pair.verdict == "removed":
                report.rows_deleted[pair.stale] = dict(pair.removed)
                report.total_deleted += sum(pair.removed.values())
                report.row_bytes_deleted += pair.row_bytes
                report.batches += 1
                recorder.save(
                    rows_deleted=report.rows_deleted,
                    total_deleted=report.total_deleted,
                    backup_path="\n".join(report.backup_paths),
                )

    report = engine.execute_run(
        operation="duplicates",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        body=body,
        tables=("whatsapp_auth", "whatsapp_keys"),
    )
    _record_refusal(report)
    return report


def _refuse_unconfirmed(pair: DuplicatePair, confirmed: list[str]) -> None:
    """Refuse a pair whose stale side now is not the one the person confirmed removing."""
    if pair.verdict != "remove-stale" or pair.stale in confirmed:
        return
    decided = pair.reason
    pair.verdict, pair.rule = "refused", RULE_NOT_CONFIRMED
    pair.reason = (
        f"the confirmed dry run did not name {pair.stale!r} as the stale side, and it is "
        f"now ({decided}); run the dry run again"
    )
    pair.stale = pair.live = None


def _record_refusal(report: CleanupReport) -> None:
    """
    A run whose every pair was refused is recorded as refused, with each pair's reason.

    The engine records a run that ended without an error as succeeded; for duplicates that
    read "succeeded" when nothing could be decided, and ops took it for a removal. Pairs
    decided (even when some others were refused) keep the run succeeded, with the refusals
    named in its error field.
    """
    refused = [pair for pair in report.duplicates if pair.verdict == "refused"]
    if not refused:
        return
    reasons = "; ".join(f"salon {pair.salon_id}: {pair.reason}" for pair in refused)
    fields = {"error": f"Refused: {reasons}"}
    if len(refused) == len(report.duplicates):
        fields["outcome"] = CleanupRun.Outcome.REFUSED
        report.outcome = CleanupRun.Outcome.REFUSED
    CleanupRun.objects.filter(pk=report.run_id).update(**fields)
