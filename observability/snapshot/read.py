"""Read the stored snapshot: the one source of session health for pages, checks and alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from observability import config, moments, sessions
from observability.exceptions import SessionNotFound, SnapshotMissing
from observability.models import SessionState, Snapshot
from observability.sessions import SessionHealth, Status, StoreHealth
from observability.snapshot import codec


def latest() -> Snapshot | None:
    """The newest successful snapshot (the one every page shows), or None before the first."""
    return (
        Snapshot.objects.filter(outcome=Snapshot.Outcome.SUCCEEDED)
        .order_by("-taken_at", "-id")
        .first()
    )


#: A session first seen this recently is "new" (and after the baseline: :func:`new_after`).
NEW_WITHIN = timedelta(hours=24)


def baseline() -> datetime | None:
    """
    The moment of the first successful snapshot on record: when observation began.

    Every session that snapshot stored was there before anyone looked: it is first observed
    then, not new, and its status is known since then at the latest, not changed then. Refresh
    records are kept for ``snapshot_log_retention`` (2 days by default, longer than
    :data:`NEW_WITHIN`), so the baseline is on record for as long as it decides anything.
    """
    return (
        Snapshot.objects.filter(outcome=Snapshot.Outcome.SUCCEEDED)
        .order_by("taken_at", "id")
        .values_list("taken_at", flat=True)
        .first()
    )


def new_after(now: datetime | None = None) -> datetime:
    """
    The moment after which a first sighting is "new" (and a status since then "changed").

    The later of 24 hours ago and the baseline (:func:`baseline`): "new" means first seen by a
    snapshot after the store already had one, so the very first snapshot ever taken marks no
    session new (nor any status changed), however recent it is.
    """
    now = now or timezone.now()
    window = now - NEW_WITHIN
    first = baseline()
    return window if first is None else max(window, first)


def state_health(state: SessionState) -> SessionHealth:
    """A stored state as the ``SessionHealth`` it was computed as (phone digits included)."""
    return codec.decode(SessionHealth, state.facts, phone_digits=state.phone_digits or None)


def _age_text(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


@dataclass(frozen=True)
class Freshness:
    """
    How old the stored snapshot is, and whether that is a problem.

    Attributes:
        snapshot: the newest successful snapshot (None before the first).
        age: how long ago it was taken (None before the first).
        status: OK; WARN past ``snapshot_stale_warning``; FAIL past ``snapshot_stale_failure``
            or when there is none.
        failed_since: the newest refresh that failed after it, if any (its ``error`` says why).

    """

    snapshot: Snapshot | None
    age: timedelta | None
    status: Status
    failed_since: Snapshot | None

    @property
    def message(self) -> str:
        """One sentence for a page or a health check (no secret, no phone)."""
        # The moment the age was measured at, so the message's ages agree with ``age``.
        now = self.snapshot.taken_at + self.age if self.snapshot is not None else None
        if self.snapshot is None:
            text = f"No session health snapshot yet: {SnapshotMissing.what_to_do}"
        else:
            text = (
                f"Session health as of {moments.text(self.snapshot.taken_at, now)} "
                f"({self.snapshot.kind})"
            )
            if self.status is not Status.OK:
                text += (
                    f", older than {_age_text(config.snapshot_stale_warning())}: check that the "
                    "django-q2 worker runs the snapshot schedule"
                )
            text += "."
        if self.failed_since is not None:
            text += (
                f" The last refresh, at {moments.text(self.failed_since.taken_at, now)}, failed: "
                f"{self.failed_since.error}"
            )
        return text


def freshness(now: datetime | None = None) -> Freshness:
    """
    The stored snapshot's age and its verdict.

    One indexed single-row read while the newest refresh succeeded (the usual case, polled by
    every monitor through ``/health/``); a second one for the last success after a failure.
    """
    now = now or timezone.now()
    newest = Snapshot.objects.order_by("-taken_at", "-id").first()
    failed = None
    snapshot = newest
    if newest is not None and newest.outcome != Snapshot.Outcome.SUCCEEDED:
        failed = newest
        snapshot = latest()
    if snapshot is None:
        return Freshness(None, None, Status.FAIL, failed)
    age = now - snapshot.taken_at
    if age >= config.snapshot_stale_failure():
        status = Status.FAIL
    elif age >= config.snapshot_stale_warning():
        status = Status.WARN
    else:
        status = Status.OK
    return Freshness(snapshot, age, status, failed)


def store_health(snapshot: Snapshot | None = None) -> StoreHealth:
    """
    The store's health as of the newest snapshot, worst sessions included.

    Raises:
        SnapshotMissing: no snapshot has been taken yet.

    """
    snapshot = snapshot or latest()
    if snapshot is None or snapshot.store is None:
        raise SnapshotMissing
    worst_states = SessionState.objects.all()[: sessions.WORST_COUNT]
    worst = tuple(state_health(state) for state in worst_states)
    return codec.decode(StoreHealth, snapshot.store, worst=worst)


def session_health(session_id: str) -> SessionHealth:
    """
    One session's health as of the newest snapshot.

    Raises:
        SessionNotFound: the snapshot holds no session under this id.

    """
    state = SessionState.objects.filter(session_id=session_id).first()
    if state is None:
        raise SessionNotFound(f"No WhatsApp session is stored under {session_id[:60]!r}.")
    return state_health(state)


def all_health() -> list[SessionHealth]:
    """Every session's health as of the newest snapshot, worst first."""
    return [state_health(state) for state in SessionState.objects.all()]
