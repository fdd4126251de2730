"""What the stored changes tell: a session's timeline, incidents, recovery times, flapping."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from observability import config
from observability.models import SessionChange, SessionState

FAIL = "FAIL"

#: Change kinds that carry a status (the others record a fact under an unchanged status).
STATUS_KINDS = (
    SessionChange.Kind.APPEARED,
    SessionChange.Kind.STATUS,
    SessionChange.Kind.GONE,
)

# A change that enters FAIL, or leaves it (recovering, or the session being removed).
_ENTERS_FAIL = Q(new_status=FAIL) & ~Q(old_status=FAIL)
_LEAVES_FAIL = Q(old_status=FAIL) & ~Q(new_status=FAIL)


@dataclass(frozen=True)
class Segment:
    """
    A stretch of time with one status, for the timeline's band.

    Attributes:
        status: OK, WARN, FAIL, or empty when the session was not stored then.
        start, end: the stretch.
        share: its part of the whole band (0 to 1).

    """

    status: str
    start: datetime
    end: datetime
    share: float

    @property
    def duration(self) -> timedelta:
        """How long the stretch lasted."""
        return self.end - self.start


@dataclass(frozen=True)
class Timeline:
    """One session's last days: the status band and every change, newest first."""

    session_id: str
    since: datetime
    until: datetime
    segments: tuple[Segment, ...]
    changes: tuple[SessionChange, ...]


def timeline(session_id: str, *, days: int, now: datetime | None = None) -> Timeline:
    """
    The status band and the changes of one session over the last ``days`` days.

    Two indexed queries (the session's changes in the window, and the last status change
    before it, which gives the status the band starts with).
    """
    now = now or timezone.now()
    since = now - timedelta(days=days)
    changes = tuple(
        SessionChange.objects.filter(session_id=session_id, at__gte=since, at__lte=now).order_by(
            "-at", "-id"
        )
    )
    before = (
        SessionChange.objects.filter(session_id=session_id, kind__in=STATUS_KINDS, at__lt=since)
        .order_by("-at", "-id")
        .values_list("new_status", flat=True)
        .first()
    )
    status_changes = [c for c in reversed(changes) if c.kind in STATUS_KINDS]
    if before is not None:
        current = before
    elif status_changes:
        current = status_changes[0].old_status
    else:
        state = SessionState.objects.filter(session_id=session_id).values_list("status", flat=True)
        current = state.first() or ""
    total = (now - since).total_seconds()
    segments: list[Segment] = []
    start = since
    for change in status_changes:
        if change.at > start:
            segments.append(
                Segment(current, start, change.at, (change.at - start).total_seconds() / total)
            )
        start, current = max(start, change.at), change.new_status
    if now > start:
        segments.append(Segment(current, start, now, (now - start).total_seconds() / total))
    return Timeline(session_id, since, now, tuple(segments), changes)


@dataclass(frozen=True)
class Incident:
    """
    A session entering FAIL and leaving it.

    Attributes:
        session_id: the session.
        start: when it entered FAIL.
        end: when it left FAIL (None while it still fails).
        duration: end (or now) minus start.
        ended_by: the status it left FAIL for (empty when the session was removed or ongoing).
        reasons: why it entered FAIL (the reasons of that status change), so an incident
            keeps its cause once the session recovered.

    """

    session_id: str
    start: datetime
    end: datetime | None
    duration: timedelta
    ended_by: str = ""
    reasons: tuple[str, ...] = ()

    @property
    def ongoing(self) -> bool:
        """The session still fails."""
        return self.end is None


def incidents(
    *, since: datetime, now: datetime | None = None, session_id: str | None = None
) -> list[Incident]:
    """
    Every incident that overlaps ``since``..``now``, newest first.

    Built from the status changes that enter or leave FAIL. A failure that began before the
    oldest kept change starts at the session's ``status_since``.
    """
    now = now or timezone.now()
    rows = SessionChange.objects.filter(_ENTERS_FAIL | _LEAVES_FAIL, at__lte=now)
    if session_id is not None:
        rows = rows.filter(session_id=session_id)
    rows = rows.order_by("session_id", "at", "id").values_list(
        "session_id", "at", "old_status", "new_status", "reasons"
    )
    found: list[Incident] = []
    open_since: dict[str, tuple[datetime, tuple[str, ...]]] = {}
    for sid, at, old_status, new_status, reasons in rows:
        if new_status == FAIL:
            open_since.setdefault(sid, (at, tuple(reasons or ())))
        elif old_status == FAIL and sid in open_since:
            start, why = open_since.pop(sid)
            found.append(Incident(sid, start, at, at - start, new_status, why))
    failing = SessionState.objects.filter(status=FAIL)
    if session_id is not None:
        failing = failing.filter(session_id=session_id)
    for sid, status_since, reasons in failing.values_list("session_id", "status_since", "reasons"):
        start, why = open_since.pop(sid, (status_since, ()))
        found.append(Incident(sid, start, None, now - start, "", why or tuple(reasons or ())))
    found = [i for i in found if i.end is None or i.end >= since]
    found.sort(key=lambda incident: (incident.start, incident.session_id), reverse=True)
    return found


def median_time_to_recovery(*, days: int = 30, now: datetime | None = None) -> timedelta | None:
    """The median duration of the incidents that ended in the last ``days`` days (None: none)."""
    now = now or timezone.now()
    since = now - timedelta(days=days)
    durations = [
        incident.duration.total_seconds()
        for incident in incidents(since=since, now=now)
        if incident.end is not None and incident.ended_by
    ]
    if not durations:
        return None
    return timedelta(seconds=statistics.median(durations))


def flapping(*, now: datetime | None = None) -> list[tuple[str, int]]:
    """
    Sessions that flap: status changed often within ``flapping_window``.

    Returns:
        ``(session id, status changes)`` for each session with at least
        ``flapping_min_changes`` of them, most changes first.

    """
    now = now or timezone.now()
    rows = (
        SessionChange.objects.filter(
            kind=SessionChange.Kind.STATUS, at__gt=now - config.flapping_window(), at__lte=now
        )
        .values("session_id")
        .annotate(changes=Count("id"))
        .filter(changes__gte=config.flapping_min_changes())
        .order_by("-changes", "session_id")
        .values_list("session_id", "changes")
    )
    return list(rows)


def failing_by_duration(
    bounds: tuple[timedelta, ...], *, now: datetime | None = None
) -> list[tuple[timedelta | None, int]]:
    """
    How many sessions fail, grouped by how long they have failed.

    Args:
        bounds: upper bounds of the buckets, ascending; a last bucket holds the rest.
        now: the moment to measure from.

    Returns:
        ``(upper bound, count)`` per bucket, the last with None as its bound.

    """
    now = now or timezone.now()
    counts = [0] * (len(bounds) + 1)
    for since in SessionState.objects.filter(status=FAIL).values_list("status_since", flat=True):
        age = now - since
        index = next((i for i, bound in enumerate(bounds) if age < bound), len(bounds))
        counts[index] += 1
    return [(bound, counts[i]) for i, bound in enumerate((*bounds, None))]
