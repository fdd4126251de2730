"""
Demo history: what the every-minute refresh would have recorded, so the demo shows each detector.

The demo's bot rows (``observability_demo.demo_data``) are one moment; the history detectors
(``observability.rules.HISTORY_RULES``) need the refreshes before it. For five healthy demo
sessions this writes, in the project's own database, the history that the refresh records
when the failure happens (change rows with their numbers, a learned rhythm, recent logins),
so the demo's first snapshot catches one session per detector:

- reconnect loop: logins in the last three minutes (they pass after ten: the timeline keeps
  the incident);
- decryption failures: twelve pre-keys created one at a time in the last minutes;
- session rows lost: most ``session`` rows gone twenty minutes ago (a WARN for the hour);
- paired again: a new device number two hours ago while the session worked (a WARN for a day);
- silence against the rhythm: a salon that writes every few minutes, silent since its last
  write (a FAIL until it writes again).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from observability.models import RHYTHM_WEEKS, SessionChange, SessionRhythm
from observability.snapshot import detect

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
        _rhythm(loop, now, logins=[now - timedelta(minutes=m) for m in (3, 2, 1)]),
        _rhythm(silent, now, busy=True),
    ]
    SessionRhythm.objects.filter(session_id__in=[loop, silent]).delete()
    SessionRhythm.objects.bulk_create(rhythms)
    changes = [
        SessionChange(
            session_id=storm,
            at=now - timedelta(minutes=minute),
            kind=Kind.PREKEY_ONE_BY_ONE,
            detail=f"nextPreKeyId {900 + 5 - minute} → {900 + 5 - minute + 3}",
            data={"old": 900 + 5 - minute, "new": 900 + 5 - minute + 3, "was": "OK"},
        )
        for minute in (4, 3, 2, 1)
    ]
    changes.append(
        SessionChange(
            session_id=lost,
            at=now - timedelta(minutes=20),
            kind=Kind.SESSION_ROWS_LOST,
            detail="'session' rows 40 → 6",
            data={"old": 40, "new": 6, "was": "OK"},
        )
    )
    changes.append(
        SessionChange(
            session_id=paired,
            at=now - timedelta(hours=2),
            kind=Kind.PAIRED_AGAIN,
            detail="a new device number in creds.me.id (3 → 7)",
            data={"was": "OK"},
        )
    )
    SessionChange.objects.bulk_create(changes)
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
