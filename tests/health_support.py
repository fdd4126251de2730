"""Real connections, extra database aliases and committed rows for the health tests."""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
from django.db import connections


def connection_params(alias: str, application_name: str) -> dict:
    """The libpq parameters of ``alias`` (the test database) under another application_name."""
    params = connections[alias].get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold", "pool"):
        params.pop(key, None)
    params["application_name"] = application_name
    params["autocommit"] = True
    return params


@contextlib.contextmanager
def real_connections(
    application_name: str, count: int, alias: str = "bot"
) -> Iterator[list[psycopg.Connection]]:
    """Open ``count`` real server connections that show as ``application_name``."""
    opened = [psycopg.connect(**connection_params(alias, application_name)) for _ in range(count)]
    try:
        yield opened
    finally:
        for connection in opened:
            connection.close()
        wait_until_backends_gone(alias, application_name)


def wait_until_backends_gone(alias: str, application_name: str, timeout: float = 5) -> None:
    """
    Wait until the server lists no backend of ``application_name`` any more.

    A client-side close does not end the server's backend at once: for a moment it still counts
    in ``pg_stat_activity`` (and still holds its advisory locks), which made the next check of
    a test see connections that were already closed.
    """
    params = connection_params(alias, "wait-until-backends-gone")
    deadline = time.monotonic() + timeout
    with psycopg.connect(**params) as watcher:
        while time.monotonic() < deadline:
            left = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [application_name],
            ).fetchone()[0]
            if not left:
                return
            time.sleep(0.02)
    raise AssertionError(f"backends of {application_name!r} outlived their close by {timeout} s")


@contextlib.contextmanager
def idle_transaction(application_name: str, alias: str = "bot") -> Iterator[None]:
    """A real connection left idle inside an open transaction."""
    params = connection_params(alias, application_name)
    params["autocommit"] = False
    with psycopg.connect(**params) as connection:
        connection.execute("SELECT 1")  # opens the transaction; the session is now idle in it
        yield
        connection.rollback()


@contextlib.contextmanager
def running_query(application_name: str, seconds: float = 5, alias: str = "bot") -> Iterator[None]:
    """A real ``pg_sleep`` running in a thread; cancelled at the end of the block."""
    connection = psycopg.connect(**connection_params(alias, application_name))
    thread = threading.Thread(
        target=lambda: _swallow(connection.execute, "SELECT pg_sleep(%s)", [seconds]),
        daemon=True,
    )
    thread.start()
    try:
        with psycopg.connect(**connection_params(alias, "health-test-observer")) as observer:
            for _ in range(100):
                row = observer.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = %s AND state = 'active'",
                    [application_name],
                ).fetchone()
                if row[0]:
                    break
                time.sleep(0.02)
        yield
    finally:
        connection.cancel_safe()
        thread.join(5)
        connection.close()


def _swallow(function, *args) -> None:
    with contextlib.suppress(psycopg.Error):
        function(*args)


def closed_port() -> int:
    """A localhost TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def extra_alias(name: str, base: str = "bot", **changes) -> Iterator[str]:
    """
    Add a database alias (a copy of ``base`` with ``changes``) for the duration of the block.

    ``OPTIONS`` in ``changes`` replace the base's options; its pool is closed at the end.
    """
    settings_dict = copy.deepcopy(connections.settings[base])
    settings_dict.update(changes)
    connections.settings[name] = settings_dict
    try:
        yield name
    finally:
        wrapper = connections[name]
        wrapper.close()
        if wrapper.pool is not None:
            wrapper.close_pool()
        with contextlib.suppress(AttributeError):
            del connections[name]
        del connections.settings[name]


def committed_bot_sql(statement: str, params: list | None = None) -> None:
    """Run one statement on the test bot database in its own committed transaction."""
    with psycopg.connect(**connection_params("bot", "health-test-writer")) as connection:
        connection.execute(statement, params or [])


@contextlib.contextmanager
def database_down(alias: str):
    """
    Point ``alias`` at a closed port (pool and all) for this thread only, then put it back.

    A fresh connection wrapper with its own pool (0.5 s timeout) replaces the alias's; the
    original wrapper and pool are put back afterwards, so other tests see the real database.
    """
    from django.db.backends.postgresql.base import DatabaseWrapper

    from observability import circuit_breaker

    original = connections[alias]
    saved_pool = DatabaseWrapper._connection_pools.pop(alias, None)
    settings_dict = copy.deepcopy(original.settings_dict)
    settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port()))
    options = settings_dict["OPTIONS"]
    if options.get("pool"):
        options["pool"] = {**options["pool"], "timeout": 0.5}
    down = original.__class__(settings_dict, alias=alias)
    connections[alias] = down
    try:
        yield down
    finally:
        down.close()
        down.close_pool()
        circuit_breaker.reset_all()  # the breakers of this process start closed again
        connections[alias] = original
        if saved_pool is not None:
            DatabaseWrapper._connection_pools[alias] = saved_pool
