"""
Demo history: what the every-minute refresh would have recorded, so the demo shows each detector.

The demo's bot rows (``observability_demo.demo_data``) are one moment; the history detectors
(``observability.rules.HISTORY_RULES``) need the refreshes before it. For five healthy demo
sessions this writes, in the project's own database, the history that the refresh records
when the failure happens (change rows with their numbers, a learned rhythm, recent logins),
so the demo's first snapshot catches one session per detector. In the bot's rows it only
rewrites the creds of the looping and the storming sessions (as each login and each pre-key
does), so their auth row reads written now:

- reconnect loop: logins in the last three minutes, the last one now (they pass after ten:
  the timeline and the overview's incidents keep it, with its cause);
- decryption failures: twelve pre-keys created one at a time in the last minutes, up to the
  creds' ``nextPreKeyId`` (likewise);
- session rows lost: most ``session`` rows gone twenty minutes ago (a WARN for the hour);
- paired again: a new device number two hours ago while the session worked (a WARN for a day);
- silence against the rhythm: a salon that writes every few minutes, silent since its last
  write (a FAIL until it writes again).

Then, once the demo's first snapshot is taken, :func:`seed_state_history` gives it a past: every
session seen for weeks, each status since the moment its fault began, a few ended incidents.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models.functions import Now

from observability import config, sessions
from observability.models import (
    RHYTHM_WEEKS,
    SessionChange,
    SessionRhythm,
    SessionState,
    WhatsAppAuth,
)
from observability.snapshot import detect
from observability.snapshot.changes import change_row, creds_detail

#: The detectors shown, in the order the sessions are given.
DETECTORS = (
    "reconnect_loop",
    "decryption_failures",
    "session_rows_lost",
    "paired_again",
    "silence_rhythm",
)

Kind = SessionChange.Kind


def seed_demo_history(session_ids: list[str], now: datetime) -> dict[str, str]:
    """
    Write the history that makes each detector catch one of ``session_ids``.

    Args:
        session_ids: healthy, paired sessions (at least as many as :data:`DETECTORS`).
        now: the moment the demo starts at.

    Returns:
        The detector each session was given.

    """
    given = dict(zip(session_ids, DETECTORS, strict=False))
    loop, storm, lost, paired, silent = session_ids[: len(DETECTORS)]
    rhythms = [
        _rhythm(loop, now, logins=[now - timedelta(minutes=m) for m in (2, 1, 0)]),
        _rhythm(silent, now, busy=True),
    ]
    SessionRhythm.objects.filter(session_id__in=[loop, silent]).delete()
    SessionRhythm.objects.bulk_create(rhythms)
    # The rows the refresh records as these facts move (a fact change carries the session's
    # status after it on both sides; creds rewrites are one row a day with their count).
    logins = sorted(rhythms[0].recent_logins)
    changes = [
        change_row(
            loop,
            logins[0],
            Kind.CREDS_REWRITTEN,
            "FAIL",
            "FAIL",
            detail=creds_detail(len(logins), logins[-1].astimezone(UTC).strftime("%H:%M")),
        )
    ]
    # Three pre-keys a minute for four minutes, ending at the creds' nextPreKeyId.
    (health,) = sessions.list_sessions(session_ids=[storm])
    last = getattr(health.facts, "next_pre_key_id", None) or 905
    changes += [
        change_row(
            storm,
            now - timedelta(minutes=minute),
            Kind.PREKEY_ONE_BY_ONE,
            "FAIL",
            "FAIL",
            detail=f"nextPreKeyId {last - 3 * minute - 3} → {last - 3 * minute}",
            data={
                "old": last - 3 * minute - 3,
                "new": last - 3 * minute,
                "was": "OK" if minute == 3 else "FAIL",
            },
        )
        for minute in (3, 2, 1, 0)
    ]
    changes.append(
        change_row(
            lost,
            now - timedelta(minutes=20),
            Kind.SESSION_ROWS_LOST,
            "WARN",
            "WARN",
            detail="'session' rows 40 → 6",
            data={"old": 40, "new": 6, "was": "OK"},
        )
    )
    changes.append(
        change_row(
            paired,
            now - timedelta(hours=2),
            Kind.PAIRED_AGAIN,
            "WARN",
            "WARN",
            detail="a new device number in creds.me.id (3 → 7)",
            data={"was": "OK"},
        )
    )
    SessionChange.objects.bulk_create(changes)
    # Baileys rewrites the creds at each login and with each pre-key it creates (the table's
    # trigger stamps updated_at): the auth rows say so, as the timeline does.
    WhatsAppAuth.objects.filter(company_id__in=[loop, storm]).update(updated_at=Now())
    return given


def _rhythm(
    session_id: str, now: datetime, *, logins: list[datetime] = (), busy: bool = False
) -> SessionRhythm:
    """A rhythm observed for four weeks: quiet, or 40 minutes with a write in every hour."""
    rhythm = detect.new_rhythm(session_id, now - timedelta(weeks=RHYTHM_WEEKS))
    rhythm.recent_logins = list(logins)
    rhythm.last_write = now - timedelta(hours=3)
    per_hour = 40 if busy else 1
    moment = now - timedelta(weeks=RHYTHM_WEEKS)
    while moment < now:
        detect.count_write(rhythm, moment, per_hour)
        moment += timedelta(hours=1)
    return rhythm


def pick(healths) -> list[str]:
    """
    Five healthy, paired sessions for :func:`seed_demo_history` (None when there are fewer).

    The one written longest ago plays the silent salon (its silence is long already); the
    others are taken in id order.
    """
    ok = [h for h in healths if h.status == "OK" and h.paired and h.last_write is not None]
    if len(ok) < len(DETECTORS):
        return []
    silent = min(ok, key=lambda h: h.last_write)
    others = sorted(h.session_id for h in ok if h is not silent)[: len(DETECTORS) - 1]
    return [*others, silent.session_id]


# --- The sessions' past: seen for weeks, each status since it began ---------------------------

#: How far back the demo's session history starts (the session page's 30-day band is full).
HISTORY_DAYS = 35

#: How long before the demo started each detector's session left OK (its seeded events above).
DETECTOR_SINCE = {
    "reconnect_loop": timedelta(minutes=2),
    "decryption_failures": timedelta(minutes=3),
    "session_rows_lost": timedelta(minutes=20),
    "paired_again": timedelta(hours=2),
}

#: Healthy sessions given a past incident (days ago it began, hours it lasted), so the overview
#: shows ended incidents and a median time to recovery.
PAST_INCIDENTS = ((12, 5), (6, 2), (2, 9))
PAST_REASON = (
    "Disconnected: no key written for 48 hours (nor creds); the salon's WhatsApp was "
    "disconnected until it was reconnected (demo history)."
)


def seed_state_history(now: datetime, given: dict[str, str] | None = None) -> int:
    """
    Give the demo's first snapshot a past, so the live snapshots after it continue a history.

    The first snapshot stores every session as first seen at that moment; the demo's bot rows
    say more: each session has been there for weeks and its fault began with a write the rows
    show. This rewrites, in the project's own database only, what the every-minute refresh
    would have recorded had it run for :data:`HISTORY_DAYS`: each session first seen then,
    OK until its fault began (its last write; the silence threshold past it; a detector's
    seeded events), and three healthy sessions with an incident that ended. A session's
    ``status_since`` becomes the moment of its last status change, so no session reads "new"
    or "since 0 min", and the session page's 7- and 30-day bands show the story.

    Args:
        now: the moment of the demo's first snapshot.
        given: the detector each session was given (:func:`seed_demo_history`).

    Returns:
        How many sessions were given a past.

    """
    given = given or {}
    start = now - timedelta(days=HISTORY_DAYS)
    states = list(SessionState.objects.order_by("session_id"))
    SessionChange.objects.filter(kind=Kind.APPEARED, at__gte=start).delete()
    changes: list[SessionChange] = []
    healthy = [s for s in states if s.status == "OK" and s.session_id not in given]
    for state in states:
        since = _fault_began(state, given.get(state.session_id), now)
        since = start if since is None else min(max(since, start), now)
        first = "OK" if since > start else state.status
        changes.append(change_row(state.session_id, start, Kind.APPEARED, "", first))
        if since > start:
            rules = (state.facts or {}).get("rules", [])
            changes.append(
                change_row(
                    state.session_id,
                    since,
                    Kind.STATUS,
                    "OK",
                    state.status,
                    reasons=state.reasons or (),
                    data={"rules": list(rules)} if rules else None,
                )
            )
        state.first_seen = start
        state.status_since = since
    for state, (days_ago, hours) in zip(healthy, PAST_INCIDENTS, strict=False):
        began = now - timedelta(days=days_ago)
        changes.append(
            change_row(state.session_id, began, Kind.STATUS, "OK", "FAIL", reasons=[PAST_REASON])
        )
        ended = began + timedelta(hours=hours)
        changes.append(change_row(state.session_id, ended, Kind.STATUS, "FAIL", "OK"))
        state.status_since = ended
    SessionState.objects.bulk_update(states, ["first_seen", "status_since"], batch_size=500)
    SessionChange.objects.bulk_create(changes, batch_size=1000)
    return len(states)


def _fault_began(state: SessionState, detector: str | None, now: datetime) -> datetime | None:
    """When the session's current status began, as its rows tell (None: before the history)."""
    if state.status == "OK":
        return None
    if detector in DETECTOR_SINCE:
        return now - DETECTOR_SINCE[detector]
    rules = (state.facts or {}).get("rules", [])
    if state.last_write is None:
        return None
    if detector == "silence_rhythm" or (rules and rules[0] == "silence"):
        threshold = (
            config.stale_failure_after()
            if state.status == "FAIL"
            else config.stale_warning_after()
        )
        if detector == "silence_rhythm":
            threshold = timedelta(0)
        return state.last_write + threshold
    return state.last_write
