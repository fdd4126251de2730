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

    Each batch is a range of the partial index on ``expires_at``: from where the previous
    batch ended up to the expiry of the (batch size + 1)-th row, found by walking that many
    index entries; no batch walks the entries of rows already deleted, and the delete itself
    is one index range scan (about as cheap per row as a bare ``DELETE``). More than a batch
    of keys expiring at the same instant are deleted together. A row the bot holds locked is
    waited for (at most ``lock_timeout``, then the batch is retried); each row's expiry is
    re-checked as it is deleted, so a key the bot rewrites meanwhile is kept.

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

    # Where the next batch starts: (expires_at, inclusive). Each batch starts past the
    # previous one, so no batch walks the index entries of rows already deleted. The floor
    # moves only once a batch's delete succeeded (a retried batch must find its rows again).
    floor: list[tuple[datetime, bool]] = []
    where = f"expires_at IS NOT NULL AND expires_at < %s {filters}"
    state: dict = {"exact": False, "row_bytes": None}

    def delete_batch(cursor):
        if state["row_bytes"] is None:
            state["row_bytes"] = engine.average_row_bytes(alias, "whatsapp_keys")
        floor_sql, floor_params = "", []
        if floor:
            value, inclusive = floor[-1]
            floor_sql, floor_params = (
                ("AND expires_at >= %s" if inclusive else "AND expires_at > %s"),
                [value],
            )
        # The batch is a range of the partial index on expires_at: from the floor up to the
        # (size + 1)-th row's expiry, found by walking ``size`` index entries.
        cursor.execute(
            f"SELECT (SELECT expires_at FROM whatsapp_keys WHERE {where} {floor_sql} "  # noqa: S608
            "ORDER BY expires_at LIMIT 1), "
            f"(SELECT expires_at FROM whatsapp_keys WHERE {where} {floor_sql} "
            "ORDER BY expires_at OFFSET %s LIMIT 1)",
            [cutoff, *filter_params, *floor_params, cutoff, *filter_params, *floor_params, size],
        )
        first, upper = cursor.fetchone()
        if first is None:
            return [], False
        if upper == first:
            return _delete_tie_batch(cursor, first)
        upper_sql, upper_params = ("AND expires_at < %s", [upper]) if upper else ("", [])
        batch_where = f"{where} {floor_sql} {upper_sql}"
        params = [cutoff, *filter_params, *floor_params, *upper_params]
        if state["exact"]:
            # The range changed under the cheap path: count what is deleted, row by row.
            cursor.execute(
                "WITH deleted AS ("  # noqa: S608
                f" DELETE FROM whatsapp_keys WHERE {batch_where} RETURNING company_id, key_type"
                ") SELECT company_id, key_type, count(*) FROM deleted GROUP BY 1, 2",
                params,
            )
            groups = cursor.fetchall()
            state["exact"] = False
        else:
            # Count the range, then delete it: much cheaper than DELETE ... RETURNING. The
            # delete re-checks each row, so a key the bot rewrote meanwhile (new expires_at)
            # is kept; then the counts no longer match and the batch is redone exactly.
            cursor.execute(
                "SELECT company_id, key_type, count(*) FROM whatsapp_keys "  # noqa: S608
                f"WHERE {batch_where} GROUP BY 1, 2",
                params,
            )
            groups = cursor.fetchall()
            cursor.execute(f"DELETE FROM whatsapp_keys WHERE {batch_where}", params)  # noqa: S608
            if cursor.rowcount != sum(group[2] for group in groups):
                state["exact"] = True
                raise engine.BatchChanged()
        if upper is not None:
            floor.append((upper, True))
        return [(s, t, n, n * state["row_bytes"]) for s, t, n in groups], upper is not None

    def _delete_tie_batch(cursor, instant):
        # More than a batch of keys expired at one instant (the bot writes keys in bulk):
        # take them a batch at a time, by physical row address, within that instant.
        cursor.execute(
            "WITH deleted AS ("  # noqa: S608
            " DELETE FROM whatsapp_keys WHERE ctid = ANY(ARRAY("
            f"  SELECT ctid FROM whatsapp_keys WHERE {where} AND expires_at = %s LIMIT %s"
            f" )) AND {where} AND expires_at = %s"
            " RETURNING company_id, key_type"
            ") SELECT company_id, key_type, count(*) FROM deleted GROUP BY 1, 2",
            [cutoff, *filter_params, instant, size, cutoff, *filter_params, instant],
        )
        groups = cursor.fetchall()
        if not groups:  # the instant's rows all changed under us: move past it
            floor.append((instant, False))
        return [(s, t, n, n * state["row_bytes"]) for s, t, n in groups], True

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
        groups = cursor.fetchall()
        return groups, bool(groups)

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
