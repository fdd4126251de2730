"""
Cleanup: the only code that deletes rows of the bot's tables.

Every operation counts by default (a dry run) and deletes only when applied; deletes run in
short batches, each its own transaction with ``lock_timeout`` and ``statement_timeout``,
under one PostgreSQL advisory lock, and every run (dry or applied) is recorded as a
``CleanupRun``. Commands, queued tasks and the admin call the functions exported here.
"""

from __future__ import annotations

from observability.cleanup.duplicates import cleanup_duplicates
from observability.cleanup.keys import cleanup_expired_keys, cleanup_orphan_keys
from observability.cleanup.locking import LOCK_KEY
from observability.cleanup.report import CleanupReport, DuplicatePair, Progress, SessionSide
from observability.cleanup.restore import restore_backup

__all__ = [
    "LOCK_KEY",
    "CleanupReport",
    "DuplicatePair",
    "Progress",
    "SessionSide",
    "cleanup_duplicates",
    "cleanup_expired_keys",
    "cleanup_orphan_keys",
    "restore_backup",
]
