"""Connection activity: this process's pools and the server-wide ``pg_stat_activity``."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from django.db import connections

from observability import config
from observability.exceptions import translate_database_errors

logger = logging.getLogger(__name__)

#: Label for backends that set no ``application_name`` (psql without one, replication tools).
UNNAMED = "(unnamed)"

# --- Connections used for monitoring ----------------------------------------------------------


def _milliseconds(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds() * 1000))


@contextlib.contextmanager
def monitoring_connection(alias: str) -> Iterator[psycopg.Connection]:
    """
    A short-lived psycopg connection to ``alias`` that never outlives the block.

    With a pool, the connection is borrowed from this process's pool for the alias with a
    bounded wait (``health_connect_timeout``), so a monitor never queues behind a drained pool
    for the pool's own, longer timeout. Without a pool (``DB_POOL=0``), a new connection is
    opened with ``connect_timeout`` and closed at the end. Either way no connection is left
    behind in the calling thread: health checks run in short-lived executor threads, where
    Django's per-thread connections would otherwise stay checked out of the pool forever.

    Raises:
        BotDatabaseUnavailable: the server cannot be reached in time.

    """
    wait = config.health_connect_timeout()
    with translate_database_errors(alias):
        wrapper = connections[alias]
        # The bot alias's backend fails at once while its circuit breaker is open, and
        # learns from this attempt too (observability.db_backend); others connect plainly.
        guarded = getattr(wrapper, "guarded_connect", None) or contextlib.nullcontext
        pool = wrapper.pool
        if pool is not None:
            with guarded():
                pool.open()  # idempotent; Django opens it lazily on first use as well
                connection = pool.getconn(timeout=wait.total_seconds())
            try:
                yield connection
            finally:
                pool.putconn(connection)
            return
        params = wrapper.get_connection_params()
        # libpq ignores values under 2 seconds, so ask for at least that.
        params["connect_timeout"] = max(2, round(wait.total_seconds()))
        params["autocommit"] = True
        with guarded():
            connection = psycopg.connect(**params)
        try:
            yield connection
        finally:
            connection.close()


@contextlib.contextmanager
def _timed_transaction(
    connection: psycopg.Connection, timeout: timedelta
) -> Iterator[psycopg.Cursor]:
    """A transaction whose statements the server cancels after ``timeout``.

    ``SET LOCAL`` ends with the transaction, so a pooled connection goes back unchanged. The
    statements go in psycopg's pipeline mode: ``BEGIN``, ``SET LOCAL``, the block's statements
    and ``COMMIT`` travel together and wait for the server once where the block reads a result
    (and once at the end), not once each; a health check polled by every monitor made five
    round trips for one ``SELECT 1``. Errors (a cancelled statement) are raised at the latest
    when the block ends, inside the caller's ``translate_database_errors``.
    """
    with connection.pipeline(), connection.transaction(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL statement_timeout = {_milliseconds(timeout)}")
        yield cursor


# --- Reachability -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    """
    One round trip to a database.

    Attributes:
        alias: the Django alias asked.
        latency: connection acquisition plus the trivial query.
        pooled: True when the connection came from this process's pool.

    """

    alias: str
    latency: timedelta
    pooled: bool


def ping(alias: str) -> Ping:
    """
    Borrow or open a connection and run ``SELECT 1`` under the health statement timeout.

    Raises:
        BotDatabaseUnavailable: connecting failed, was refused or timed out.
        QueryTimedOut: the server cancelled the query.

    """
    started = time.perf_counter()
    with (
        translate_database_errors(alias),
        monitoring_connection(alias) as connection,
        _timed_transaction(connection, config.health_statement_timeout()) as cursor,
    ):
        cursor.execute("SELECT 1")  # its answer is read when the block's pipeline ends
    elapsed = timedelta(seconds=time.perf_counter() - started)
    return Ping(alias=alias, latency=elapsed, pooled=connections[alias].pool is not None)


# --- This process's pools ---------------------------------------------------------------------

#: The pool's counters since it was created (``PoolStats`` fields; ``/metrics`` exports each).
POOL_COUNTERS = (
    "requests_num",
    "requests_queued",
    "requests_wait_ms",
    "requests_errors",
    "connections_num",
    "connections_errors",
    "connections_lost",
    "returns_bad",
)


@dataclass(frozen=True)
class PoolStats:
    """
    psycopg pool statistics of one alias in this process.

    Gauges (``pool_*``, ``requests_waiting``) are current; the other fields are counters
    since the pool was created (see :meth:`since`).

    Attributes:
        alias: the Django alias.
        pool_min, pool_max: configured sizes.
        pool_size: connections the pool holds now (in use or idle).
        pool_available: idle connections ready to lend.
        requests_waiting: callers waiting for a connection right now.
        requests_num: connections requested.
        requests_queued: requests that had to wait for a connection.
        requests_wait_ms: total time requests waited.
        requests_errors: requests that failed (timed out waiting, queue full).
        connections_num: server connections opened.
        connections_errors: server connection attempts that failed.
        connections_lost: connections found broken.
        returns_bad: connections returned in a bad state.

    """

    alias: str
    pool_min: int = 0
    pool_max: int = 0
    pool_size: int = 0
    pool_available: int = 0
    requests_waiting: int = 0
    requests_num: int = 0
    requests_queued: int = 0
    requests_wait_ms: int = 0
    requests_errors: int = 0
    connections_num: int = 0
    connections_errors: int = 0
    connections_lost: int = 0
    returns_bad: int = 0

    def since(self, previous: PoolStats | None) -> PoolStats:
        """These stats with every counter made relative to ``previous`` (gauges unchanged)."""
        if previous is None:
            return self
        changes = {
            name: max(0, getattr(self, name) - getattr(previous, name)) for name in POOL_COUNTERS
        }
        return dataclasses.replace(self, **changes)


def pool_stats(alias: str) -> PoolStats | None:
    """
    This process's pool statistics for ``alias``, or None when pooling is off for it.

    Reading the stats does not reset them, so the pool check and /metrics can both read them.
    """
    pool = connections[alias].pool
    if pool is None:
        return None
    stats = pool.get_stats()
    fields = {f.name for f in dataclasses.fields(PoolStats)} - {"alias"}
    return PoolStats(alias=alias, **{name: int(stats.get(name, 0)) for name in fields})


# --- Server-wide activity ---------------------------------------------------------------------

_ACTIVITY_SQL = """
    SELECT coalesce(nullif(application_name, ''), %(unnamed)s) AS service,
           count(*) AS total,
           count(*) FILTER (WHERE state = 'active') AS active,
           count(*) FILTER (WHERE state = 'idle') AS idle,
           count(*) FILTER (WHERE state LIKE 'idle in transaction%%') AS idle_in_transaction,
           count(*) FILTER (
               WHERE state LIKE 'idle in transaction%%'
                 AND clock_timestamp() - state_change > %(idle_after)s
           ) AS idle_in_transaction_too_long,
           count(*) FILTER (
               WHERE state = 'active' AND pid <> pg_backend_pid()
                 AND clock_timestamp() - query_start > %(long_after)s
           ) AS long_running,
           coalesce(extract(epoch FROM max(clock_timestamp() - state_change) FILTER (
               WHERE state LIKE 'idle in transaction%%')), 0) AS longest_idle_in_transaction,
           coalesce(extract(epoch FROM max(clock_timestamp() - query_start) FILTER (
               WHERE state = 'active' AND pid <> pg_backend_pid())), 0) AS longest_query,
           current_setting('max_connections')::int AS max_connections
      FROM pg_stat_activity
     WHERE backend_type = 'client backend'
  GROUP BY 1
  ORDER BY 2 DESC, 1
"""


@dataclass(frozen=True)
class ServiceActivity:
    """
    The server connections of one ``application_name``.

    Attributes:
        service: the application_name (``(unnamed)`` when empty).
        total: client connections it holds.
        active, idle, idle_in_transaction: connections in each state.
        idle_in_transaction_too_long: idle in a transaction past the threshold.
        long_running: queries running past the threshold.
        longest_idle_in_transaction: seconds of the oldest idle transaction (0 when none).
        longest_query: seconds of the longest running query (0 when none).

    """

    service: str
    total: int
    active: int
    idle: int
    idle_in_transaction: int
    idle_in_transaction_too_long: int
    long_running: int
    longest_idle_in_transaction: float
    longest_query: float


@dataclass(frozen=True)
class ServerActivity:
    """
    Every client connection of the server, grouped by ``application_name``.

    Attributes:
        services: one entry per application_name, most connections first.
        max_connections: the server's ``max_connections``.
        idle_after: the idle-in-transaction threshold used.
        long_after: the long-query threshold used.

    """

    services: tuple[ServiceActivity, ...]
    max_connections: int
    idle_after: timedelta
    long_after: timedelta

    @property
    def total(self) -> int:
        """Client connections over all services."""
        return sum(service.total for service in self.services)

    @property
    def usage(self) -> float:
        """Share of ``max_connections`` in use (0..1+)."""
        return self.total / self.max_connections if self.max_connections else 0.0

    def by_service(self) -> dict[str, ServiceActivity]:
        """The services keyed by application_name."""
        return {service.service: service for service in self.services}


def server_activity(
    alias: str | None = None,
    *,
    idle_after: timedelta | None = None,
    long_after: timedelta | None = None,
) -> ServerActivity:
    """
    Read ``pg_stat_activity`` of the server behind ``alias`` (needs only ``pg_monitor``).

    Args:
        alias: the Django alias to ask (default ``activity_database_alias``).
        idle_after: idle-in-transaction threshold (default from config).
        long_after: long-query threshold (default from config).

    Raises:
        BotDatabaseUnavailable: the server cannot be reached.
        QueryTimedOut: the query ran past ``activity_statement_timeout``.

    """
    alias = alias or config.activity_database_alias()
    idle_after = idle_after if idle_after is not None else config.idle_in_transaction_warning()
    long_after = long_after if long_after is not None else config.long_query_warning()
    with (
        translate_database_errors(alias),
        monitoring_connection(alias) as connection,
        _timed_transaction(connection, config.activity_statement_timeout()) as cursor,
    ):
        cursor.execute(
            _ACTIVITY_SQL,
            {"unnamed": UNNAMED, "idle_after": idle_after, "long_after": long_after},
        )
        rows = cursor.fetchall()
    # Every row carries the setting; there is always one (this query's own connection).
    max_connections = rows[0][9] if rows else 0
    services = tuple(
        ServiceActivity(
            service=row[0],
            total=row[1],
            active=row[2],
            idle=row[3],
            idle_in_transaction=row[4],
            idle_in_transaction_too_long=row[5],
            long_running=row[6],
            longest_idle_in_transaction=float(row[7]),
            longest_query=float(row[8]),
        )
        for row in rows
    )
    return ServerActivity(
        services=services,
        max_connections=max_connections,
        idle_after=idle_after,
        long_after=long_after,
    )
