"""The expired-key batches: ranges of the ``expires_at`` index, planned ahead, deleted exactly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.db import connections

from observability.cleanup import engine, lookahead


def _above(lower: datetime | None, inclusive: bool) -> tuple[str, list]:
    """The condition ``expires_at >= lower`` (or ``>``), nothing when there is no lower end."""
    if lower is None:
        return "", []
    return ("AND expires_at >= %s" if inclusive else "AND expires_at > %s"), [lower]


@dataclass(frozen=True)
class PlannedRange:
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
class CrowdedInstant:
    """More than a batch of keys expired at one instant: deleted a batch at a time."""

    at: datetime


class ExpiryRanges:
    """
    Deletes the expired keys matching ``where`` range by range, counting them exactly.

    Each range is planned by walking (batch size + 1) entries of the partial index on
    ``expires_at`` past the previous range, never the entries of rows already planned or
    deleted: it ends at the last entry's expiry, so keys expiring at one instant fall in one
    range (more than a batch of them at one instant is a :class:`CrowdedInstant`). The plan
    counts each range; the delete compares its row count with that count, and when they
    differ (the bot rewrote a key meanwhile: the delete re-checks each row, so the rewritten
    key is kept) the batch is rolled back and redone with ``DELETE ... RETURNING``.

    Planning runs on a second connection while the first deletes
    (:mod:`~observability.cleanup.lookahead`): counting a range costs about as much as
    deleting it, and done beside the delete it costs the run almost no time.

    Args:
        alias: the bot database alias.
        where: the SQL condition selecting the expired keys (code-built, with ``%s``).
        where_params: its parameters.
        session: the SQL expression the rows are counted by beside the key type.
        size: rows per batch.

    """

    def __init__(self, alias: str, where: str, where_params: list, session: str, size: int):
        self.alias, self.where, self.where_params = alias, where, where_params
        self.session, self.size = session, size
        self._pending: PlannedRange | CrowdedInstant | None = None
        self._exact = False
        self._row_bytes: int | None = None

    @contextmanager
    def batches(self) -> Iterator[engine.BatchDeleter]:
        """The deleter of an applied run, with the planner running beside it."""
        with lookahead.planned_ahead(self.alias, self.plan) as planned:
            yield lambda cursor: self.delete(cursor, planned)

    def plan(self) -> Iterator[PlannedRange | CrowdedInstant]:
        """
        Walk the index range by range, counting each (see the class).

        The planner only reads: each query is its own transaction, without the batches'
        ``lock_timeout`` (a read waits for no row lock, and holds none the bot could wait
        for), under the connection's own statement ceiling.
        """
        lower: datetime | None = None
        inclusive = True
        while True:
            with connections[self.alias].cursor() as cursor:
                step = self._plan_step(cursor, lower, inclusive)
            if step is None:
                return
            yield step
            if isinstance(step, CrowdedInstant):
                lower, inclusive = step.at, False
            elif step.upper is None:
                return
            else:
                lower, inclusive = step.upper, True

    def _plan_step(
        self, cursor, lower: datetime | None, inclusive: bool
    ) -> PlannedRange | CrowdedInstant | None:
        where, where_params = self.where, self.where_params
        above, above_params = _above(lower, inclusive)
        cursor.execute(
            f"SELECT (SELECT expires_at FROM whatsapp_keys WHERE {where} {above} "  # noqa: S608
            "ORDER BY expires_at LIMIT 1), "
            f"(SELECT expires_at FROM whatsapp_keys WHERE {where} {above} "
            "ORDER BY expires_at OFFSET %s LIMIT 1)",
            [*where_params, *above_params, *where_params, *above_params, self.size],
        )
        first, upper = cursor.fetchone()
        if first is None:
            return None
        if upper == first:
            return CrowdedInstant(first)
        range_sql, range_params = PlannedRange(lower, inclusive, upper).sql()
        cursor.execute(
            f"SELECT {self.session}, key_type, count(*) FROM whatsapp_keys "  # noqa: S608
            f"WHERE {where} {range_sql} GROUP BY 1, 2",
            [*where_params, *range_params],
        )
        seen = tuple(cursor.fetchall())
        return PlannedRange(lower, inclusive, upper, seen, sum(n for _, _, n in seen))

    def delete(
        self, cursor, planned: Iterator[PlannedRange | CrowdedInstant]
    ) -> engine.BatchResult:
        """Delete the next planned range (or the pending one again, after a retry)."""
        if self._row_bytes is None:
            self._row_bytes = engine.average_row_bytes(self.alias, "whatsapp_keys")
        if self._pending is None:
            self._pending = next(planned, None)
            if self._pending is None:
                return engine.BatchResult((), more=False)
        step = self._pending
        if isinstance(step, CrowdedInstant):
            groups = self._delete_at_instant(cursor, step.at)
            if not groups:  # the instant's rows are gone (or all changed): move on
                self._pending = None
            return self._result(groups, sum(n for _, _, n in groups), seen=groups)
        range_sql, range_params = step.sql()
        params = [*self.where_params, *range_params]
        if self._exact:
            # The range changed after it was counted: count what is deleted, row by row.
            cursor.execute(
                "WITH deleted AS ("  # noqa: S608
                f" DELETE FROM whatsapp_keys WHERE {self.where} {range_sql}"
                f" RETURNING {self.session} AS session_id, key_type"
                ") SELECT session_id, key_type, count(*) FROM deleted GROUP BY 1, 2",
                params,
            )
            groups = cursor.fetchall()
            rows = sum(n for _, _, n in groups)
            self._exact = False
        else:
            # Delete the counted range: much cheaper than DELETE ... RETURNING.
            cursor.execute(f"DELETE FROM whatsapp_keys WHERE {self.where} {range_sql}", params)  # noqa: S608
            if cursor.rowcount != step.rows:
                self._exact = True
                raise engine.BatchChanged()
            groups, rows = step.seen, step.rows
        self._pending = None
        return self._result(groups, rows, seen=step.seen)

    def _result(self, groups, rows: int, seen) -> engine.BatchResult:
        return engine.BatchResult(
            groups, more=True, seen=seen, deleted_bytes=rows * self._row_bytes
        )

    def _delete_at_instant(self, cursor, instant: datetime) -> list:
        # Take a batch of the instant's keys by physical row address.
        where, where_params = self.where, self.where_params
        cursor.execute(
            "WITH deleted AS ("  # noqa: S608
            " DELETE FROM whatsapp_keys WHERE ctid = ANY(ARRAY("
            f"  SELECT ctid FROM whatsapp_keys WHERE {where} AND expires_at = %s LIMIT %s"
            f" )) AND {where} AND expires_at = %s"
            f" RETURNING {self.session} AS session_id, key_type"
            ") SELECT session_id, key_type, count(*) FROM deleted GROUP BY 1, 2",
            [*where_params, instant, self.size, *where_params, instant],
        )
        return cursor.fetchall()
