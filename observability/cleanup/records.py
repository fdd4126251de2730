"""The audit record of each cleanup run (``CleanupRun`` in the default database)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.db import connections, transaction
from django.utils import timezone

from observability.exceptions import ObservabilityError
from observability.models import CleanupRun

logger = logging.getLogger(__name__)

Counts = dict[str, dict[str, int]]

#: How often, at most, a running record's breakdown by session and key type is rewritten.
_BREAKDOWN_EVERY = 1.0

#: A dry run still "running" after this long was killed (dry runs take seconds).
_ABANDONED_DRY_RUN_AGE = timedelta(hours=1)


def total(counts: Counts) -> int:
    """Sum of a ``{session: {key type: n}}`` mapping."""
    return sum(n for by_type in counts.values() for n in by_type.values())


def add(counts: Counts, session_id: str, key_type: str, n: int = 1) -> None:
    """Add ``n`` rows of one session and key type to a counts mapping, in place."""
    by_type = counts.setdefault(session_id, {})
    by_type[key_type] = by_type.get(key_type, 0) + n


def describe_error(error: BaseException) -> str:
    """
    A message for the record that never carries row data.

    The project's own errors have messages written for operators; anything else is named by
    its class only, because a driver message may quote a row (the full error is logged).
    """
    if isinstance(error, ObservabilityError):
        cause = error.__cause__
        detail = f" ({type(cause).__name__})" if cause is not None else ""
        return f"{error.message}{detail}"
    if isinstance(error, KeyboardInterrupt):
        return "Interrupted (KeyboardInterrupt)."
    return f"Unexpected error: {type(error).__name__}; see the logs."


class RunRecorder:
    """
    Creates the run's record before any work and keeps it current after every batch.

    The record is written before the first delete, so no row is ever deleted without a
    record; it is updated after each committed batch, so a run killed mid-way still shows
    how many rows its committed batches deleted.
    """

    def __init__(self, operation: str, parameters: dict, started_by: str, dry_run: bool) -> None:
        self.run = CleanupRun.objects.create(
            operation=operation,
            parameters=parameters,
            started_by=started_by[:200],
            dry_run=dry_run,
            outcome=CleanupRun.Outcome.RUNNING,
        )
        self._breakdown_saved_at = time.monotonic()

    @property
    def id(self) -> int:
        """The record's primary key."""
        return self.run.pk

    def save(self, **fields) -> None:
        """Update some fields of the record."""
        for name, value in fields.items():
            setattr(self.run, name, value)
        self.run.save(update_fields=list(fields))

    def progress(self, rows_deleted: Counts) -> None:
        """
        Record the rows deleted so far (called after each committed batch).

        The total is written after every batch, so a killed run's record accounts for every
        committed batch but at most the one whose commit it did not live to record (the bot's
        rows and this record live in two databases: no transaction covers both). The
        breakdown by session and key type (tens of kilobytes at a thousand sessions) is
        written at most every ``_BREAKDOWN_EVERY`` seconds, and always at the end. The update
        skips the wait for the disk flush (``synchronous_commit = off``): only a crash of the
        database server could lose the last fraction of a second of progress, and the
        record's end is written normally.
        """
        fields: dict = {"total_deleted": total(rows_deleted)}
        now = time.monotonic()
        if now - self._breakdown_saved_at >= _BREAKDOWN_EVERY:
            fields["rows_deleted"] = rows_deleted
            self._breakdown_saved_at = now
        with transaction.atomic(using=self.run._state.db):
            with connections[self.run._state.db].cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
            self.save(**fields)

    def finish(self, outcome: str, *, error: str = "", **fields) -> None:
        """Close the record with its outcome; never raises (the original error matters more)."""
        try:
            self.save(outcome=outcome, error=error, finished_at=timezone.now(), **fields)
        except Exception:
            logger.exception("could not record the end of cleanup run %s", self.id)

    def mark_abandoned_runs(self) -> int:
        """
        Close records of runs that died without finishing (killed, machine lost).

        Called only while holding the cleanup lock, so no other applied run is alive.
        """
        now = timezone.now()
        stale = CleanupRun.objects.filter(outcome=CleanupRun.Outcome.RUNNING).exclude(pk=self.id)
        applied = stale.filter(dry_run=False)
        old_dry = stale.filter(dry_run=True, started_at__lt=now - _ABANDONED_DRY_RUN_AGE)
        message = (
            "Interrupted: the process ended before the run finished; the counts are those "
            "of its committed batches."
        )
        count = (applied | old_dry).update(
            outcome=CleanupRun.Outcome.FAILED, finished_at=now, error=message
        )
        if count:
            logger.warning("marked %d abandoned cleanup run(s) as failed", count)
        return count
