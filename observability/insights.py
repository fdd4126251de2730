"""
Insights into the bot's database (PgHero-style): sizes, vacuum, indexes, locks, slow queries.

Plain data for the admin's insights page and the hourly size capture. Every query reads the
statistics views and the catalogue only, so the read-only role (SELECT on the four tables and
``pg_monitor``) is enough, and each panel runs in its own transaction under a short
``statement_timeout`` (``OBSERVABILITY_INSIGHTS_STATEMENT_TIMEOUT``, 2 s): a panel that times
out says so and the others still show. Nothing here changes the bot's database: the duplicate
index panel writes the ``DROP INDEX CONCURRENTLY`` statement for the bot team, never runs it.

No query text from ``pg_stat_activity`` is ever read: it is the statement exactly as sent,
literals included (an ``INSERT`` of a session's creds, a key's value). Blocked and long
transactions are described by their command word (``UPDATE``), the relation they wait for,
``application_name``, state and ages. ``pg_stat_statements`` replaces literals with ``$1``;
its text is still scrubbed of any quoted literal (utility statements such as ``ALTER ROLE ...
PASSWORD '...'`` may keep theirs) and cut to a readable length.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from observability import config
from observability.exceptions import ObservabilityError, translate_database_errors
from observability.schema import BOT_TABLES

logger = logging.getLogger(__name__)

#: Top queries shown from ``pg_stat_statements``.
TOP_QUERIES = 10
#: Characters of a normalised query shown.
QUERY_TEXT_LIMIT = 300

STATEMENTS_HOWTO = (
    "pg_stat_statements is not installed in the bot's database. To see the slowest queries, "
    "a DBA adds it to shared_preload_libraries in postgresql.conf (a restart), runs "
    "CREATE EXTENSION pg_stat_statements; in the bot's database, and the read-only role "
    "reads it through pg_monitor (no other grant needed)."
)


# --- Results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelationSize:
    """
    A bot table or one of its indexes, and its size on disk.

    Attributes:
        table: the bot table it belongs to.
        relation: the table's or the index's name.
        kind: ``table`` (heap and TOAST, without indexes) or ``index``.
        bytes: its size.

    """

    table: str
    relation: str
    kind: str
    bytes: int


@dataclass(frozen=True)
class TableActivity:
    """
    Dead tuples and the last (auto)vacuum and analyze of one bot table (pg_stat_user_tables).

    Attributes:
        table: the bot table.
        live_tuples, dead_tuples: the statistics' estimates.
        last_vacuum, last_autovacuum, last_analyze, last_autoanalyze: when they last ran.
        vacuum_count, autovacuum_count: how often since the statistics were reset.
        modified_since_analyze: rows changed since the last analyze.

    """

    table: str
    live_tuples: int
    dead_tuples: int
    last_vacuum: datetime | None
    last_autovacuum: datetime | None
    last_analyze: datetime | None
    last_autoanalyze: datetime | None
    vacuum_count: int
    autovacuum_count: int
    modified_since_analyze: int

    @property
    def dead_share(self) -> float:
        """Dead tuples among all tuples (0 for an empty table)."""
        total = self.live_tuples + self.dead_tuples
        return self.dead_tuples / total if total else 0.0

    @property
    def last_vacuumed(self) -> datetime | None:
        """The latest vacuum, manual or automatic."""
        return max((t for t in (self.last_vacuum, self.last_autovacuum) if t), default=None)

    @property
    def last_analyzed(self) -> datetime | None:
        """The latest analyze, manual or automatic."""
        return max((t for t in (self.last_analyze, self.last_autoanalyze) if t), default=None)


@dataclass(frozen=True)
class IndexUse:
    """
    How often one index of a bot table was used (pg_stat_user_indexes).

    Attributes:
        table, index: names.
        scans: index scans since the statistics were reset.
        bytes: its size.
        unique: a unique or primary key index (it enforces a constraint: never "unused").
        definition: ``CREATE INDEX ...`` as the catalogue has it.

    """

    table: str
    index: str
    scans: int
    bytes: int
    unique: bool
    definition: str

    @property
    def unused(self) -> bool:
        """Never scanned and enforcing nothing: to drop, after checking with the bot team."""
        return self.scans == 0 and not self.unique


@dataclass(frozen=True)
class DuplicateIndex:
    """
    An index that repeats another: same table, columns, operator classes, predicate, method.

    Attributes:
        table: the bot table.
        index: the redundant index (the later one; never a unique or constraint index).
        duplicate_of: the index it repeats, which stays.
        bytes: the space the redundant index costs (and every write updates it too).
        drop_statement: the exact statement for the bot team. This project never runs it.

    """

    table: str
    index: str
    duplicate_of: str
    bytes: int
    drop_statement: str


@dataclass(frozen=True)
class BlockedSession:
    """
    A backend waiting for a lock, and the backend holding it (``pg_blocking_pids``).

    No query text (it carries literals: creds, key values); the command word only.

    Attributes:
        blocked_pid, blocked_application, blocked_command: the waiting backend.
        waiting_seconds: how long its current statement has waited.
        lock_mode, relation: the lock it waits for (relation None for non-table locks).
        blocking_pid, blocking_application, blocking_command, blocking_state: the holder.
        blocking_transaction_seconds: how long the holder's transaction has been open.

    """

    blocked_pid: int
    blocked_application: str
    blocked_command: str
    waiting_seconds: float
    lock_type: str
    lock_mode: str
    relation: str | None
    blocking_pid: int
    blocking_application: str
    blocking_command: str
    blocking_state: str
    blocking_transaction_seconds: float | None


@dataclass(frozen=True)
class LongTransaction:
    """
    A transaction open for longer than the threshold (it holds back vacuum and may hold locks).

    Attributes:
        pid, application, user, state: the backend.
        command: the first word of its current or last statement (no query text).
        transaction_seconds: how long the transaction has been open.
        state_seconds: how long it has been in its current state.

    """

    pid: int
    application: str
    user: str
    state: str
    command: str
    transaction_seconds: float
    state_seconds: float


@dataclass(frozen=True)
class TopQuery:
    """
    One normalised statement from ``pg_stat_statements`` (literals shown as ``$1``).

    Attributes:
        queryid: the extension's id of the normalised statement.
        calls, total_ms, mean_ms, rows: its counters.
        text: the normalised text, scrubbed of quoted literals and cut short.

    """

    queryid: int
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    text: str


@dataclass(frozen=True)
class Panel:
    """
    One panel's data, or why it has none (timed out, not permitted).

    Attributes:
        rows: the panel's rows (empty when it failed).
        error: a message for the page, empty when the panel worked.

    """

    rows: tuple = ()
    error: str = ""


@dataclass(frozen=True)
class Insights:
    """Everything the insights page shows, each part with its own error."""

    sizes: Panel
    activity: Panel
    indexes: Panel
    duplicates: Panel
    blocking: Panel
    long_transactions: Panel
    top_queries: Panel
    statements_installed: bool
    long_transaction_after: timedelta
    stats_reset: datetime | None
    read_at: datetime = field(default_factory=timezone.now)

    @property
    def unused_indexes(self) -> tuple[IndexUse, ...]:
        """Indexes never scanned that enforce nothing."""
        return tuple(index for index in self.indexes.rows if index.unused)


# --- Running a panel --------------------------------------------------------------------------


def _alias() -> str:
    return config.bot_database_alias()


@contextlib.contextmanager
def bounded_cursor(alias: str | None = None) -> Iterator[Any]:
    """
    A cursor in a transaction whose statements the server cancels after the panel timeout.

    ``set_config(..., true)`` is ``SET LOCAL``: it ends with the transaction, so a pooled
    connection goes back with its usual timeout. The statistics snapshot is cleared first,
    so a page always reads the counters as they are now.

    Raises:
        QueryTimedOut, BotDatabaseUnavailable: see :func:`translate_database_errors`.

    """
    alias = alias or _alias()
    timeout_ms = max(1, int(config.insights_statement_timeout().total_seconds() * 1000))
    with (
        translate_database_errors(alias),
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(timeout_ms)])
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        yield cursor


def _panel(read: Callable[[Any], tuple]) -> Panel:
    """Run one panel's reader; a timeout or a refused query becomes the panel's message."""
    try:
        with bounded_cursor() as cursor:
            return Panel(rows=tuple(read(cursor)))
    except ObservabilityError as error:
        logger.warning("insights panel %s failed: %s", read.__name__, error.message)
        return Panel(error=error.message)


# --- Sizes ------------------------------------------------------------------------------------

_SIZES_SQL = """
    SELECT t.relname, t.relname, 'table', pg_table_size(t.oid)
      FROM pg_class t
     WHERE t.oid = ANY(%(tables)s::regclass[])
    UNION ALL
    SELECT t.relname, i.relname, 'index', pg_relation_size(i.oid)
      FROM pg_index x
      JOIN pg_class t ON t.oid = x.indrelid
      JOIN pg_class i ON i.oid = x.indexrelid
     WHERE x.indrelid = ANY(%(tables)s::regclass[])
  ORDER BY 1, 3 DESC, 4 DESC, 2
"""


def _present_tables(cursor) -> list[str]:
    """The bot tables that exist in the search path (``to_regclass`` is NULL otherwise)."""
    cursor.execute(
        "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
        [list(BOT_TABLES)],
    )
    return [row[0] for row in cursor.fetchall()]


def read_sizes(cursor) -> list[RelationSize]:
    """Each bot table's size (heap and TOAST) and each of its indexes' sizes, largest first."""
    cursor.execute(_SIZES_SQL, {"tables": _present_tables(cursor)})
    return [RelationSize(*row) for row in cursor.fetchall()]


# --- Dead tuples and vacuum -------------------------------------------------------------------

_ACTIVITY_SQL = """
    SELECT relname, n_live_tup, n_dead_tup, last_vacuum, last_autovacuum, last_analyze,
           last_autoanalyze, vacuum_count, autovacuum_count, n_mod_since_analyze
      FROM pg_stat_user_tables
     WHERE relid = ANY(%(tables)s::regclass[])
  ORDER BY n_dead_tup DESC, relname
"""


def read_activity(cursor) -> list[TableActivity]:
    """Dead tuples and the last vacuum and analyze of each bot table, most dead first."""
    cursor.execute(_ACTIVITY_SQL, {"tables": _present_tables(cursor)})
    return [TableActivity(*row) for row in cursor.fetchall()]


# --- Indexes ----------------------------------------------------------------------------------

_INDEXES_SQL = """
    SELECT s.relname, s.indexrelname, s.idx_scan, pg_relation_size(s.indexrelid),
           x.indisunique OR x.indisprimary, pg_get_indexdef(s.indexrelid)
      FROM pg_stat_user_indexes s
      JOIN pg_index x ON x.indexrelid = s.indexrelid
     WHERE s.relid = ANY(%(tables)s::regclass[])
  ORDER BY s.idx_scan, pg_relation_size(s.indexrelid) DESC, s.indexrelname
"""

# Indexes with the same table, method, columns (or expressions), operator classes,
# collations and predicate answer the same queries: all but one are dead weight. The one
# kept is a unique, primary or constraint index if any, else the oldest (lowest oid).
_DUPLICATES_SQL = """
    SELECT t.relname, i.relname, x.indexrelid::oid::bigint,
           x.indisunique OR x.indisprimary
               OR EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid),
           pg_relation_size(x.indexrelid),
           concat_ws('|', i.relam::text, x.indkey::text, x.indclass::text,
                     x.indcollation::text, x.indoption::text,
                     coalesce(pg_get_expr(x.indexprs, x.indrelid), ''),
                     coalesce(pg_get_expr(x.indpred, x.indrelid), '')),
           CASE WHEN n.nspname = current_schema() THEN format('%%I', i.relname)
                ELSE format('%%I.%%I', n.nspname, i.relname) END
      FROM pg_index x
      JOIN pg_class i ON i.oid = x.indexrelid
      JOIN pg_class t ON t.oid = x.indrelid
      JOIN pg_namespace n ON n.oid = i.relnamespace
     WHERE x.indrelid = ANY(%(tables)s::regclass[])
"""


def read_indexes(cursor) -> list[IndexUse]:
    """Every index of the bot tables with its scans and size, least used first."""
    cursor.execute(_INDEXES_SQL, {"tables": _present_tables(cursor)})
    return [IndexUse(*row) for row in cursor.fetchall()]


def read_duplicates(cursor) -> list[DuplicateIndex]:
    """Indexes that repeat another index of the same table, with the statement to drop each."""
    cursor.execute(_DUPLICATES_SQL, {"tables": _present_tables(cursor)})
    groups: dict[tuple[str, str], list[tuple]] = {}
    for table, index, oid, enforces, size, shape, qualified in cursor.fetchall():
        groups.setdefault((table, shape), []).append((not enforces, oid, index, size, qualified))
    found = []
    for (table, _shape), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        kept, *others = sorted(members)
        for droppable, _oid, index, size, qualified in others:
            if not droppable:  # two identical unique indexes: each enforces; leave both
                continue
            found.append(
                DuplicateIndex(
                    table=table,
                    index=index,
                    duplicate_of=kept[2],
                    bytes=size,
                    drop_statement=f"DROP INDEX CONCURRENTLY {qualified};",
                )
            )
    return found


# --- Locks and long transactions --------------------------------------------------------------

# The command word of a statement, never its text.
_COMMAND = "upper(substring(ltrim({column}) FROM '^[A-Za-z]+'))"

_BLOCKING_SQL = f"""
    SELECT w.pid, w.application_name, {_COMMAND.format(column="w.query")},
           extract(epoch FROM now() - coalesce(w.state_change, w.query_start))::float8,
           coalesce(l.locktype, ''), coalesce(l.mode, ''),
           CASE WHEN l.relation IS NOT NULL THEN l.relation::regclass::text END,
           h.pid, h.application_name, {_COMMAND.format(column="h.query")}, h.state,
           extract(epoch FROM now() - h.xact_start)::float8
      FROM pg_stat_activity w
      CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid)
      JOIN pg_stat_activity h ON h.pid = b.pid
      LEFT JOIN LATERAL (
            SELECT locktype, mode, relation FROM pg_locks
             WHERE pg_locks.pid = w.pid AND NOT granted LIMIT 1
      ) AS l ON true
     WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
  ORDER BY 4 DESC, w.pid, h.pid
"""  # noqa: S608 - only a module constant is interpolated

_LONG_TRANSACTIONS_SQL = f"""
    SELECT pid, application_name, usename, state, {_COMMAND.format(column="query")},
           extract(epoch FROM now() - xact_start)::float8,
           extract(epoch FROM now() - state_change)::float8
      FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND xact_start < now() - make_interval(secs => %(after)s)
  ORDER BY xact_start, pid
"""  # noqa: S608 - only a module constant is interpolated


def read_blocking(cursor) -> list[BlockedSession]:
    """Every backend of the bot database waiting for a lock, with who holds it."""
    cursor.execute(_BLOCKING_SQL)
    return [
        BlockedSession(
            row[0],
            row[1] or "",
            row[2] or "",
            row[3] or 0.0,
            row[4],
            row[5],
            row[6],
            row[7],
            row[8] or "",
            row[9] or "",
            row[10] or "",
            row[11],
        )
        for row in cursor.fetchall()
    ]


def read_long_transactions(cursor) -> list[LongTransaction]:
    """Transactions of the bot database open longer than the threshold, oldest first."""
    after = config.insights_long_transaction_after().total_seconds()
    cursor.execute(_LONG_TRANSACTIONS_SQL, {"after": after})
    return [
        LongTransaction(
            pid, app or "", user or "", state or "", command or "", xact or 0.0, since or 0.0
        )
        for pid, app, user, state, command, xact, since in cursor.fetchall()
    ]


# --- pg_stat_statements -----------------------------------------------------------------------

# Escape strings (E'...', backslashes escape), plain, bit, national and Unicode strings, and
# dollar-quoted bodies ($$...$$, $tag$...$tag$); $1 placeholders are not literals.
#: What a statement's text may hide something in, matched left to right in one pass so a
#: quote inside a comment or a ``--`` inside a literal is read as what it is.
_HIDING = re.compile(
    r"(?P<quoted>[Ee]'(?:[^'\\]|\\.|'')*'"
    r"|(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*'"
    r"|\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$)"
    r"|(?P<comment>--[^\n]*|/\*.*?\*/)"
    r"|(?P<number>(?<![\w$])\d+(?:\.\d*)?(?:[Ee][+-]?\d+)?)",
    re.DOTALL,
)
_SPACES = re.compile(r"\s+")

_STATEMENTS_SQL = """
    SELECT queryid, calls, total_exec_time, mean_exec_time, rows, query
      FROM pg_stat_statements
     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND queryid IS NOT NULL
  ORDER BY total_exec_time DESC
     LIMIT %(limit)s
"""


def _hidden(found: re.Match) -> str:
    if found.group("quoted"):
        return "'…'"
    if found.group("comment"):
        return " "
    return "…"


def scrub_query(text: str) -> str:
    """
    A normalised statement safe to show: quoted literals replaced, whitespace folded, cut.

    ``pg_stat_statements`` already shows constants as ``$1``; some utility statements keep
    theirs (``ALTER ROLE ... PASSWORD '...'``, a phone as a bare number), so every quoted or
    dollar-quoted literal becomes ``'…'`` and every bare number ``…`` all the same; comments,
    where a client may put anything (sqlcommenter tags, ids), are dropped.
    """
    scrubbed = _SPACES.sub(" ", _HIDING.sub(_hidden, text or "")).strip()
    if len(scrubbed) > QUERY_TEXT_LIMIT:
        scrubbed = scrubbed[: QUERY_TEXT_LIMIT - 1] + "…"
    return scrubbed


def statements_installed(cursor) -> bool:
    """``pg_stat_statements`` is installed in the bot's database (its view is on the path)."""
    cursor.execute("SELECT to_regclass('pg_stat_statements') IS NOT NULL")
    return bool(cursor.fetchone()[0])


def read_top_queries(cursor) -> list[TopQuery]:
    """The statements that took the most time in total, normalised and scrubbed."""
    cursor.execute(_STATEMENTS_SQL, {"limit": TOP_QUERIES})
    return [
        TopQuery(queryid, calls, round(total, 1), round(mean, 2), rows, scrub_query(text))
        for queryid, calls, total, mean, rows, text in cursor.fetchall()
    ]


def _stats_reset(cursor) -> list[datetime | None]:
    cursor.execute("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")
    row = cursor.fetchone()
    return [row[0] if row else None]


# --- The page ---------------------------------------------------------------------------------


def read() -> Insights:
    """
    Every panel of the insights page, each in its own bounded transaction.

    Raises:
        BotDatabaseUnavailable: the bot database cannot be reached at all.

    """
    installed = _panel(lambda cursor: [statements_installed(cursor)])
    has_statements = bool(installed.rows and installed.rows[0])
    if has_statements:
        top = _panel(read_top_queries)
    else:
        top = Panel(error=installed.error or STATEMENTS_HOWTO)
    reset = _panel(_stats_reset)
    return Insights(
        sizes=_panel(read_sizes),
        activity=_panel(read_activity),
        indexes=_panel(read_indexes),
        duplicates=_panel(read_duplicates),
        blocking=_panel(read_blocking),
        long_transactions=_panel(read_long_transactions),
        top_queries=top,
        statements_installed=has_statements,
        long_transaction_after=config.insights_long_transaction_after(),
        stats_reset=reset.rows[0] if reset.rows else None,
    )


# --- Size history -----------------------------------------------------------------------------


def capture_sizes(*, now: datetime | None = None) -> int:
    """
    Store the size of every bot table and index now, and forget samples past retention.

    Called hourly by ``observability.tasks.capture_table_sizes``.

    Returns:
        The number of samples stored.

    Raises:
        QueryTimedOut, BotDatabaseUnavailable: the sizes could not be read.

    """
    from observability.models import TableSizeSample

    now = now or timezone.now()
    with bounded_cursor() as cursor:
        sizes = read_sizes(cursor)
    TableSizeSample.objects.bulk_create(
        TableSizeSample(
            taken_at=now,
            table=size.table,
            relation=size.relation,
            kind=size.kind,
            bytes=size.bytes,
        )
        for size in sizes
    )
    TableSizeSample.objects.filter(taken_at__lt=now - config.insights_size_retention()).delete()
    return len(sizes)


@dataclass(frozen=True)
class SizePoint:
    """A table's total size (heap, TOAST and indexes) on one day: the day's last sample."""

    day: datetime
    bytes: int


def size_history(*, days: int = 30, now: datetime | None = None) -> dict[str, list[SizePoint]]:
    """
    Each bot table's total size per day over the last ``days`` (the day's last sample).

    Returns:
        ``{table: [SizePoint, ...]}`` oldest first; tables without samples are absent.

    """
    from django.db.models import Max, Sum
    from django.db.models.functions import TruncDate

    from observability.models import TableSizeSample

    now = now or timezone.now()
    recent = TableSizeSample.objects.filter(taken_at__gte=now - timedelta(days=days))
    latest_per_day = (
        recent.annotate(day=TruncDate("taken_at", tzinfo=UTC))  # the page charts UTC days
        .values("day")
        .annotate(last=Max("taken_at"))
        .values_list("last", flat=True)
    )
    totals = (
        recent.filter(taken_at__in=list(latest_per_day))
        .values("table", "taken_at")
        .annotate(total=Sum("bytes"))
        .order_by("table", "taken_at")
    )
    history: dict[str, list[SizePoint]] = {}
    for row in totals:
        history.setdefault(row["table"], []).append(SizePoint(row["taken_at"], row["total"]))
    return history
