"""
History for the detectors: each session's recent changes and its rhythm, learned by the refresh.

The history detectors themselves are rules (``observability.rules.HISTORY_RULES``); this module
gathers what they read from the stored snapshot (``SessionChange`` rows of the facts that moved,
``SessionRhythm`` histograms), keeps the rhythms up to date as the refresh sees writes, and
says which sessions must be judged again although nothing was written (a silence growing
unlikely, a detector's window passing). Every function takes the clock as ``now``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from django.db import connections

from observability import config, rules
from observability.models import (
    HOURS_PER_WEEK,
    RECENT_LOGINS,
    RHYTHM_WEEKS,
    SessionChange,
    SessionRhythm,
)
from observability.sessions import SessionHealth

#: Week numbers count from this Monday (UTC), so a week starts on Monday 00:00 UTC.
EPOCH_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)
WEEK = timedelta(weeks=1)
HOUR = timedelta(hours=1)

#: How long each change kind stays within its detector's window.
_WINDOWS = {
    rules.CREDS_REWRITTEN: config.reconnect_window,
    rules.CONNECTED_AGAIN: config.reconnect_again_within,
    rules.PREKEY_ONE_BY_ONE: config.decrypt_window,
    rules.PREKEYS_TOPPED_UP: config.reconnect_window,
    rules.SESSION_ROWS_LOST: config.rows_lost_window,
    rules.PAIRED_AGAIN: config.paired_again_window,
}


def week_number(moment: datetime) -> int:
    """The week a moment falls in (weeks start on Monday 00:00 UTC)."""
    return (moment - EPOCH_MONDAY) // WEEK


def _hours(moment: datetime) -> float:
    """Hours since :data:`EPOCH_MONDAY`."""
    return (moment - EPOCH_MONDAY).total_seconds() / 3600


def new_rhythm(session_id: str, now: datetime) -> SessionRhythm:
    """An empty rhythm, observed from ``now`` on."""
    return SessionRhythm(
        session_id=session_id,
        observed_since=now,
        weeks=[-1] * RHYTHM_WEEKS,
        counts=[0] * (RHYTHM_WEEKS * HOURS_PER_WEEK),
    )


def count_write(rhythm: SessionRhythm, moment: datetime, minutes: int = 1) -> int | None:
    """
    Add minutes with a write at ``moment``'s hour to the rhythm (week slots reused in turn).

    The one home of the rule; :meth:`Detector.save` mirrors it in SQL (a slot reused: its week
    set, its 168 counters zeroed and the counted one set to the value computed here).

    Returns:
        The index in ``counts`` of the counter added to; None when the write was not counted
        (older than the week its slot holds).

    """
    week = week_number(moment)
    slot = week % RHYTHM_WEEKS
    if rhythm.weeks[slot] != week:
        if rhythm.weeks[slot] > week:
            return None  # older than anything the slot holds: forgotten already
        rhythm.weeks[slot] = week
        base = slot * HOURS_PER_WEEK
        rhythm.counts[base : base + HOURS_PER_WEEK] = [0] * HOURS_PER_WEEK
    index = slot * HOURS_PER_WEEK + rules.hour_index(moment)
    rhythm.counts[index] = min(rhythm.counts[index] + minutes, 32767)
    return index


def rates(rhythm: SessionRhythm | None, now: datetime) -> tuple[float, ...] | None:
    """
    The expected minutes with a write per hour, for each hour of the week (None: too little).

    Over the last ``RHYTHM_WEEKS`` calendar weeks (the current one included, as far as it
    went) and only since the session was first observed: each hour's count divided by how
    many hours of that kind were observed, then the lowest of it and the hours beside it (a
    salon that opens an hour later one day is not a surprise).
    """
    if rhythm is None or now - rhythm.observed_since < config.rhythm_min_history():
        return None
    current = week_number(now)
    counts = [0.0] * HOURS_PER_WEEK
    for slot, week in enumerate(rhythm.weeks):
        if current - RHYTHM_WEEKS < week <= current:
            base = slot * HOURS_PER_WEEK
            for hour in range(HOURS_PER_WEEK):
                counts[hour] += rhythm.counts[base + hour]
    if sum(counts) < config.rhythm_min_writes():
        return None
    start = max(rhythm.observed_since, EPOCH_MONDAY + (current - RHYTHM_WEEKS + 1) * WEEK)
    start_h, now_h = _hours(start), _hours(now)
    observed = [0.0] * HOURS_PER_WEEK
    for week in range(current - RHYTHM_WEEKS + 1, current + 1):
        monday = week * HOURS_PER_WEEK
        for hour in range(HOURS_PER_WEEK):
            begin = monday + hour
            overlap = min(begin + 1, now_h) - max(begin, start_h)
            if overlap > 0:
                observed[hour] += overlap
    # Each hour's own rate, then the lowest of it and its neighbours': a salon that opens or
    # closes an hour off its usual time is not a surprise, a silence at its busiest hours is.
    own = [
        counts[hour] / observed[hour] if observed[hour] else 0.0 for hour in range(HOURS_PER_WEEK)
    ]
    smoothed = [
        min(own[(hour - 1) % HOURS_PER_WEEK], own[hour], own[(hour + 1) % HOURS_PER_WEEK])
        for hour in range(HOURS_PER_WEEK)
    ]
    return tuple(smoothed)


#: The hours before the last write that tell the day's pace (busier or calmer than usual).
PACE_SPAN = timedelta(hours=3)


def pace(
    rhythm: SessionRhythm, learned: tuple[float, ...], last_write: datetime
) -> tuple[float, float]:
    """
    How busy the session was before its last write: minutes with a write counted, and expected.

    Counted in the hours up to the last write, against what the rhythm expects for them. On a
    calm day a silence is less surprising, on a busy day more:
    ``rules.silence_probability`` weighs the two (with ``silence_day_prior``).
    """
    start = (last_write - PACE_SPAN).replace(minute=0, second=0, microsecond=0)
    observed = 0
    moment = start
    while moment <= last_write:
        week = week_number(moment)
        slot = week % RHYTHM_WEEKS
        if rhythm.weeks[slot] == week:
            observed += rhythm.counts[slot * HOURS_PER_WEEK + rules.hour_index(moment)]
        moment += HOUR
    return float(observed), rules.expected_writes(learned, start, last_write)


def _events(session_ids: Iterable[str], now: datetime) -> dict[str, list[rules.HistoryEvent]]:
    """The recorded changes the detectors read, per session, oldest first."""
    events: dict[str, list[rules.HistoryEvent]] = defaultdict(list)
    ids = list(session_ids)
    if not ids:
        return events
    # Creds rewrites are read from the rhythm's recent logins (change rows count them by day).
    kinds = [kind for kind in rules.HISTORY_KINDS if kind != rules.CREDS_REWRITTEN]
    rows = (
        SessionChange.objects.filter(
            session_id__in=ids,
            kind__in=kinds,
            at__gt=now - rules.history_window(),
            at__lte=now,
        )
        .order_by("at", "id")
        .values_list("session_id", "at", "kind", "data")
    )
    for session_id, at, kind, data in rows:
        events[session_id].append(_event(at, kind, data or {}))
    return events


def _event(at: datetime, kind: str, data: dict) -> rules.HistoryEvent:
    return rules.HistoryEvent(
        at=at, kind=kind, old=data.get("old"), new=data.get("new"), was=data.get("was", "")
    )


class Detector:
    """
    The history side of one refresh: load, judge, learn, in that order.

    Args:
        session_ids: the sessions the refresh judges afresh.
        now: the refresh's clock.

    """

    def __init__(self, session_ids: Sequence[str], now: datetime) -> None:
        self.now = now
        self.rhythms = SessionRhythm.objects.in_bulk(list(session_ids))
        self.events = _events(session_ids, now)
        self._new: dict[str, SessionRhythm] = {}
        # Per rhythm already stored: the counter counted (if any) and whether its slot rolled.
        self._changed: dict[str, tuple[SessionRhythm, int | None, bool]] = {}

    def judge(
        self,
        health: SessionHealth,
        found: Iterable,
        was: str,
    ) -> SessionHealth:
        """
        The session's health with the history detectors applied.

        Args:
            health: the fresh health; its verdict is replaced (the refresh reads it unjudged:
                ``sessions.list_sessions(judged=False)``).
            found: the fact changes this refresh records (``changes.Change``), part of the
                history from now on.
            was: the status stored before this refresh ("" for a new session).

        """
        if health.facts is None:
            return health
        rhythm = self.rhythms.get(health.session_id)
        if rhythm is None:
            rhythm = new_rhythm(health.session_id, self.now)
            self.rhythms[health.session_id] = rhythm
        found = [change for change in found if change.kind in rules.HISTORY_KINDS]
        kinds = {change.kind for change in found}
        pre_keys = kinds & {rules.PREKEY_ONE_BY_ONE, rules.PREKEYS_TOPPED_UP}
        if rules.CREDS_REWRITTEN in kinds and not pre_keys:
            rhythm.recent_logins = [*rhythm.recent_logins, self.now][-RECENT_LOGINS:]
        events = list(self.events.get(health.session_id, ()))
        events += [
            _event(self.now, change.kind, {**change.data, "was": was})
            for change in found
            if change.kind != rules.CREDS_REWRITTEN
        ]
        events += [
            rules.HistoryEvent(self.now, rules.CONNECTED_AGAIN, old=change.data["after"])
            for change in found
            if change.kind == rules.CREDS_REWRITTEN and "after" in change.data
        ]
        events += [
            rules.HistoryEvent(at, rules.CREDS_REWRITTEN)
            for at in rhythm.recent_logins
            if self.now - rules.history_window() < at <= self.now
        ]
        events.sort(key=lambda event: event.at)
        learned = rates(rhythm, self.now)
        today = (0.0, 0.0)
        if learned is not None and health.last_write is not None:
            today = pace(rhythm, learned, health.last_write)
        history = rules.SessionHistory(tuple(events), learned, today)
        judgement = rules.judge(health.facts, self.now, history)
        self._learn(health, history)
        return dataclasses.replace(
            health,
            status=judgement.status,
            reasons=judgement.reasons,
            notes=judgement.notes,
            rules=judgement.rules,
        )

    def _learn(self, health: SessionHealth, history: rules.SessionHistory) -> None:
        """Count the session's new write and note when to judge it again without one."""
        rhythm = self.rhythms[health.session_id]
        before = (list(rhythm.weeks), rhythm.last_write, rhythm.recheck_at)
        counted = None
        last = health.last_write
        if last is not None and (rhythm.last_write is None or last > rhythm.last_write):
            if rhythm.last_write is not None or last >= rhythm.observed_since:
                counted = count_write(rhythm, min(last, self.now))
            rhythm.last_write = last
        moments = [
            event.at + _WINDOWS[event.kind]() + timedelta(seconds=1) for event in history.events
        ]
        silence = rules.next_silence_change(health.facts, history, self.now)
        if silence is not None:
            moments.append(silence)
        later = [moment for moment in moments if moment > self.now]
        rhythm.recheck_at = min(later) if later else None
        if rhythm._state.adding:
            self._new[health.session_id] = rhythm
        if (
            counted is not None
            or (rhythm.last_write, rhythm.recheck_at) != before[1:]
            or (rhythm.recent_logins and rhythm.recent_logins[-1] == self.now)
        ):
            self._changed[health.session_id] = (rhythm, counted, rhythm.weeks != before[0])

    def save(self) -> None:
        """
        Store the rhythms touched by :meth:`judge` (inside the refresh's transaction).

        No statement sends the 672 counters: a new rhythm is inserted with its counters zeroed
        in SQL (as :func:`new_rhythm` makes them) and its weeks as counted; a stored rhythm's
        week slot reused has its week set and its 168 counters zeroed in SQL, then the counter
        counted set (as :func:`count_write` does); any other write counted is one counter
        incremented in SQL. Rewriting the ~500 rhythms whose slot rolled over in a busy minute
        whole, quoted client-side, took 0.12-0.43 s of a refresh at 10,000 sessions.
        """
        new = list(self._new.values())
        rolled, counted, moved = [], [], []
        for rhythm, index, roll in self._changed.values():
            if index is None:
                if not rhythm._state.adding:  # a new rhythm's INSERT holds all of it
                    moved.append(rhythm)
            elif roll and not rhythm._state.adding:
                rolled.append((rhythm, index))
            else:
                counted.append((rhythm, index))
        table = SessionRhythm._meta.db_table
        with connections["default"].cursor() as cursor:
            # Plain pipelined statements, psycopg adapting the lists: Django's bulk_create
            # prepares each of the 672 counters through ArrayField (28 s for 10,000 new
            # rhythms, a first snapshot's), and bulk_update compiles a CASE per row and field.
            if new:
                cursor.executemany(
                    f"INSERT INTO {table} (session_id, observed_since, last_write, weeks, "  # noqa: S608
                    "counts, recheck_at, recent_logins) VALUES (%s, %s, %s, %s, "
                    "array_fill(0::smallint, ARRAY[%s]), %s, %s)",
                    [
                        (
                            r.session_id,
                            r.observed_since,
                            r.last_write,
                            r.weeks,
                            len(r.counts),
                            r.recheck_at,
                            r.recent_logins,
                        )
                        for r in new
                    ],
                )
                for row in new:
                    row._state.adding = False
            if rolled:
                # SQL arrays count from 1: slot s holds counters s * 168 + 1 to (s + 1) * 168.
                # PostgreSQL applies assignments to parts of one array in the order written:
                # the slot zeroed, then the counter counted given its value (count_write's).
                cursor.executemany(
                    f"UPDATE {table} SET weeks[%s] = %s, "  # noqa: S608
                    "counts[%s:%s] = array_fill(0::smallint, ARRAY[%s]), counts[%s] = %s, "
                    "last_write = %s, recheck_at = %s, recent_logins = %s WHERE session_id = %s",
                    [
                        (
                            slot + 1,
                            r.weeks[slot],
                            slot * HOURS_PER_WEEK + 1,
                            (slot + 1) * HOURS_PER_WEEK,
                            HOURS_PER_WEEK,
                            i + 1,
                            r.counts[i],
                            r.last_write,
                            r.recheck_at,
                            r.recent_logins,
                            r.session_id,
                        )
                        for r, i in rolled
                        for slot in [i // HOURS_PER_WEEK]
                    ],
                )
            if counted:
                cursor.executemany(
                    f"UPDATE {table} SET counts[%s] = least(counts[%s] + 1, 32767), "  # noqa: S608
                    "last_write = %s, recheck_at = %s, recent_logins = %s WHERE session_id = %s",
                    [
                        (i + 1, i + 1, r.last_write, r.recheck_at, r.recent_logins, r.session_id)
                        for r, i in counted
                    ],
                )
            if moved:
                cursor.executemany(
                    f"UPDATE {table} SET last_write = %s, recheck_at = %s, "  # noqa: S608
                    "recent_logins = %s WHERE session_id = %s",
                    [(r.last_write, r.recheck_at, r.recent_logins, r.session_id) for r in moved],
                )


def due(now: datetime) -> set[str]:
    """Sessions a history verdict may have changed for without any write (judge them again)."""
    return set(
        SessionRhythm.objects.filter(recheck_at__lte=now).values_list("session_id", flat=True)
    )


def forget(session_ids: Iterable[str]) -> None:
    """Drop the rhythms of sessions no longer stored."""
    SessionRhythm.objects.filter(session_id__in=list(session_ids)).delete()
