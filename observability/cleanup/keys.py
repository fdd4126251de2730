"""Expired keys and orphan keys: the batched deletes over ``whatsapp_keys``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.utils import timezone

from observability import config
from observability.cleanup import engine, selection
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

    Rows are taken in ``expires_at`` order through the partial index
    ``idx_whatsapp_keys_expires``, a batch at a time, each batch starting where the last one
    ended (so no batch rescans the dead rows of the previous ones). Rows the bot holds
    locked are skipped (``SKIP LOCKED``), and each row's expiry is re-checked when deleted,
    so a key the bot rewrites meanwhile (new ``expires_at``) is kept.

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

    floor: list[datetime] = []  # the expires_at where the next batch starts

    def delete_batch(cursor):
        floor_sql = "AND expires_at >= %s" if floor else ""
        # The deleted rows are grouped in SQL: a batch returns a few rows, not thousands.
        cursor.execute(
            "WITH deleted AS ("  # noqa: S608
            " DELETE FROM whatsapp_keys WHERE ctid = ANY(ARRAY("
            "  SELECT ctid FROM whatsapp_keys"
            f"  WHERE expires_at IS NOT NULL AND expires_at < %s {floor_sql} {filters}"
            "  ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED"
            f" )) AND expires_at < %s {filters}"
            " RETURNING company_id, key_type, expires_at,"
            "  pg_column_size(whatsapp_keys.*) AS row_bytes"
            ") SELECT company_id, key_type, count(*), sum(row_bytes), max(expires_at) "
            "FROM deleted GROUP BY 1, 2",
            [cutoff, *floor[-1:], *filter_params, size, cutoff, *filter_params],
        )
        groups = cursor.fetchall()
        if groups:
            floor.append(max(group[4] for group in groups))
        return [group[:4] for group in groups]

    return engine.run_delete_operation(
        operation="expired_keys",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        count=count,
        delete_batch=delete_batch,
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
            "  LIMIT %s FOR UPDATE OF k SKIP LOCKED"
            f" )) AND {orphan} {filters}"
            " RETURNING k.company_id, k.key_type, pg_column_size(k.*) AS row_bytes"
            ") SELECT company_id, key_type, count(*), sum(row_bytes) FROM deleted GROUP BY 1, 2",
            [cutoff, *filter_params, size, cutoff, *filter_params],
        )
        return cursor.fetchall()

    return engine.run_delete_operation(
        operation="orphan_keys",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        count=count,
        delete_batch=delete_batch,
        progress=progress,
    )
