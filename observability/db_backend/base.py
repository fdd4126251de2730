"""
Django's PostgreSQL backend, plus what keeps a sick bot database from stalling the service.

Three additions, all at the moment a connection is made (``get_new_connection``):

- **A circuit breaker** (:mod:`observability.circuit_breaker`), one per alias and server in
  each process: after a failed connection the next attempts fail at once for a few seconds.
- **The pool tells at once when it cannot connect.** psycopg's pool connects in its own
  threads and retries with a growing back-off while the caller waits out the whole pool
  timeout: a refused connection cost every request 5 s. Here the pool's connection class
  reports each failed attempt: the breaker opens and the pool is discarded (``close()`` fails
  its waiting callers at once with ``PoolClosed``). The request that tries again after the
  cool-off gets a fresh pool that connects at once, rather than one in the middle of a back-off.
- **No other pooled connection is held while waiting.** The session and authentication
  middleware read the project's own database early in a request and Django keeps that
  connection until the request ends. Under threaded workers, requests waiting for the bot
  database then held every ``default`` connection and the project's own pages and health
  failed too. Before connecting, this thread's idle pooled connections of the other aliases
  go back to their pools (a later query takes one again; never inside a transaction).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import psycopg
import psycopg_pool
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.postgresql import base as postgresql

from observability import circuit_breaker, exceptions


def _server_key(alias: str, params: dict) -> tuple:
    """The breaker's key: the alias and the server it points at (tests repoint an alias)."""
    return (alias, params.get("host"), params.get("port"), params.get("dbname"))


def _breaker(alias: str, params: dict) -> circuit_breaker.CircuitBreaker:
    return circuit_breaker.breaker_for(_server_key(alias, params), f"database {alias!r}")


def _discard_pool(alias: str, params: dict) -> None:
    """
    Drop ``alias``'s pool in this process when it points at that server, and close it.

    Closing fails the callers waiting on it at once. ``timeout=0``: its threads stop on their
    own (one may still be inside a connection attempt); a pool that is not waited for cannot
    keep anyone waiting.
    """
    pools = postgresql.DatabaseWrapper._connection_pools
    pool = pools.get(alias)
    if pool is None or _server_key(alias, pool.kwargs or {}) != _server_key(alias, params):
        return
    if pools.get(alias) is pool:
        with contextlib.suppress(KeyError):
            del pools[alias]
    pool.close(timeout=0)


@functools.cache
def _reporting_connection_class(alias: str) -> type[psycopg.Connection]:
    """The pool's connection class for ``alias``: a failed connect opens the breaker at once."""

    class ReportingConnection(psycopg.Connection):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs):
            try:
                return super().connect(conninfo, **kwargs)
            except psycopg.Error as error:
                _breaker(alias, kwargs).failed(error)
                # In a pool thread, which close() would join: discard from another thread.
                threading.Thread(
                    target=_discard_pool,
                    args=(alias, kwargs),
                    name=f"discard-pool-{alias}",
                    daemon=True,
                ).start()
                raise

    ReportingConnection.__qualname__ = f"ReportingConnection[{alias}]"
    return ReportingConnection


def _release_other_pooled_connections(current: DatabaseWrapper) -> None:
    """Give this thread's idle pooled connections of other aliases back to their pools."""
    for other in connections.all(initialized_only=True):
        if (
            other is not current
            and other.connection is not None
            and other.settings_dict["OPTIONS"].get("pool")
            and not other.in_atomic_block
            and other.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            other.close()


class DatabaseWrapper(postgresql.DatabaseWrapper):
    """PostgreSQL with a circuit breaker, a pool that reports failures, and nothing held."""

    def __init__(self, settings_dict: dict, alias: str = DEFAULT_DB_ALIAS) -> None:
        options = settings_dict.get("OPTIONS") or {}
        pool = options.get("pool")
        if pool:
            # A copy: the settings dict is shared by every thread's wrapper.
            pool = {} if pool is True else dict(pool)
            pool.setdefault("connection_class", _reporting_connection_class(alias))
            settings_dict = {**settings_dict, "OPTIONS": {**options, "pool": pool}}
        super().__init__(settings_dict, alias)

    @contextlib.contextmanager
    def guarded_connect(self, params: dict | None = None) -> Iterator[None]:
        """
        Run a connection attempt (the block) under this alias's breaker.

        Used by :meth:`get_new_connection` and by health checks that borrow from the pool
        directly (``activity.monitoring_connection``). A failure other than a busy pool opens
        the breaker and discards the pool.

        Raises:
            CircuitOpen: a connection failed less than a cool-off ago.

        """
        params = params if params is not None else self.get_connection_params()

        def busy(error: BaseException) -> bool:
            return exceptions._pool_exhausted(error, self.alias)

        breaker = _breaker(self.alias, params)
        try:
            with breaker.attempt(reachable=busy):
                try:
                    yield
                except psycopg_pool.PoolClosed as error:
                    # Discarded while this caller waited: another attempt failed; say which.
                    raise breaker.refusal() from error
        except circuit_breaker.CircuitOpen:
            raise
        except Exception as error:
            if self.settings_dict["OPTIONS"].get("pool") and not busy(error):
                _discard_pool(self.alias, params)
            raise

    def get_new_connection(self, conn_params: dict):
        """Connect (or borrow from the pool) under the breaker, holding no other connection."""
        _release_other_pooled_connections(self)
        with self.guarded_connect(conn_params):
            return super().get_new_connection(conn_params)
