"""The one loop that deletes: short batches, each its own transaction, under the run lock."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
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
        seen: the rows it found to delete (counted before deleting), when the run counts
            as it goes; None when the run counted everything up front. Pass the same
            object as ``deleted`` when the batch deleted exactly what it counted.
        deleted_bytes: the size of the rows deleted.

    """

    deleted: Sequence[Group]
    more: bool
    seen: Sequence[Group] | None = None
    deleted_bytes: int = 0


#: Deletes one batch on the given cursor (inside its transaction).
BatchDeleter = Callable[[object], BatchResult]


class BatchChanged(Exception):
    """A batch's rows changed between counting and deleting: roll it back and redo it."""


#: A batch whose rows changed under it is redone at most this often before the run fails.
CHANGED_RETRIES = 3

#: A batch that hits ``lock_timeout`` (the bot held a row a while) is retried this often,
#: after a short pause, before the run gives up.
LOCK_RETRIES = 2


def _milliseconds(period: timedelta) -> str:
    return f"{max(1, int(period.total_seconds() * 1000))}ms"


def set_local_timeouts(cursor, *, wait_for_flush: bool = True) -> None:
    """
    Bound this transaction's waits: ``SET LOCAL lock_timeout`` and ``statement_timeout``.

    ``lock_timeout`` stops a batch from queueing behind the bot's locks (and the bot's
    writes from queueing behind us queueing); ``statement_timeout`` bounds how long any row
    stays locked by us, i.e. how long the bot can wait on one batch.

    Args:
        cursor: a cursor inside the transaction.
        wait_for_flush: False sets ``synchronous_commit = off`` too: the commit returns
            before its WAL reaches the disk (see :func:`run_batches`).

    """
    cursor.execute(
        "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true), "
        "set_config('synchronous_commit', %s, true)",
        [
            _milliseconds(config.cleanup_lock_timeout()),
            _milliseconds(config.cleanup_statement_timeout()),
            "on" if wait_for_flush else "off",
        ],
    )


def flush_commits(alias: str) -> None:
    """
    Wait until every commit of this connection so far is on the disk.

    A commit that waits for its flush waits for all the WAL written before it; a
    transaction needs an id to write a commit record at all, hence ``pg_current_xact_id()``
    (no privilege needed, nothing written to any table).
    """
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()")


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
    on_committed: Callable[[BatchResult, float], None],
) -> None:
    """
    Delete batch after batch until ``delete_batch`` says nothing is left.

    Each batch is one transaction with its own timeouts; a failing batch rolls back alone
    and the error propagates, leaving the committed batches in place. A batch that timed out
    waiting for a lock is retried (``LOCK_RETRIES``) first. Before each batch the run lock is
    checked to be still held.

    The batches commit without waiting for their WAL to reach the disk, and the run waits
    once, at its end (:func:`flush_commits`): each wait costs about as much as the delete of
    a batch. What it risks: if the database server itself crashes, the batches of the last
    fraction of a second before the crash are undone (still atomic: whole batches), so the
    rows come back and the next run deletes them again; a run that then fails may have
    recorded them as deleted. A killed client or a lost connection risks nothing: the server
    still flushes every commit it acknowledged.
    """
    from django.db import OperationalError

    failures = changed = 0
    while True:
        lock.ensure_held()
        started = time.monotonic()
        try:
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                set_local_timeouts(cursor, wait_for_flush=False)
                result = delete_batch(cursor)
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
        if result.deleted or result.seen:
            on_committed(result, elapsed)
        if not result.more:
            flush_commits(alias)
            return


def run_delete_operation(
    *,
    operation: str,
    parameters: dict,
    started_by: str,
    apply: bool,
    alias: str,
    count: Callable[[], records.Counts],
    batches: Callable[[], AbstractContextManager[BatchDeleter]],
    progress: Progress | None = None,
    tables: Sequence[str] = ("whatsapp_keys",),
    count_on_apply: bool = True,
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
        batches: opens the deleter of an applied run (see :func:`run_batches`), once the
            run holds its lock, and closes it when the run ends.
        progress: receives progress (a tqdm bar on a terminal).
        tables: the tables whose size is reported.
        count_on_apply: False when the batches count what they delete as they go
            (``BatchResult.seen``): an applied run then does not count everything first,
            except for a progress bar's total.

    Raises:
        As :func:`execute_run`.

    """
    progress = progress or NoProgress()

    def body(report: CleanupReport, recorder: records.RunRecorder, lock: CleanupLock) -> None:
        total_for_progress = None
        if count_on_apply or not apply:
            report.rows_seen = count()
            report.total_seen = total_for_progress = records.total(report.rows_seen)
            recorder.save(rows_seen=report.rows_seen, total_seen=report.total_seen)
        elif progress.wants_total:
            total_for_progress = records.total(count())
        if not apply:
            return

        # What the batches counted, and how what they deleted differs from it (only batches
        # that changed under us differ): one pass over each batch's groups, not two.
        counted, deleted_otherwise = records.Tally(), records.Tally()

        def breakdown() -> None:
            if not count_on_apply:
                report.rows_seen = counted.counts()
            report.rows_deleted = counted.counts(plus=deleted_otherwise)

        def committed(result: BatchResult, elapsed: float) -> None:
            if result.seen is None:
                deleted = deleted_otherwise.add(result.deleted)
            else:
                deleted = counted.add(result.seen)
                report.total_seen += deleted
                if result.deleted is not result.seen:
                    deleted_otherwise.add(result.seen, sign=-1)
                    deleted = deleted_otherwise.add(result.deleted)
            report.total_deleted += deleted
            report.row_bytes_deleted += result.deleted_bytes
            report.batches += 1
            report.slowest_batch_seconds = max(report.slowest_batch_seconds, elapsed)
            recorder.progress(report, breakdown)
            progress.advance(deleted)

        progress.start(total_for_progress)
        try:
            with batches() as delete_batch:
                run_batches(
                    alias=alias, lock=lock, delete_batch=delete_batch, on_committed=committed
                )
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
            rows_seen=report.rows_seen,
            total_seen=report.total_seen,
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
