"""The one loop that deletes: short batches, each its own transaction, under the run lock."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

#: Rows of one session and key type: (session id, key type, rows).
Group = tuple[str, str, int]


@dataclass(frozen=True)
class BatchResult:
    """
    One committed batch, as the deleter reports it.

    Attributes:
        deleted: the rows it deleted, by session and key type.
        more: whether another batch may follow.
        deleted_bytes: the size of the rows deleted.

    """

    deleted: Sequence[Group]
    more: bool
    deleted_bytes: int = 0


#: Deletes one batch on the given cursor (inside its transaction).
BatchDeleter = Callable[[object], BatchResult]

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
    """
    ``pg_total_relation_size`` summed over the tables (heap, indexes and TOAST).

    Under the cleanup's timeouts like every cleanup statement: the size functions lock each
    table, and behind an ACCESS EXCLUSIVE lock a run waited 19 s here before its first batch.
    """
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        set_local_timeouts(cursor)
        cursor.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
            "WHERE c.oid = ANY(ARRAY(SELECT to_regclass(t) FROM unnest(%s::text[]) t))",
            [list(tables)],
        )
        return int(cursor.fetchone()[0])


def _is_lock_timeout(error: BaseException) -> bool:
    import psycopg.errors

    return isinstance(error.__cause__ or error, psycopg.errors.LockNotAvailable)


def run_batches(
    *,
    alias: str,
    lock: CleanupLock,
    delete_batch: BatchDeleter,
    on_committed: Callable[[BatchResult, float], None],
) -> None:
    """
    Delete batch after batch until ``delete_batch`` says nothing is left.

    Each batch is one transaction with its own timeouts, committed before the next starts
    (so the bot never waits on more than one batch); a failing batch rolls back alone and
    the error propagates, leaving the committed batches in place. A batch that timed out
    waiting for a lock is retried (``LOCK_RETRIES``) first. Before each batch the run lock
    is checked to be still held.
    """
    from django.db import OperationalError

    failures = 0
    while True:
        lock.ensure_held()
        started = time.monotonic()
        try:
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                set_local_timeouts(cursor)
                result = delete_batch(cursor)
        except OperationalError as error:
            if not _is_lock_timeout(error) or failures >= LOCK_RETRIES:
                raise
            failures += 1
            logger.info("cleanup batch waited too long for a lock; retry %d", failures)
            time.sleep(0.2 * failures)
            continue
        failures = 0
        if result.deleted:
            on_committed(result, time.monotonic() - started)
        if not result.more:
            return


def run_delete_operation(
    *,
    operation: str,
    parameters: dict,
    started_by: str,
    apply: bool,
    alias: str,
    count: Callable[[], records.Counts | records.Census],
    delete_batch: BatchDeleter,
    progress: Progress | None = None,
    tables: Sequence[str] = ("whatsapp_keys",),
) -> CleanupReport:
    """
    Count, and when applying delete in batches: the shape of the batched operations.

    Every run, dry or applied, first counts what it would delete (and what it keeps, and
    why) by session and key type; an applied run then records what each batch deleted, by
    session and key type, from the rows the ``DELETE`` returned.

    Args:
        operation: the operation's name for the record.
        parameters: its inputs, as recorded.
        started_by: ``command``, ``task`` or ``admin:<username>``.
        apply: False counts only (a dry run); True deletes.
        alias: the bot database alias.
        count: counts the matching rows by session and key type (a
            :class:`~observability.cleanup.records.Census` when some rows are kept).
        delete_batch: deletes one batch (see :func:`run_batches`).
        progress: receives progress (a tqdm bar on a terminal).
        tables: the tables whose size is reported.

    Raises:
        As :func:`execute_run`.

    """
    progress = progress or NoProgress()

    def body(report: CleanupReport, recorder: records.RunRecorder, lock: CleanupLock) -> None:
        census = count()
        if not isinstance(census, records.Census):
            census = records.Census(census)
        report.rows_seen, report.total_seen = census.due, records.total(census.due)
        report.rows_kept, report.total_kept = census.kept, records.total(census.kept)
        report.kept_reasons = census.kept_reasons
        recorder.save(
            rows_seen=report.rows_seen,
            total_seen=report.total_seen,
            rows_kept=report.rows_kept,
            total_kept=report.total_kept,
            kept_reasons=report.kept_reasons,
        )
        if not apply:
            return
        deleted = records.Tally()

        def breakdown() -> None:
            report.rows_deleted = deleted.counts()

        def committed(result: BatchResult, elapsed: float) -> None:
            rows = deleted.add(result.deleted)
            report.total_deleted += rows
            report.row_bytes_deleted += result.deleted_bytes
            report.batches += 1
            report.slowest_batch_seconds = max(report.slowest_batch_seconds, elapsed)
            recorder.progress(report, breakdown)
            progress.advance(rows)

        progress.start(report.total_seen)
        try:
            run_batches(alias=alias, lock=lock, delete_batch=delete_batch, on_committed=committed)
        finally:
            breakdown()
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


def _counts(report: CleanupReport) -> dict:
    """What a finished run's record keeps of its report, failed or not (rows so far)."""
    return {
        "rows_seen": report.rows_seen,
        "total_seen": report.total_seen,
        "rows_deleted": report.rows_deleted,
        "total_deleted": report.total_deleted,
        "rows_kept": report.rows_kept,
        "total_kept": report.total_kept,
        "kept_reasons": report.kept_reasons,
        "backup_path": "\n".join(report.backup_paths),
    }


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
            CleanupRun.Outcome.FAILED, error=records.describe_error(error), **_counts(report)
        )
        raise
    report.duration_seconds = round(time.monotonic() - started, 3)
    recorder.finish(
        CleanupRun.Outcome.SUCCEEDED, bytes_after=report.bytes_after, **_counts(report)
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
