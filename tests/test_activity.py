"""Tests of observability.activity against the real embedded PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connections

from observability import activity
from observability.exceptions import BotDatabaseUnavailable
from tests.health_support import (
    closed_port,
    extra_alias,
    idle_transaction,
    real_connections,
    running_query,
)

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


def test_server_activity__groups_connections_by_application_name():
    """Three real connections of one service show as three under its name."""
    with real_connections("svc-activity-a", 3):
        server = activity.server_activity()
    services = server.by_service()
    assert services["svc-activity-a"].total == 3
    assert services["svc-activity-a"].idle == 3
    assert server.max_connections >= 20
    assert server.total >= 3
    assert 0 < server.usage < 1


def test_server_activity__counts_idle_in_transaction_past_the_threshold():
    """A transaction left open past the threshold is counted for its service."""
    with idle_transaction("svc-activity-idle"):
        time.sleep(0.3)
        server = activity.server_activity(idle_after=timedelta(milliseconds=200))
    service = server.by_service()["svc-activity-idle"]
    assert service.idle_in_transaction == 1
    assert service.idle_in_transaction_too_long == 1
    assert service.longest_idle_in_transaction >= 0.2


def test_server_activity__counts_long_running_queries():
    """A real pg_sleep running past the threshold is counted as a long query."""
    with running_query("svc-activity-slow"):
        time.sleep(0.3)
        server = activity.server_activity(long_after=timedelta(milliseconds=200))
    service = server.by_service()["svc-activity-slow"]
    assert service.active == 1
    assert service.long_running == 1
    assert service.longest_query >= 0.2


def test_server_activity__short_queries_are_not_long():
    """With the default 60 s threshold a fresh query does not count as long."""
    with running_query("svc-activity-fresh"):
        server = activity.server_activity()
    assert server.by_service()["svc-activity-fresh"].long_running == 0


def test_pool_stats__counts_requests_of_this_process():
    """Borrowing a pooled connection shows in the pool's request counter."""
    before = activity.pool_stats("bot")
    activity.ping("bot")
    after = activity.pool_stats("bot")
    assert after.requests_num == before.requests_num + 1
    assert after.pool_max == connections["bot"].pool.max_size
    assert after.since(before).requests_num == 1


def test_pool_stats__none_when_pooling_is_off():
    """An alias without a pool has no pool statistics (DB_POOL=0)."""
    options = {k: v for k, v in connections.settings["bot"]["OPTIONS"].items() if k != "pool"}
    with extra_alias("nopool", OPTIONS=options) as alias:
        assert activity.pool_stats(alias) is None
        assert activity.ping(alias).pooled is False


def test_ping__pooled_connection_goes_back_to_the_pool():
    """After a ping the pool has as many idle connections as it holds (none kept out)."""
    activity.ping("bot")
    stats = activity.pool_stats("bot")
    in_use_by_test = 1  # the test's own transaction holds one bot connection
    assert stats.pool_size - stats.pool_available <= in_use_by_test
    assert activity.ping("bot").latency < timedelta(seconds=1)


def test_ping__closed_port_fails_fast():
    """A server that refuses connections is reported as unavailable within seconds."""
    options = {k: v for k, v in connections.settings["bot"]["OPTIONS"].items() if k != "pool"}
    with extra_alias("refused", HOST="127.0.0.1", PORT=str(closed_port()), OPTIONS=options):
        started = time.monotonic()
        with pytest.raises(BotDatabaseUnavailable, match="'refused' database is unavailable"):
            activity.ping("refused")
    assert time.monotonic() - started < 3


def test_server_activity__unreachable_server_is_translated():
    """pg_stat_activity on a down server raises the project's error, not a driver error."""
    options = {k: v for k, v in connections.settings["bot"]["OPTIONS"].items() if k != "pool"}
    with (
        extra_alias("refused2", HOST="127.0.0.1", PORT=str(closed_port()), OPTIONS=options),
        pytest.raises(BotDatabaseUnavailable),
    ):
        activity.server_activity("refused2")


def test_timed_transaction__cancels_a_slow_statement_and_returns_the_connection_unchanged():
    """A pipelined statement past its timeout is cancelled; the connection keeps its own."""
    from observability.exceptions import QueryTimedOut, translate_database_errors

    with activity.monitoring_connection("bot") as connection:
        configured = connection.execute("SHOW statement_timeout").fetchone()[0]
    started = time.monotonic()
    with pytest.raises(QueryTimedOut):  # noqa: SIM117 (the translation wraps the pipeline's end)
        with translate_database_errors("bot"), activity.monitoring_connection("bot") as connection:
            with activity._timed_transaction(connection, timedelta(milliseconds=100)) as cursor:
                cursor.execute("SELECT pg_sleep(3)")
    assert time.monotonic() - started < 2
    with activity.monitoring_connection("bot") as connection:
        assert connection.info.transaction_status == 0  # idle, no transaction left open
        assert connection.execute("SHOW statement_timeout").fetchone()[0] == configured
