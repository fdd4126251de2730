"""The one loop that deletes: short batches, each its own transaction, under the run lock."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from django.db import connections, transaction

from observability import config
from observability.cleanup import records
from observability.cleanup.locking import CleanupLock
from observability.cleanup.report import CleanupReport, NoProgress, Progress
from observability.exceptions import (
    CleanupAlreadyRunning,
    ObservabilityError,
    translate_database_errors,
)
from observability.models import CleanupRun

logger = logging.getLogger(__name__)

#: What one batch deleted, grouped in SQL: (session id, key type, rows, row bytes).
DeletedGroup = tuple[str, str, int, int]
#: Deletes one batch on the given cursor (inside its transaction); returns its groups and
#: whether more batches may follow.
BatchDeleter = Callable[[object], tuple[Sequence[DeletedGroup], bool]]


class BatchChanged(Exception):
    """A batch's rows changed between counting and deleting: roll it back and redo it."""


#: A batch whose rows changed under it is redone at most this often before the run fails.
CHANGED_RETRIES = 3

#: A batch that hits ``lock_timeout`` (the bot held a row a while) is retried this often,
#: after a short pause, before the run gives up.
LOCK_RETRIES = 2


def _milliseconds(period: timedelta) -> str:
    return f"{max(1, int(period.total_seconds() * 1000))}ms"


def set_local_timeouts(cursor) -> None:
    """
    Bound this transaction's waits: ``SET LOCAL lock_timeout`` and ``statement_timeout``.

    ``lock_timeout`` stops a batch from queueing behind the bot's locks (and the bot's
    writes from queueing behind us queueing); ``statement_timeout`` bounds how long any row
    stays locked by us, i.e. how long the bot can wait on one batch.
    """
    cursor.execute(
        "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
        [
            _milliseconds(config.cleanup_lock_timeout()),
            _milliseconds(config.cleanup_statement_timeout()),
        ],
    )


def relation_size(alias: str, tables: Sequence[str]) -> int:
    """``pg_total_relation_size`` summed over the tables (heap, indexes and TOAST)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
            "WHERE c.oid = ANY(ARRAY(SELECT to_regclass(t) FROM unnest(%s::text[]) t))",
            [list(tables)],
        )
        return int(cursor.fetchone()[0])


def average_row_bytes(alias: str, table: str) -> int:
    """The average size of a row, from a sample of 1,000 (for the space-freed estimate)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(avg(pg_column_size(t.*)), 0)::bigint "  # noqa: S608
            f"FROM (SELECT * FROM {connections[alias].ops.quote_name(table)} LIMIT 1000) t"
        )
        return int(cursor.fetchone()[0])


def count_by_session_and_type(alias: str, sql: str, params: Sequence) -> records.Counts:
    """Run a ``SELECT company_id, key_type, count(*) ... GROUP BY 1, 2`` into counts."""
    counts: records.Counts = {}
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, list(params))
        for session_id, key_type, n in cursor.fetchall():
            records.add(counts, session_id, key_type, int(n))
    return counts


def _is_lock_timeout(error: BaseException) -> bool:
    import psycopg.errors

    return isinstance(error.__cause__ or error, psycopg.errors.LockNotAvailable)


def run_batches(
    *,
    alias: str,
    lock: CleanupLock,
    delete_batch: BatchDeleter,
    on_committed: Callable[[Sequence[DeletedGroup], float], None],
) -> None:
    """
    Delete batch after batch until ``delete_batch`` says nothing is left.

    Each batch is one transaction with its own timeouts; a failing batch rolls back alone
    and the error propagates, leaving the committed batches in place. A batch that timed out
    waiting for a lock is retried (``LOCK_RETRIES``) first. Before each batch the run lock is
    checked to be still held.
    """
    from django.db import OperationalError

    failures = changed = 0
    while True:
        lock.ensure_held()
        started = time.monotonic()
        try:
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                set_local_timeouts(cursor)
                groups, more = delete_batch(cursor)
        except BatchChanged:
            changed += 1
            if changed > CHANGED_RETRIES:
                raise ObservabilityError(
                    "The rows of a cleanup batch kept changing while it ran; stopped. Retry later."
                ) from None
            continue
        except OperationalError as error:
            if not _is_lock_timeout(error) or failures >= LOCK_RETRIES:
                raise
            failures += 1
            logger.info("cleanup batch waited too long for a lock; retry %d", failures)
            time.sleep(0.2 * failures)
            continue
        failures = changed = 0
        elapsed = time.monotonic() - started
        if groups:
            on_committed(groups, elapsed)
        if not more:
            return


def run_delete_operation(
    *,
    operation: str,
    parameters: dict,
    started_by: str,
    apply: bool,
    alias: str,
    count: Callable[[], records.Counts],
    delete_batch: BatchDeleter,
    progress: Progress | None = None,
    tables: Sequence[str] = ("whatsapp_keys",),
) -> CleanupReport:
    """
    Count, and when applying delete in batches: the shape of the batched operations.

    Args:
        operation: the operation's name for the record.
        parameters: its inputs, as recorded.
        started_by: ``command``, ``task`` or ``admin:<username>``.
        apply: False counts only (a dry run); True deletes.
        alias: the bot database alias.
        count: counts the matching rows by session and key type.
        delete_batch: deletes one batch (see :func:`run_batches`).
        progress: receives progress (a tqdm bar on a terminal).
        tables: the tables whose size is reported.

    Raises:
        As :func:`execute_run`.

    """
    progress = progress or NoProgress()

    def body(report: CleanupReport, recorder: records.RunRecorder, lock: CleanupLock) -> None:
        report.rows_seen = count()
        report.total_seen = records.total(report.rows_seen)
        recorder.save(rows_seen=report.rows_seen, total_seen=report.total_seen)
        if not apply:
            return

        def committed(groups: Sequence[DeletedGroup], elapsed: float) -> None:
            deleted = 0
            for session_id, key_type, count, row_bytes in groups:
                records.add(report.rows_deleted, session_id, key_type, int(count))
                report.row_bytes_deleted += int(row_bytes or 0)
                deleted += int(count)
            report.total_deleted += deleted
            report.batches += 1
            report.slowest_batch_seconds = max(report.slowest_batch_seconds, elapsed)
            recorder.progress(report.rows_deleted)
            progress.advance(deleted)

        progress.start(report.total_seen)
        try:
            run_batches(alias=alias, lock=lock, delete_batch=delete_batch, on_committed=committed)
        finally:
            progress.close()

    return execute_run(
        operation=operation,
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        body=body,
        tables=tables,
    )


def execute_run(
    *,
    operation: str,
    parameters: dict,
    started_by: str,
    apply: bool,
    alias: str,
    body: Callable[[CleanupReport, records.RunRecorder, CleanupLock], None],
    tables: Sequence[str],
) -> CleanupReport:
    """
    Run ``body`` recorded, and when applying under the run lock: the shape of every run.

    The record is created before anything else (no delete is ever unrecorded). An applied
    run takes the advisory lock first and closes the records of runs that died before it.
    Whatever ``body`` raises is recorded (refused or failed, with the rows deleted so far)
    and re-raised; the body keeps ``report.rows_deleted`` current after each commit.

    Raises:
        CleanupAlreadyRunning: another applied run holds the lock (recorded as refused).
        BotDatabaseUnavailable, QueryTimedOut: the database failed mid-run (recorded as
            failed with the rows deleted so far; committed batches stay).

    """
    recorder = records.RunRecorder(operation, parameters, started_by, dry_run=not apply)
    report = CleanupReport(
        run_id=recorder.id, operation=operation, dry_run=not apply, parameters=parameters
    )
    started = time.monotonic()
    lock = CleanupLock(alias)
    try:
        with translate_database_errors(alias):
            if apply:
                lock.acquire()
            try:
                if apply:
                    recorder.mark_abandoned_runs()
                report.bytes_before = relation_size(alias, tables)
                recorder.save(bytes_before=report.bytes_before)
                body(report, recorder, lock)
                report.bytes_after = relation_size(alias, tables)
            finally:
                lock.release()
    except CleanupAlreadyRunning as error:
        recorder.finish(CleanupRun.Outcome.REFUSED, error=error.message)
        raise
    except BaseException as error:
        if not isinstance(error, ObservabilityError):
            logger.exception("cleanup run %s (%s) failed", recorder.id, operation)
        recorder.finish(
            CleanupRun.Outcome.FAILED,
            error=records.describe_error(error),
            rows_deleted=report.rows_deleted,
            total_deleted=report.total_deleted,
            backup_path="\n".join(report.backup_paths),
        )
        raise
    report.duration_seconds = round(time.monotonic() - started, 3)
    recorder.finish(
        CleanupRun.Outcome.SUCCEEDED,
        rows_seen=report.rows_seen,
        total_seen=report.total_seen,
        rows_deleted=report.rows_deleted,
        total_deleted=report.total_deleted,
        bytes_after=report.bytes_after,
        backup_path="\n".join(report.backup_paths),
    )
    logger.info(
        "cleanup %s %s: %d seen, %d deleted in %d batches",
        operation,
        "applied" if apply else "dry run",
        report.total_seen,
        report.total_deleted,
        report.batches,
    )
    return report
