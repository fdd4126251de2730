"""
Refresh the stored snapshot: judge the sessions that changed, store their state and changes.

The only code that reads the bot's tables for session health on a schedule; pages, health
checks, metrics and the alert read what it stores (``observability.snapshot.read``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from observability import config, key_types, phones, session_ids, sessions
from observability.exceptions import ObservabilityError, translate_database_errors
from observability.models import (
    AlertDelivery,
    CleanupRun,
    SessionChange,
    SessionState,
    Snapshot,
)
from observability.snapshot import codec, detect
from observability.snapshot.changes import change_row, creds_count, creds_detail, fact_changes
from observability.snapshot.read import state_health

logger = logging.getLogger(__name__)

NUMBER = sessions.NUMBER_MARK

#: The advisory lock every refresh takes on the default database (a signed 64-bit number
#: derived from the name, so it cannot collide by accident with another lock of this project).
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"observability.snapshot").digest()[:8], "big", signed=True
)

#: The longest and shortest life the bot gives a key (``key_types.bot_expires_at``).
LONG_LIFE = timedelta(days=14)
SHORT_LIFE = timedelta(days=7)

#: Rows stamped this long before the previous refresh's high-water mark are read again: the bot
#: computes ``expires_at`` on its own host's clock, a moment before its statement reaches the
#: database (``updated_at`` is the database's ``now()``, the transaction's start).
CLOCK_MARGIN = timedelta(seconds=5)

# The high-water mark: the database's clock now, moved back to the start of the oldest
# transaction that has written something and is still open (its rows are invisible to this
# refresh yet stamped earlier). Other roles' ``backend_xid`` is visible with pg_monitor (the
# web role has it); without it the column reads NULL and only CLOCK_MARGIN covers them.
_MARK_SQL = """
    SELECT statement_timestamp(),
           (SELECT min(xact_start) FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid())
"""

#: Outcomes of :func:`refresh`.
SUCCEEDED = Snapshot.Outcome.SUCCEEDED.value
SKIPPED = "skipped"

# Sessions whose keys were written, or expired, since ``since``. The bot sets ``expires_at`` to
# the write time plus 7 or 14 days by key type, so ``idx_whatsapp_keys_expires`` orders the
# keys by write time within each life: "written since T" is two range scans on it.
#  1. expires_at >= T + 14 d: keys of 14-day types written since T (no 7-day key reaches it).
#  2. T + 7 d <= expires_at <= mark + 7 d + margin: keys of 7-day types written since T, and
#     keys of 14-day types written a week before T during as long a window; the type test
#     drops those.
#  3. T < expires_at <= now: keys that expired since T (their session's expired count moved).
# Plus the auth rows written since T (a seq scan of a table of one row per session).
_DIRTY_SQL = """
    SELECT company_id FROM whatsapp_keys
     WHERE expires_at >= %(long_from)s
     UNION
    SELECT company_id FROM whatsapp_keys
     WHERE expires_at >= %(short_from)s AND expires_at <= %(short_to)s
       AND (key_type = ANY(%(short_types)s) OR key_type LIKE '%%lid-mapping%%')
     UNION
    SELECT company_id FROM whatsapp_keys
     WHERE expires_at > %(since)s AND expires_at <= %(now)s
     UNION
    SELECT company_id FROM whatsapp_auth
     WHERE coalesce(updated_at, created_at) > %(since)s
"""

# Salons whose companies row changed since T (title, the bot's connection flags), and the
# salons the bot flags disconnected (``changed`` false: compared with the stored facts, since
# the bot may flip ``whatsapp_connected`` without touching ``updated_at``: no trigger on
# companies, shared/legacy-schema.md). One row per salon: a seq scan of a small table.
_SALONS_SQL = """
    SELECT company_id,
           coalesce(updated_at > %(since_naive)s OR disconnected_at > %(since)s
                    OR whatsapp_connected_at > %(since_naive)s, false) AS changed
      FROM companies
     WHERE updated_at > %(since_naive)s OR disconnected_at > %(since)s
        OR whatsapp_connected_at > %(since_naive)s OR whatsapp_connected IS FALSE
"""


@dataclass(frozen=True)
class RefreshResult:
    """
    What one call of :func:`refresh` did.

    Attributes:
        outcome: ``succeeded``, or ``skipped`` when another refresh held the lock.
        kind: ``full`` or ``incremental`` (None when skipped).
        taken_at: the moment the sessions were judged at.
        duration: seconds the call took.
        sessions_refreshed: sessions recomputed from the bot's tables.
        sessions_total: sessions stored afterwards.
        changes: change rows written.
        pruned: change rows removed by retention.

    """

    outcome: str
    kind: str | None
    taken_at: datetime
    duration: float
    sessions_refreshed: int = 0
    sessions_total: int = 0
    changes: int = 0
    pruned: int = 0


def refresh(full: bool | None = None, now: datetime | None = None) -> RefreshResult:
    """
    Take one snapshot: judge the sessions, store their latest state and what changed.

    Holds a transaction-level advisory lock on the default database for the whole refresh, so
    across every web and worker process only one refresh runs at a time; a refresh that finds
    the lock held returns at once (``skipped``). Readers never wait: they read the last
    committed snapshot. State, changes, the refresh record and retention pruning commit
    together.

    Args:
        full: True to recount every session, False for only the sessions whose rows changed
            since the previous snapshot, None to decide: full when there is no earlier
            snapshot or the last full one is older than ``snapshot_full_interval``.
        now: the moment to judge at (default: now).

    Returns:
        What was done.

    Raises:
        BotDatabaseUnavailable, QueryTimedOut: the bot's tables could not be read. A failed
            refresh is recorded (pages then say so) and the last snapshot stays in place.

    """
    now = now or timezone.now()
    started = time.perf_counter()
    failure: ObservabilityError | None = None
    with transaction.atomic(using="default"):
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
            if not cursor.fetchone()[0]:
                return RefreshResult(SKIPPED, None, now, time.perf_counter() - started)
        previous = Snapshot.objects.filter(outcome=SUCCEEDED).order_by("-taken_at", "-id").first()
        kind = _kind(full, previous, now)
        try:
            mark = _high_water_mark()
            if kind == Snapshot.Kind.FULL:
                scope = None
                fresh = sessions.list_sessions(now=now, judged=False)
            else:
                logins = _StoredLogins()
                scope = _dirty_sessions(previous, now, mark, logins)
                fresh = _read(scope, now, logins)
        except ObservabilityError as error:
            failure = error
            Snapshot.objects.create(
                taken_at=now,
                kind=kind,
                duration=time.perf_counter() - started,
                outcome=Snapshot.Outcome.FAILED,
                error=error.message,
            )
        else:
            # How long the stored facts may span: a rise of nextPreKeyId over a longer time
            # (the worker was stopped) cannot be read as pre-keys made one at a time.
            span = now - previous.taken_at if previous is not None else None
            result = _store(
                fresh, scope, kind=kind, now=now, started=started, mark=mark, span=span
            )
    if failure is not None:
        logger.warning("snapshot refresh failed: %s", failure.message)
        raise failure
    return result


def _kind(full: bool | None, previous: Snapshot | None, now: datetime) -> str:
    if full or previous is None:
        return Snapshot.Kind.FULL
    if SessionState.objects.filter(login_marks__isnull=True).exists():
        # Stored before the login marks, even when asked for an incremental: it could not
        # see a login shared with those states.
        return Snapshot.Kind.FULL
    if full is False:
        return Snapshot.Kind.INCREMENTAL
    recent_full = Snapshot.objects.filter(
        outcome=SUCCEEDED,
        kind=Snapshot.Kind.FULL,
        taken_at__gt=now - config.snapshot_full_interval(),
    ).exists()
    return Snapshot.Kind.INCREMENTAL if recent_full else Snapshot.Kind.FULL


# --- Which sessions changed ---------------------------------------------------------------------


def _high_water_mark() -> datetime:
    """
    Where the next incremental refresh starts: every row stamped before it is visible now.

    The bot database's clock, moved back to the start of its oldest open writing transaction
    (whose rows commit later, stamped earlier), by at most ``snapshot_overlap``: a longer one
    would make every refresh re-read its whole duration; the full recount catches its rows.
    Read before the changed rows are looked for, so it never runs ahead of them.
    """
    alias = config.bot_database_alias()
    with translate_database_errors(alias), connections[alias].cursor() as cursor:
        cursor.execute(_MARK_SQL)
        clock, oldest = cursor.fetchone()
    if oldest is None or oldest >= clock:
        return clock
    return max(oldest, clock - config.snapshot_overlap())


def _dirty_sessions(
    previous: Snapshot, now: datetime, mark: datetime, logins: _StoredLogins
) -> set[str]:
    """
    The session ids whose verdict may differ from the stored one since ``previous``.

    Rows written since its high-water mark (through the expiry index) or expired since then,
    salons whose ``companies`` row changed or whose ``whatsapp_connected`` flag disagrees with
    the stored ``bot_flagged_disconnected`` (the bot flips it without a trigger on
    ``updated_at``), sessions a cleanup deleted rows of, sessions whose last write crossed a
    silence threshold, and the sessions that share a salon, a login or a number with any of
    those (rules compare them). Each of those sessions is recounted whole, which also counts
    the rows the bot deleted in it (Baileys deletes a pre-key when a new contact uses it, and
    writes that contact's ``session`` row in the same exchange: src/Signal/libsignal.ts). A
    delete in a session with no other write stays invisible until the full recount.
    """
    mark_then = previous.keys_seen_until
    if mark_then is not None and abs(previous.taken_at - mark_then) <= config.snapshot_overlap():
        since = min(mark_then - CLOCK_MARGIN, previous.taken_at)
    else:  # no mark yet, or it judged at a moment of the caller's choosing (a replay, a test)
        since = previous.taken_at - config.snapshot_overlap()
    since = min(since, now)
    alias = config.bot_database_alias()
    params = {
        "since": since,
        "since_naive": since.astimezone(UTC).replace(tzinfo=None),
        "now": now,
        "long_from": since + LONG_LIFE,
        "short_from": since + SHORT_LIFE,
        "short_to": max(now, mark) + SHORT_LIFE + CLOCK_MARGIN,
        "short_types": [
            kind
            for kind in key_types.KEY_TYPES
            if key_types.bot_expires_at(kind, now) - now == SHORT_LIFE
        ],
    }
    with translate_database_errors(alias), connections[alias].cursor() as cursor:
        cursor.execute(_DIRTY_SQL, params)
        dirty = {row[0] for row in cursor.fetchall()}
        cursor.execute(_SALONS_SQL, params)
        salons = cursor.fetchall()
    for salon_id, changed in salons:
        if changed:
            dirty.update(session_ids.spellings(salon_id))
    dirty |= _bot_flag_moved([salon_id for salon_id, changed in salons if not changed])
    dirty |= _cleaned_since(since)
    dirty |= _crossed_thresholds(since, now)
    dirty |= detect.due(now)
    return _with_peers(dirty, logins)


# Stored sessions whose ``bot_connected`` fact and the salon's flag now disagree: one scan of
# the state table (one row per session) hash-joined to the flagged salons (one array).
_FLAG_MOVED_SQL = """
    SELECT state.session_id
      FROM observability_sessionstate AS state
      LEFT JOIN (SELECT DISTINCT unnest(%s::bigint[]) AS salon_id) AS flagged
        ON flagged.salon_id = state.salon_id
     WHERE (flagged.salon_id IS NOT NULL) <> state.bot_flagged_disconnected
"""


def _bot_flag_moved(disconnected: list[int]) -> set[str]:
    """
    Stored sessions whose ``bot_connected`` fact disagrees with the bot's flag now.

    ``disconnected`` holds the salons whose ``companies.whatsapp_connected`` is false: their
    sessions not stored so yet turn FAIL at once (``rules.bot_flags``), and sessions stored
    so whose salon is no longer among them are judged again. Neither needs a write.
    """
    with connections["default"].cursor() as cursor:
        cursor.execute(_FLAG_MOVED_SQL, [disconnected])
        return {session_id for (session_id,) in cursor.fetchall()}


def _cleaned_since(since: datetime) -> set[str]:
    """Sessions an applied cleanup deleted rows of since ``since`` (running runs included)."""
    runs = CleanupRun.objects.filter(dry_run=False).filter(
        Q(finished_at__gte=since) | Q(finished_at__isnull=True)
    )
    touched: set[str] = set()
    for deleted in runs.values_list("rows_deleted", flat=True):
        touched.update(deleted or {})
    return touched


def _silence_thresholds() -> list[timedelta]:
    """The silence thresholds of the session rules (no key written for that long)."""
    names = ("stale_warning_after", "stale_failure_after")
    return [getattr(config, name)() for name in names if hasattr(config, name)]


def _crossed_thresholds(since: datetime, now: datetime) -> set[str]:
    """Sessions whose last write became older than a silence threshold since ``since``."""
    query = Q(pk__in=[])
    for threshold in _silence_thresholds():
        query |= Q(last_write__gt=since - threshold, last_write__lte=now - threshold)
    return set(SessionState.objects.filter(query).values_list("session_id", flat=True))


def _with_peers(dirty: set[str], logins: _StoredLogins) -> set[str]:
    """Add the stored sessions of the same salon, or sharing a login mark, as any dirty one."""
    if not dirty:
        return dirty
    peers = {twin for twin in (session_ids.describe(sid).twin for sid in dirty) if twin}
    held = SessionState.objects.filter(session_id__in=dirty).values_list(
        "login_marks", "phone_digits"
    )
    marks = {mark for hashes, _ in held for mark in hashes or ()}
    marks.update(NUMBER + digits for _, digits in held if digits)
    peers.update(logins(marks))
    return dirty | peers


# The stored sessions holding any of the given login marks: each state's few key hashes tested
# against the list hashed once (PostgreSQL hashes an ``= ANY`` of a constant array), in one
# pass over the states. The overlap operator ``&&`` compares every pair: 300 ms at 10,000.
_HOLDERS_SQL = """
    SELECT session_id, login_marks, phone_digits
      FROM observability_sessionstate AS state
     WHERE EXISTS (SELECT 1 FROM unnest(state.login_marks) AS mark WHERE mark = ANY(%(hashes)s))
        OR state.phone_digits = ANY(%(numbers)s)
"""


def _stored_holders(marks: set[str]) -> dict[str, list[str]]:
    """
    The stored sessions holding any of ``marks``, with all their marks.

    What ``sessions.list_sessions`` compares a filtered read's logins with, in place of
    reading every creds row of the bot (``sessions.MarkHolders``). The key hashes are in
    ``login_marks``; the number is ``phone_digits`` (stored once, never a second copy).
    """
    if not marks:
        return {}
    params = {
        "numbers": sorted(m.removeprefix(NUMBER) for m in marks if m.startswith(NUMBER)),
        "hashes": sorted(m for m in marks if not m.startswith(NUMBER)),
    }
    with connections["default"].cursor() as cursor:
        cursor.execute(_HOLDERS_SQL, params)
        rows = cursor.fetchall()
    return {
        sid: [*(held or ()), *([NUMBER + digits] if digits else [])] for sid, held, digits in rows
    }


class _StoredLogins:
    """
    :func:`_stored_holders` for one refresh, each mark looked up once.

    The dirty sessions' stored marks are looked up to widen the scope, then their fresh
    marks, mostly the same ones, to compare logins: each lookup scans every state.
    """

    def __init__(self) -> None:
        self._asked: set[str] = set()
        self._holders: dict[str, list[str]] = {}

    def __call__(self, marks: set[str]) -> dict[str, list[str]]:
        """The stored sessions holding any of ``marks``, with all their marks."""
        new = marks - self._asked
        if new:
            self._holders.update(_stored_holders(new))
            self._asked |= new
        return {sid: held for sid, held in self._holders.items() if not marks.isdisjoint(held)}


def _read(scope: set[str], now: datetime, logins: _StoredLogins) -> list[sessions.SessionHealth]:
    """
    The fresh facts of the sessions in ``scope`` (widened in place, see below), unjudged.

    :class:`detect.Detector` judges them, with their history (a verdict without it first
    would be thrown away: half the rules' calls, ~10 ms of a busy minute at 10,000 sessions,
    and 10,000 calls of a full recount). Their logins are compared with the
    stored marks of every other session. A session that now shares a login with one outside
    the scope (the creds were copied) widens it: both are read again, so each lists the other
    and neither keeps a stale verdict.
    """
    if not scope:
        return []
    fresh = sessions.list_sessions(now=now, session_ids=scope, holders=logins, judged=False)
    sharing = {
        other
        for health in fresh
        if health.facts is not None
        for other in (*health.facts.shares_login_with, *health.facts.shares_phone_with)
    }
    if sharing - scope:
        scope |= sharing
        fresh = sessions.list_sessions(now=now, session_ids=scope, holders=logins, judged=False)
    return fresh


# --- Storing ------------------------------------------------------------------------------------


def _columns(health: sessions.SessionHealth, facts: dict) -> dict:
    """The state's columns for one session's fresh health."""
    return {
        "salon_id": health.salon_id,
        "salon_title": health.salon_title or "",
        "salon_pk": health.salon_pk,
        "spelling": health.spelling.value if health.spelling else "",
        "platform": health.platform or "",
        "has_auth": health.has_auth,
        "is_duplicate": health.is_duplicate,
        "phone_masked": health.phone_masked or "",
        "phone_digits": phones.normalize(health.phone_digits) if health.phone_digits else "",
        "status": health.status.value,
        "severity": health.status.severity,
        "reason_count": len(health.reasons),
        "reasons": list(health.reasons),
        "total_keys": health.total_keys,
        "newest_key_write": health.newest_key_write,
        "last_write": health.last_write,
        "facts": facts,
        "bot_flagged_disconnected": bool(health.facts and health.facts.bot_connected is False),
        "login_marks": [m for m in health.login_marks if not m.startswith(NUMBER)],
    }


#: The fields of ``SessionHealth`` the history detectors may change after the facts are encoded.
_VERDICT_FIELDS = ("status", "reasons", "notes", "rules")

_UPDATED_FIELDS = [
    "salon_id",
    "salon_title",
    "salon_pk",
    "spelling",
    "platform",
    "has_auth",
    "is_duplicate",
    "phone_masked",
    "phone_digits",
    "status",
    "severity",
    "reason_count",
    "reasons",
    "total_keys",
    "newest_key_write",
    "last_write",
    "facts",
    "bot_flagged_disconnected",
    "login_marks",
    "status_since",
    "facts_changed_at",
]


def _store(
    fresh: list[sessions.SessionHealth],
    scope: set[str] | None,
    *,
    kind: str,
    now: datetime,
    started: float,
    mark: datetime,
    span: timedelta | None = None,
) -> RefreshResult:
    """Write the fresh states, their changes, the store's summary and the refresh record."""
    # Every state's version (one narrow read of two columns); whole states only where needed:
    # the fresh ones, the gone ones, and the unchanged ones this process has not decoded at
    # their stored version (all of them on its first refresh only). Building ten thousand
    # model instances every minute cost more than judging a few hundred sessions.
    stored = dict(SessionState.objects.values_list("session_id", "facts_changed_at"))
    fresh_by_id = {health.session_id: health for health in fresh}
    gone = (set(stored) if scope is None else scope & set(stored)) - set(fresh_by_id)
    unchanged = {
        sid: version
        for sid, version in stored.items()
        if sid not in fresh_by_id and sid not in gone
    }
    wanted = [sid for sid in stored if sid in fresh_by_id or sid in gone] + [
        sid for sid, version in unchanged.items() if _DECODED.get(sid, (None,))[0] != version
    ]
    existing = {
        state.session_id: state for state in SessionState.objects.filter(session_id__in=wanted)
    }

    created: list[SessionState] = []
    updated: list[SessionState] = []
    changes: list[SessionChange] = []
    detector = detect.Detector(list(fresh_by_id), now)
    judged: list[sessions.SessionHealth] = []
    for health in fresh:
        state = existing.get(health.session_id)
        facts = codec.encode(health)
        found = []
        if state is not None:
            found = fact_changes(
                state.facts,
                facts,
                old_phone=state.phone_digits,
                new_phone=health.phone_digits or "",
                span=span,
            )
        # Judged here only, by the fact rules and the history detectors together
        # (observability.rules.HISTORY_RULES): the sessions were read unjudged. The verdict's
        # fields are all that changes, so the facts are encoded once.
        health = detector.judge(health, found, state.status if state else "")
        judged.append(health)
        facts.update(codec.encode({name: getattr(health, name) for name in _VERDICT_FIELDS}))
        columns = _columns(health, facts)
        if state is None:
            created.append(
                SessionState(
                    session_id=health.session_id,
                    status_since=now,
                    first_seen=now,
                    facts_changed_at=now,
                    **columns,
                )
            )
            changes.append(
                change_row(
                    health.session_id, now, SessionChange.Kind.APPEARED, "", health.status.value
                )
            )
            continue
        if state.status != health.status.value:
            changes.append(
                change_row(
                    health.session_id,
                    now,
                    SessionChange.Kind.STATUS,
                    state.status,
                    health.status.value,
                    reasons=list(health.reasons),
                    data={"rules": list(health.rules)},  # the alert's cause
                )
            )
            state.status_since = now
        for change in found:
            changes.append(
                change_row(
                    health.session_id,
                    now,
                    change.kind,
                    health.status.value,
                    health.status.value,
                    detail=change.detail,
                    data={**change.data, "was": state.status},
                )
            )
        if any(getattr(state, name) != value for name, value in columns.items()):
            for name, value in columns.items():
                setattr(state, name, value)
            state.facts_changed_at = now
            updated.append(state)
    for session_id in sorted(gone):
        changes.append(
            change_row(session_id, now, SessionChange.Kind.GONE, existing[session_id].status, "")
        )

    changes = _coalesce_creds_rewrites(changes, now)
    SessionState.objects.bulk_create(created, batch_size=500)
    _update_states(updated)
    SessionState.objects.filter(session_id__in=gone).delete()
    SessionChange.objects.bulk_create(changes, batch_size=1000)
    detector.save()
    detect.forget(gone)

    every = judged + [_decoded(sid, version, existing) for sid, version in unchanged.items()]
    for sid in set(_DECODED) - set(unchanged):
        del _DECODED[sid]
    # The next refresh in this process reuses what this one judged, at its stored version.
    versions = {state.session_id: state.facts_changed_at for state in (*created, *updated)}
    for health in judged:
        version = versions.get(health.session_id) or existing[health.session_id].facts_changed_at
        _DECODED[health.session_id] = (version, health)
    store = codec.encode(sessions.summarize(every))
    store.pop("worst", None)  # read from the states, worst first, when shown
    snapshot = Snapshot.objects.create(
        taken_at=now,
        kind=kind,
        duration=0,
        sessions_refreshed=len(fresh),
        sessions_total=len(every),
        changes=len(changes),
        outcome=Snapshot.Outcome.SUCCEEDED,
        store=store,
        keys_seen_until=mark,
    )
    # Only the newest record carries the store's summary: history is the changes, not copies.
    Snapshot.objects.exclude(pk=snapshot.pk).filter(store__isnull=False).update(store=None)
    pruned = prune(now)
    duration = time.perf_counter() - started
    Snapshot.objects.filter(pk=snapshot.pk).update(duration=duration)
    return RefreshResult(
        SUCCEEDED,
        kind,
        now,
        duration,
        sessions_refreshed=len(fresh),
        sessions_total=len(every),
        changes=len(changes),
        pruned=pruned,
    )


#: Decoded states of this process, by session id, with the ``facts_changed_at`` they were
#: decoded at. Not a cache of answers (readers never see it): a state whose facts have not
#: changed decodes to the same ``SessionHealth``, so the refresh decodes only the states that
#: changed since its previous run in this process (the worker's), not all of them every minute.
_DECODED: dict[str, tuple[datetime, sessions.SessionHealth]] = {}


def _decoded(
    session_id: str, version: datetime, loaded: dict[str, SessionState]
) -> sessions.SessionHealth:
    """The stored health of an unchanged session, decoded once per version of its facts."""
    known = _DECODED.get(session_id)
    if known is not None and known[0] == version:
        return known[1]
    health = state_health(loaded[session_id])
    _DECODED[session_id] = (version, health)
    return health


#: Rows per UPDATE of :func:`_update_states` (one statement for a busy minute's few hundred).
UPDATE_BATCH = 1000


def _update_states(states: list[SessionState]) -> None:
    """
    Write the changed states: one UPDATE per :data:`UPDATE_BATCH` rows, from one JSON array.

    The rows travel as one ``jsonb`` document read back by ``jsonb_to_recordset`` with each
    column's own type (``field.db_type``), so PostgreSQL converts every value as an insert
    would: ISO timestamps with their offset, JSON arrays into ``text[]``, ``null`` into NULL
    (``login_marks`` NULL stays distinct from an empty array). One pipelined UPDATE per row,
    each a distinct literal statement parsed and planned (Django binds client-side), plus each
    field's ``get_db_prep_save``, took 0.2-0.3 s for a busy minute's 500 sessions.
    """
    if not states:
        return
    db = connections["default"]
    fields = [SessionState._meta.get_field(name) for name in _UPDATED_FIELDS]
    moments = {field.attname for field in fields if field.get_internal_type() == "DateTimeField"}
    columns = ", ".join(f"{field.column} {field.db_type(db)}" for field in fields)
    assignments = ", ".join(f"{field.column} = v.{field.column}" for field in fields)
    table = SessionState._meta.db_table
    sql = (
        f"UPDATE {table} AS s SET {assignments} "  # noqa: S608 - the model's own names
        f"FROM jsonb_to_recordset(%s::jsonb) AS v(session_id text, {columns}) "
        "WHERE s.session_id = v.session_id"
    )
    rows = []
    for state in states:
        row = {"session_id": state.session_id}
        for field in fields:
            value = getattr(state, field.attname)
            row[field.column] = codec.encode(value) if field.attname in moments else value
        rows.append(row)
    with db.cursor() as cursor:
        for start in range(0, len(rows), UPDATE_BATCH):
            cursor.execute(sql, [json.dumps(rows[start : start + UPDATE_BATCH])])


def _coalesce_creds_rewrites(changes: list[SessionChange], now: datetime) -> list[SessionChange]:
    """
    Fold each session's creds rewrite into its row of the same UTC day, if there is one.

    Baileys rewrites creds on every connect, so a reconnect loop would otherwise write a row
    a minute; one row per session and day with the count keeps the signal and the storage
    small. Returns the changes still to insert.
    """
    rewrites = {c.session_id: c for c in changes if c.kind == SessionChange.Kind.CREDS_REWRITTEN}
    if not rewrites:
        return changes
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    existing = SessionChange.objects.filter(
        kind=SessionChange.Kind.CREDS_REWRITTEN,
        session_id__in=list(rewrites),
        at__gte=day,
        at__lte=now,
    ).order_by("session_id", "-at")
    folded = []
    seen = set()
    for row in existing:
        if row.session_id in seen:
            continue
        seen.add(row.session_id)
        new = rewrites[row.session_id]
        last = new.detail.rsplit("last at ", 1)[-1][:5]
        row.detail = creds_detail(creds_count(row.detail) + 1, last)
        folded.append(row)
    SessionChange.objects.bulk_update(folded, ["detail"])
    return [c for c in changes if not (c in rewrites.values() and c.session_id in seen)]


def prune(now: datetime) -> int:
    """
    Remove history past ``snapshot_history_retention`` (changes, alert deliveries), old logs.

    The latest state of every session is never touched, nor the newest refresh record, nor
    each session's newest alert delivery: a recovery goes out when its FAIL's did
    (``observability.alerts.dispatch_transitions``), however long the FAIL lasted, and the
    newest delivery is where the transition stream resumes.

    Returns:
        How many change rows were removed.

    """
    cutoff = now - config.snapshot_history_retention()
    removed, _ = SessionChange.objects.filter(at__lt=cutoff).delete()
    newest_alerts = AlertDelivery.objects.order_by("session_id", "-change_id").distinct(
        "session_id"
    )
    AlertDelivery.objects.filter(at__lt=cutoff).exclude(pk__in=newest_alerts.values("pk")).delete()
    newest = Snapshot.objects.order_by("-taken_at", "-id").values_list("pk", flat=True)[:1]
    Snapshot.objects.filter(taken_at__lt=now - config.snapshot_log_retention()).exclude(
        pk__in=list(newest)
    ).delete()
    return removed
