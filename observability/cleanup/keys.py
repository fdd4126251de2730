"""Expired keys and orphan keys: the batched deletes over ``whatsapp_keys``."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime, timedelta

from django.utils import timezone

from observability import config
from observability.cleanup import engine, expiry_ranges, records, selection
from observability.cleanup.report import CleanupReport, Progress
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


def _applied_session_column(chosen: selection.Selection) -> str:
    """
    What an applied expired-key run counts its rows by, beside the key type.

    A run over chosen sessions (a salon, the admin's selection) counts each session. A run
    over every session (the nightly job) counts by key type only, under
    ``records.EVERY_SESSION``: at a thousand sessions a batch holds thousands of (session,
    key type) groups, and counting them costs the database and this process about a third
    of the delete itself. The dry run always counts per session and key type.
    """
    if chosen.session_ids is not None:
        return "company_id"
    return f"'{records.EVERY_SESSION}'::text"


def _common_parameters(chosen: selection.Selection, size: int, cutoff: datetime) -> dict:
    return {
        **chosen.as_parameters(),
        "cutoff": cutoff.isoformat(),
        "batch_size": size,
        "lock_timeout_ms": int(config.cleanup_lock_timeout().total_seconds() * 1000),
        "statement_timeout_ms": int(config.cleanup_statement_timeout().total_seconds() * 1000),
    }


def cleanup_expired_keys(
    *,
    salons: Iterable[str | int] | None = None,
    sessions: Iterable[str] | None = None,
    key_types: Iterable[str] | None = None,
    grace: timedelta | None = None,
    batch_size: int | None = None,
    apply: bool = False,
    started_by: str = "command",
    now: datetime | None = None,
    progress: Progress | None = None,
) -> CleanupReport:
    """
    Delete (or, by default, count) keys whose ``expires_at`` passed more than ``grace`` ago.

    Each batch is a range of the partial index on ``expires_at``: from where the previous
    batch ended up to the expiry of the (batch size + 1)-th row, found by walking that many
    index entries (never the entries of rows already deleted). An applied run plans the
    ranges on a second connection, counting each by session and key type, while the first
    deletes the previous range and commits (see :mod:`~observability.cleanup.lookahead`):
    the audit's counts then cost the run almost no time. A range whose delete removes
    other than what was counted (the bot rewrote a key meanwhile: each row's expiry is
    re-checked as it is deleted, so the rewritten key is kept) is rolled back and deleted
    again, counting row by row. More than a batch of keys expiring at one instant are taken
    a batch at a time by row address. A row the bot holds locked is waited for (at most
    ``lock_timeout``, then the batch is retried). An applied run over every session counts
    by key type only (see :func:`_applied_session_column`).

    Args:
        salons: salon ids in either spelling (both spellings are cleaned); None: all.
        sessions: exact session ids (the admin's selection).
        key_types: restrict to these key types; None: all.
        grace: how long after expiry a key is kept (setting, default 7 days).
        batch_size: rows per batch (setting, default 5,000).
        apply: delete; False (the default) only counts.
        started_by: who started the run, for the record.
        now: the current time (tests).
        progress: progress receiver.

    Returns:
        The report; ``rows_seen`` of a dry run is exactly what an apply would delete then.
        An applied run over every session reports its rows under
        ``records.EVERY_SESSION`` (``"*"``), by key type.

    Raises:
        BadInput, MalformedSessionId, SessionNotFound: before anything runs or is recorded.
        CleanupAlreadyRunning, BotDatabaseUnavailable, QueryTimedOut: see the engine.

    """
    alias = config.bot_database_alias()
    grace = selection.period(grace, config.cleanup_grace_period(), "grace period")
    size = selection.batch_size(batch_size, config.cleanup_batch_size())
    with translate_database_errors(alias):
        chosen = selection.build(salons=salons, sessions=sessions, types=key_types, alias=alias)
    cutoff = (now or timezone.now()) - grace
    filters, filter_params = _filters(chosen, "whatsapp_keys")
    parameters = {
        **_common_parameters(chosen, size, cutoff),
        "grace_days": grace / timedelta(days=1),
    }

    def count():
        return engine.count_by_session_and_type(
            alias,
            # Only code-built fragments are interpolated; every value is a parameter.
            "SELECT company_id, key_type, count(*) FROM whatsapp_keys "  # noqa: S608
            f"WHERE expires_at IS NOT NULL AND expires_at < %s {filters} GROUP BY 1, 2",
            [cutoff, *filter_params],
        )

    ranges = expiry_ranges.ExpiryRanges(
        alias,
        where=f"expires_at IS NOT NULL AND expires_at < %s {filters}",
        where_params=[cutoff, *filter_params],
        session=_applied_session_column(chosen),
        size=size,
    )
    return engine.run_delete_operation(
        operation="expired_keys",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        count=count,
        batches=ranges.batches,
        progress=progress,
        count_on_apply=False,
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
    min_age = selection.period(min_age, config.cleanup_orphan_age(), "minimum age")
    size = selection.batch_size(batch_size, config.cleanup_batch_size())
    with translate_database_errors(alias):
        chosen = selection.build(salons=salons, sessions=sessions, types=key_types, alias=alias)
    cutoff = (now or timezone.now()) - min_age
    filters, filter_params = _filters(chosen, "k")
    parameters = {
        **_common_parameters(chosen, size, cutoff),
        "min_age_days": min_age / timedelta(days=1),
    }
    orphan = (
        "NOT EXISTS (SELECT 1 FROM whatsapp_auth a WHERE a.company_id = k.company_id) "
        "AND k.updated_at < %s"
    )

    def count():
        return engine.count_by_session_and_type(
            alias,
            "SELECT k.company_id, k.key_type, count(*) FROM whatsapp_keys k "  # noqa: S608
            f"WHERE {orphan} {filters} GROUP BY 1, 2",
            [cutoff, *filter_params],
        )

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

    return engine.run_delete_operation(
        operation="orphan_keys",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        count=count,
        batches=lambda: nullcontext(delete_batch),
        progress=progress,
    )
