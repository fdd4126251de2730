"""Keys past their retention, and orphan keys: the batched deletes over ``whatsapp_keys``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connections
from django.utils import timezone

from observability import config
from observability.cleanup import engine, policy, records, selection
from observability.cleanup.report import CleanupReport, GraceHold, Progress
from observability.exceptions import translate_database_errors


def _filters(chosen: selection.Selection, table: str) -> tuple[str, list]:
    """SQL conditions (and their parameters) restricting rows to the chosen sessions/types."""
    sql, params = [], []
    if chosen.session_ids is not None:
        sql.append(f"AND {table}.company_id = ANY(%s)")
        params.append(list(chosen.session_ids))
    if chosen.key_types is not None:
        sql.append(f"AND {table}.key_type = ANY(%s)")
        params.append(list(chosen.key_types))
    return " ".join(sql), params


def _common_parameters(
    chosen: selection.Selection, size: int, cutoff: datetime | None = None
) -> dict:
    return {
        **chosen.as_parameters(),
        **({"cutoff": cutoff.isoformat()} if cutoff is not None else {}),
        "batch_size": size,
        "lock_timeout_ms": int(config.cleanup_lock_timeout().total_seconds() * 1000),
        "statement_timeout_ms": int(config.cleanup_statement_timeout().total_seconds() * 1000),
    }


class AgedKeys:
    """
    The batches of the expired-key cleanup: keys past their type's retention, oldest first.

    Each batch deletes the (at most) ``size`` due rows with the lowest ``expires_at`` at or
    above where the previous batch ended: a range of the ``expires_at`` index that never
    walks again past the rows earlier batches deleted, nor past the rows kept below them
    (old pre-keys and app-state keys: much of the old end of the index). The ``DELETE``
    repeats the policy's condition, so a row the bot rewrote since it was picked (a new
    ``expires_at``) is kept. What went is counted by session and key type from the rows
    the ``DELETE`` returned, in the same statement.

    Args:
        due: the SQL condition "age may delete this row" on table alias ``k``.
        due_params: its parameters.
        filters: the selection's conditions on ``k`` (sessions, key types).
        filter_params: their parameters.
        size: rows per batch.

    """

    def __init__(self, due: str, due_params: list, filters: str, filter_params: list, size: int):
        self.where = f"{due} {filters}"
        self.params = [*due_params, *filter_params]
        self.size = size
        self.lower: datetime | None = None

    def delete(self, cursor) -> engine.BatchResult:
        """Delete the next batch (see the class)."""
        lower = "-infinity" if self.lower is None else self.lower
        cursor.execute(
            # Only code-built fragments are interpolated; every value is a parameter.
            "WITH gone AS ("  # noqa: S608
            " DELETE FROM whatsapp_keys k WHERE k.ctid = ANY(ARRAY("
            f"  SELECT k.ctid FROM whatsapp_keys k WHERE {self.where}"
            "   AND k.expires_at >= %s::timestamptz ORDER BY k.expires_at LIMIT %s"
            f" )) AND {self.where}"
            " RETURNING k.company_id, k.key_type, k.expires_at, pg_column_size(k.*) AS row_bytes"
            ") SELECT company_id, key_type, count(*), sum(row_bytes), max(expires_at) "
            "FROM gone GROUP BY 1, 2",
            [*self.params, lower, self.size, *self.params],
        )
        rows = cursor.fetchall()
        if rows:
            self.lower = max(row[4] for row in rows)
        return engine.BatchResult(
            [(session_id, key_type, n) for session_id, key_type, n, _, _ in rows],
            more=bool(rows),
            deleted_bytes=sum(int(row_bytes or 0) for _, _, _, row_bytes, _ in rows),
        )


def cleanup_expired_keys(
    *,
    salons: Iterable[str | int] | None = None,
    sessions: Iterable[str] | None = None,
    key_types: Iterable[str] | None = None,
    batch_size: int | None = None,
    apply: bool = False,
    started_by: str = "command",
    now: datetime | None = None,
    progress: Progress | None = None,
) -> CleanupReport:
    """
    Delete (or, by default, count) keys unwritten for longer than their type's retention.

    The retention of each key type, and why, is :mod:`~observability.cleanup.policy`:
    pre-keys, app-state keys, LID mappings, identity keys and unknown types are never
    deleted for their age, whatever their ``expires_at``. Every run first counts, by
    session and key type, the rows it would delete and the rows it keeps with the reason
    (one pass over the table); an applied run then deletes in batches (:class:`AgedKeys`),
    each its own transaction under the run's lock and timeouts, and records what each
    deleted by session and key type.

    Args:
        salons: salon ids in either spelling (both spellings are cleaned); None: all.
        sessions: exact session ids (the admin's selection).
        key_types: restrict to these key types; None: all.
        batch_size: rows per batch (setting, default 5,000).
        apply: delete; False (the default) only counts.
        started_by: who started the run, for the record.
        now: the current time (tests).
        progress: progress receiver.

    Returns:
        The report: ``rows_seen`` (to delete), ``rows_kept`` and ``kept_reasons``, and for an
        applied run ``rows_deleted``, all by session and key type.

    Raises:
        BadInput, MalformedSessionId, SessionNotFound: before anything runs or is recorded
            (a malformed ``OBSERVABILITY_CLEANUP_RETENTION`` too).
        CleanupAlreadyRunning, BotDatabaseUnavailable, QueryTimedOut: see the engine.

    """
    alias = config.bot_database_alias()
    size = selection.batch_size(batch_size, config.cleanup_batch_size())
    rules = policy.current(now or timezone.now())
    with translate_database_errors(alias):
        chosen = selection.build(salons=salons, sessions=sessions, types=key_types, alias=alias)
    filters, filter_params = _filters(chosen, "k")
    due, due_params = rules.due_sql("k")
    parameters = {
        **_common_parameters(chosen, size),
        "now": rules.now.isoformat(),
        "retention": rules.as_list(),
    }

    def count() -> records.Census:
        census = records.Census({})
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT k.company_id, k.key_type, count(*) FILTER (WHERE "  # noqa: S608
                f"{due}), count(*) FROM whatsapp_keys k WHERE true {filters} GROUP BY 1, 2",
                [*due_params, *filter_params],
            )
            for session_id, key_type, n_due, n_all in cursor.fetchall():
                if n_due:
                    records.add(census.due, session_id, key_type, int(n_due))
                if n_all > n_due:
                    records.add(census.kept, session_id, key_type, int(n_all - n_due))
                    census.kept_reasons[key_type] = rules.for_type(key_type).kept_because()
        census.kept_reasons = dict(sorted(census.kept_reasons.items()))
        return census

    batches = AgedKeys(due, due_params, filters, filter_params, size)
    return engine.run_delete_operation(
        operation="expired_keys",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        count=count,
        delete_batch=batches.delete,
        progress=progress,
    )


def cleanup_orphan_keys(
    *,
    salons: Iterable[str | int] | None = None,
    sessions: Iterable[str] | None = None,
    key_types: Iterable[str] | None = None,
    min_age: timedelta | None = None,
    batch_size: int | None = None,
    apply: bool = False,
    started_by: str = "command",
    now: datetime | None = None,
    progress: Progress | None = None,
) -> CleanupReport:
    """
    Delete (or count) keys whose session has no ``whatsapp_auth`` row, unwritten for a while.

    A key counts as orphaned only when its own ``updated_at`` is older than ``min_age``
    (setting, default 7 days): a session being paired right now writes keys before its auth
    row. Keys without ``updated_at`` cannot be dated and are kept. The auth row's absence and
    the age are re-checked by the deleting statement itself.

    No row is locked by hand (``FOR UPDATE`` needs the UPDATE privilege, which the cleanup
    role does not have): the ``DELETE`` locks what it deletes and re-checks the conditions on
    a row the bot changed meanwhile (PostgreSQL re-evaluates the WHERE clause on the row's
    newest version), so a key written again is kept. A row the bot holds locked is waited
    for, at most ``lock_timeout`` (the batch is then retried); two cleanup runs never overlap
    (the run's advisory lock).

    Args:
        salons: salon ids in either spelling; None: all.
        sessions: exact session ids.
        key_types: restrict to these key types; None: all.
        min_age: how long an orphan key must be unwritten to be deleted.
        batch_size: rows per batch (setting, default 5,000).
        apply: delete; False (the default) only counts.
        started_by: who started the run, for the record.
        now: the current time (tests).
        progress: progress receiver.

    Returns:
        The report.

    Raises:
        As :func:`cleanup_expired_keys`.

    """
    alias = config.bot_database_alias()
    grace = policy.orphan_grace(now or timezone.now(), min_age)
    size = selection.batch_size(batch_size, config.cleanup_batch_size())
    with translate_database_errors(alias):
        chosen = selection.build(salons=salons, sessions=sessions, types=key_types, alias=alias)
    cutoff = grace.cutoff
    filters, filter_params = _filters(chosen, "k")
    parameters = {
        **_common_parameters(chosen, size, cutoff),
        "now": grace.now.isoformat(),
        "min_age_days": grace.period / timedelta(days=1),
    }
    orphan_session = "NOT EXISTS (SELECT 1 FROM whatsapp_auth a WHERE a.company_id = k.company_id)"
    orphan = f"{orphan_session} AND k.updated_at < %s"

    held = GraceHold(grace=grace.period)

    def count() -> records.Census:
        census = records.Census({})
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT k.company_id, k.key_type,"  # noqa: S608
                " count(*) FILTER (WHERE k.updated_at < %s),"
                " count(*) FILTER (WHERE k.updated_at >= %s),"
                " count(*) FILTER (WHERE k.updated_at IS NULL),"
                " min(k.updated_at) FILTER (WHERE k.updated_at >= %s),"
                " max(k.updated_at) FILTER (WHERE k.updated_at >= %s)"
                f" FROM whatsapp_keys k WHERE {orphan_session} {filters} GROUP BY 1, 2",
                [cutoff, cutoff, cutoff, cutoff, *filter_params],
            )
            for session_id, key_type, n_due, n_recent, n_undated, first, last in cursor:
                if n_due:
                    records.add(census.due, session_id, key_type, int(n_due))
                if n_recent or n_undated:
                    records.add(census.kept, session_id, key_type, int(n_recent + n_undated))
                    census.kept_reasons[key_type] = _orphan_kept_because(
                        grace, recent=bool(n_recent), undated=bool(n_undated)
                    )
                held.rows += int(n_recent)
                held.undated += int(n_undated)
                if first is not None:
                    held.first_deletable_at = min(
                        d for d in (held.first_deletable_at, grace.free_at(first)) if d is not None
                    )
                    held.last_deletable_at = max(
                        d for d in (held.last_deletable_at, grace.free_at(last)) if d is not None
                    )
        census.kept_reasons = dict(sorted(census.kept_reasons.items()))
        return census

    def delete_batch(cursor):
        cursor.execute(
            "WITH deleted AS ("  # noqa: S608
            " DELETE FROM whatsapp_keys k WHERE k.ctid = ANY(ARRAY("
            f"  SELECT k.ctid FROM whatsapp_keys k WHERE {orphan} {filters}"
            "  LIMIT %s"
            f" )) AND {orphan} {filters}"
            " RETURNING k.company_id, k.key_type, pg_column_size(k.*) AS row_bytes"
            ") SELECT company_id, key_type, count(*), sum(row_bytes) FROM deleted GROUP BY 1, 2",
            [cutoff, *filter_params, size, cutoff, *filter_params],
        )
        rows = cursor.fetchall()
        return engine.BatchResult(
            [(session_id, key_type, n) for session_id, key_type, n, _ in rows],
            more=bool(rows),
            deleted_bytes=sum(int(row_bytes or 0) for *_, row_bytes in rows),
        )

    report = engine.run_delete_operation(
        operation="orphan_keys",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        count=count,
        delete_batch=delete_batch,
        progress=progress,
    )
    report.grace = held
    return report


def _orphan_kept_because(grace: policy.OrphanGrace, *, recent: bool, undated: bool) -> str:
    """Why orphan keys of one type are kept (the run record's and the command's words)."""
    reasons = []
    if recent:
        reasons.append(
            f"written within the grace period ({grace.period_text}: a session being "
            "paired writes keys before its auth row); deletable once unwritten that long"
        )
    if undated:
        reasons.append("no updated_at, so never known to be unwritten: never deleted here")
    return "; ".join(reasons)
