"""
The stored snapshot of session health: the one place pages, checks and alerts read it from.

- ``refresh`` (django-q2 every minute, ``manage.py take_snapshot``) judges the sessions
  through ``observability.sessions`` and stores each one's latest state and its changes;
- ``read`` answers every reader from what was stored, with the snapshot's age;
- ``history`` turns the changes into timelines, incidents and flapping sessions.
"""

from __future__ import annotations

from observability.snapshot.read import (
    NEW_WITHIN,
    Freshness,
    all_health,
    baseline,
    freshness,
    latest,
    new_after,
    session_health,
    state_health,
    store_health,
)
from observability.snapshot.refresh import SKIPPED, RefreshResult, prune, refresh

__all__ = [
    "NEW_WITHIN",
    "SKIPPED",
    "Freshness",
    "RefreshResult",
    "all_health",
    "baseline",
    "freshness",
    "latest",
    "new_after",
    "prune",
    "refresh",
    "session_health",
    "state_health",
    "store_health",
]
