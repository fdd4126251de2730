"""Expired keys and orphan keys: the batched deletes over ``whatsapp_keys``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connections, transaction
from django.utils import timezone

from observability import config
from observability.cleanup import engine, lookahead, records, selection
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


def _above(lower: datetime | None, inclusive: bool) -> tuple[str, list]:
    """The condition ``expires_at >= lower`` (or ``>``), nothing when there is no lower end."""
    if lower is None:
        return "", []
    return ("AND expires_at >= %s" if inclusive else "AND expires_at > %s"), [lower]


@dataclass(frozen=True)
class _Range:
    """
    One planned batch: the expired keys with ``lower <= expires_at < upper``, as counted.

    ``upper`` None means up to the cutoff; ``seen`` is what the range held when counted,
    by session and key type, ``rows`` its total.
    """

    lower: datetime | None
    inclusive: bool
    upper: datetime | None
    seen: tuple[engine.Group, ...] = ()
    rows: int = 0

    def sql(self) -> tuple[str, list]:
        """The range's conditions on ``expires_at`` and their parameters."""
        above, params = _above(self.lower, self.inclusive)
        if self.upper is None:
            return above, params
        return f"{above} AND expires_at < %s", [*params, self.upper]


@dataclass(frozen=True)
class _Instant:
    """More than a batch of keys expired at one instant: deleted a batch at a time."""

    at: datetime


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

    where = f"expires_at IS NOT NULL AND expires_at < %s {filters}"
    where_params = [cutoff, *filter_params]
    session = _applied_session_column(chosen)

    def plan() -> Iterator[_Range | _Instant]:
        # Each step walks (size + 1) entries of the expiry index past the previous range
        # (never the entries of rows already planned or deleted): the range ends at the last
        # one's expiry, so keys expiring at one instant fall in one range, and more than a
        # batch of them at one instant become an _Instant. Then it counts the range.
        lower: datetime | None = None
        inclusive = True
        while True:
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                engine.set_local_timeouts(cursor)
                above, above_params = _above(lower, inclusive)
                cursor.execute(
                    f"SELECT (SELECT expires_at FROM whatsapp_keys WHERE {where} {above} "  # noqa: S608
                    "ORDER BY expires_at LIMIT 1), "
                    f"(SELECT expires_at FROM whatsapp_keys WHERE {where} {above} "
                    "ORDER BY expires_at OFFSET %s LIMIT 1)",
                    [*where_params, *above_params, *where_params, *above_params, size],
                )
                first, upper = cursor.fetchone()
                if first is None:
                    return
                if upper == first:
                    step: _Range | _Instant = _Instant(first)
                else:
                    range_sql, range_params = _Range(lower, inclusive, upper).sql()
                    cursor.execute(
                        f"SELECT {session}, key_type, count(*) FROM whatsapp_keys "  # noqa: S608
                        f"WHERE {where} {range_sql} GROUP BY 1, 2",
                        [*where_params, *range_params],
                    )
                    seen = tuple(cursor.fetchall())
                    step = _Range(lower, inclusive, upper, seen, sum(n for _, _, n in seen))
            yield step
            if upper is None:
                return
            lower, inclusive = (first, False) if isinstance(step, _Instant) else (upper, True)

    state: dict = {"exact": False, "row_bytes": None, "pending": None}

    def delete_batch(cursor, planned: Iterator[_Range | _Instant]) -> engine.BatchResult:
        if state["row_bytes"] is None:
            state["row_bytes"] = engine.average_row_bytes(alias, "whatsapp_keys")
        if state["pending"] is None:
            state["pending"] = next(planned, None)
            if state["pending"] is None:
                return engine.BatchResult((), more=False)
        step = state["pending"]
        if isinstance(step, _Instant):
            groups = _delete_at_instant(cursor, step.at)
            if not groups:  # the instant's rows are gone (or all changed): move on
                state["pending"] = None
            return _deleted(groups, sum(n for _, _, n in groups), seen=groups)
        range_sql, range_params = step.sql()
        params = [*where_params, *range_params]
        if state["exact"]:
            # The range changed after it was counted: count what is deleted, row by row.
            cursor.execute(
                "WITH deleted AS ("  # noqa: S608
                f" DELETE FROM whatsapp_keys WHERE {where} {range_sql}"
                f" RETURNING {session} AS session_id, key_type"
                ") SELECT session_id, key_type, count(*) FROM deleted GROUP BY 1, 2",
                params,
            )
            groups = cursor.fetchall()
            rows = sum(n for _, _, n in groups)
            state["exact"] = False
        else:
            # Delete the counted range: much cheaper than DELETE ... RETURNING. The delete
            # re-checks each row, so a key the bot rewrote meanwhile (new expires_at) is
            # kept; then the counts no longer match and the batch is redone exactly.
            cursor.execute(f"DELETE FROM whatsapp_keys WHERE {where} {range_sql}", params)  # noqa: S608
            if cursor.rowcount != step.rows:
                state["exact"] = True
                raise engine.BatchChanged()
            groups, rows = step.seen, step.rows
        state["pending"] = None
        return _deleted(groups, rows, seen=step.seen)

    def _deleted(groups, rows: int, seen) -> engine.BatchResult:
        return engine.BatchResult(
            groups, more=True, seen=seen, deleted_bytes=rows * state["row_bytes"]
        )

    def _delete_at_instant(cursor, instant: datetime) -> list:
        # More than a batch of keys expired at one instant (the bot writes keys in bulk):
        # take them a batch at a time, by physical row address, within that instant.
        cursor.execute(
            "WITH deleted AS ("  # noqa: S608
            " DELETE FROM whatsapp_keys WHERE ctid = ANY(ARRAY("
            f"  SELECT ctid FROM whatsapp_keys WHERE {where} AND expires_at = %s LIMIT %s"
            f" )) AND {where} AND expires_at = %s"
            f" RETURNING {session} AS session_id, key_type"
            ") SELECT session_id, key_type, count(*) FROM deleted GROUP BY 1, 2",
            [*where_params, instant, size, *where_params, instant],
        )
        return cursor.fetchall()

    @contextmanager
    def batches() -> Iterator[engine.BatchDeleter]:
        with lookahead.planned_ahead(alias, plan) as planned:
            yield lambda cursor: delete_batch(cursor, planned)

    return engine.run_delete_operation(
        operation="expired_keys",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        count=count,
        batches=batches,
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
