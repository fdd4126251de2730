"""The audit record of each cleanup run (``CleanupRun`` in the default database)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.db import connections
from django.utils import timezone

from observability.exceptions import ObservabilityError
from observability.models import CleanupRun

logger = logging.getLogger(__name__)

Counts = dict[str, dict[str, int]]

#: The session key of counts kept by key type only: the rows of every session the run
#: covered (an applied expired-key run over all sessions; its parameters say so).
EVERY_SESSION = "*"

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

    A flat mapping, because a batch of the expired-key cleanup can hold a group for every
    session and key type (thousands), and adding them up is the cleanup's main cost in
    Python; the nested ``{session: {key type: n}}`` shape of the record is built from it
    only when the record is written.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], int] = {}
        self.total = 0

    def add(self, groups, sign: int = 1) -> int:
        """Add ``(session id, key type, rows)`` groups (subtract with ``sign=-1``)."""
        rows, get, added = self.rows, self.rows.get, 0
        for session_id, key_type, n in groups:
            key = (session_id, key_type)
            rows[key] = get(key, 0) + sign * n
            added += n
        self.total += sign * added
        return added

    def counts(self, plus: Tally | None = None) -> Counts:
        """The rows as ``{session: {key type: n}}`` (with ``plus`` added), zeros left out."""
        counts: Counts = {}
        merged = dict(self.rows)
        for key, n in (plus.rows if plus else {}).items():
            merged[key] = merged.get(key, 0) + n
        for (session_id, key_type), n in sorted(merged.items()):
            if n:
                counts.setdefault(session_id, {})[key_type] = n
        return counts


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
        Record the rows seen and deleted so far (called after each committed batch).

        The totals are written after every batch, so a killed run's record accounts for
        every committed batch but at most the one whose commit it did not live to record
        (the bot's rows and this record live in two databases: no transaction covers both).
        The breakdowns by session and key type (tens of kilobytes at a thousand sessions)
        are written at most every ``_BREAKDOWN_EVERY`` seconds, and always at the end. One
        ``UPDATE`` in autocommit: a round trip, where a transaction would take four.

        Args:
            report: the run's :class:`~observability.cleanup.report.CleanupReport`.
            breakdown: brings the report's ``rows_seen`` and ``rows_deleted`` up to date
                (called only when they are written).

        """
        fields: dict = {"total_deleted": report.total_deleted, "total_seen": report.total_seen}
        now = time.monotonic()
        if now - self._breakdown_saved_at >= _BREAKDOWN_EVERY:
            breakdown()
            fields["rows_deleted"] = report.rows_deleted
            fields["rows_seen"] = report.rows_seen
            self._breakdown_saved_at = now
        for name, value in fields.items():
            setattr(self.run, name, value)
        self._update_without_flush_wait(fields)

    def _update_without_flush_wait(self, fields: dict) -> None:
        """
        ``UPDATE`` some fields in one statement whose commit does not wait for the disk.

        ``set_config('synchronous_commit', 'off', true)`` inside the statement applies to its
        own (autocommit) transaction, which PostgreSQL commits right after: one round trip,
        where ``BEGIN; SET LOCAL ...; UPDATE ...; COMMIT`` takes four. Values go through the
        model's fields, as ``save()`` would send them.
        """
        connection = connections[self.run._state.db]
        quote = connection.ops.quote_name
        columns, values = [], []
        for name, value in fields.items():
            model_field = CleanupRun._meta.get_field(name)
            columns.append(f"{quote(model_field.column)} = %s")
            values.append(model_field.get_db_prep_save(value, connection))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {quote(CleanupRun._meta.db_table)} SET {', '.join(columns)} "  # noqa: S608
                "WHERE id = %s AND set_config('synchronous_commit', 'off', true) = 'off'",
                [*values, self.run.pk],
            )

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
