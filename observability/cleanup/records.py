"""The audit record of each cleanup run (``CleanupRun`` in the default database)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

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


class Tally:
    """
    Rows per (session id, key type), added to batch after batch.

    A flat mapping, because a batch can hold a group for every session and key type
    (thousands); the nested ``{session: {key type: n}}`` shape of the record is built from
    it only when the record is written.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], int] = {}
        self.total = 0

    def add(self, groups) -> int:
        """Add ``(session id, key type, rows)`` groups; returns the rows added."""
        rows, get, added = self.rows, self.rows.get, 0
        for session_id, key_type, n in groups:
            key = (session_id, key_type)
            rows[key] = get(key, 0) + n
            added += n
        self.total += added
        return added

    def counts(self) -> Counts:
        """The rows as ``{session: {key type: n}}``, zeros left out."""
        counts: Counts = {}
        for (session_id, key_type), n in sorted(self.rows.items()):
            if n:
                counts.setdefault(session_id, {})[key_type] = n
        return counts


@dataclass
class Census:
    """
    What a run found at its start: the rows to delete, and the rows kept with their reason.

    Attributes:
        due: rows to delete, ``{session: {key type: n}}``.
        kept: rows the retention policy keeps, same shape.
        kept_reasons: why each key type of ``kept`` is kept.

    """

    due: Counts
    kept: Counts = field(default_factory=dict)
    kept_reasons: dict[str, str] = field(default_factory=dict)


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

    def progress(self, report, breakdown) -> None:
        """
        Record the rows deleted so far (called after each committed batch).

        The total is written after every batch, so a killed run's record accounts for every
        committed batch but at most the one whose commit it did not live to record (the
        bot's rows and this record live in two databases: no transaction covers both). The
        breakdown by session and key type (tens of kilobytes at a thousand sessions) is
        written at most every ``_BREAKDOWN_EVERY`` seconds, and always at the end.

        Args:
            report: the run's :class:`~observability.cleanup.report.CleanupReport`.
            breakdown: brings the report's ``rows_deleted`` up to date (called only when it
                is written).

        """
        fields: dict = {"total_deleted": report.total_deleted}
        now = time.monotonic()
        if now - self._breakdown_saved_at >= _BREAKDOWN_EVERY:
            breakdown()
            fields["rows_deleted"] = report.rows_deleted
            self._breakdown_saved_at = now
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
