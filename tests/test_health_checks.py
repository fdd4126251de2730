"""Tests of the health checks: OK, WARN and FAIL of each, driven by real rows and connections."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import psycopg_pool
import pytest
from django.db import connections
from django.utils import timezone
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from observability import health_checks, snapshot
from observability.health_checks import (
    ConnectionBudget,
    ConnectionPool,
    Database,
    JobQueue,
    Process,
    SnapshotFreshness,
    WhatsAppStore,
)
from observability.models import Snapshot
from tests import factories
from tests.health_support import (
    closed_port,
    extra_alias,
    idle_transaction,
    real_connections,
    running_query,
)

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

CLEANUP_FUNC = "observability.tasks.cleanup_expired_keys_task"


def _judged() -> None:
    """Take a snapshot of the rows as they are, then run the store check over it."""
    snapshot.refresh(full=True)
    WhatsAppStore().run()


def _options_without_pool() -> dict:
    return {k: v for k, v in connections.settings["bot"]["OPTIONS"].items() if k != "pool"}


# --- Database ---------------------------------------------------------------------------------


def test_database__ok_for_each_alias():
    """Both configured databases answer SELECT 1 quickly."""
    Database(alias="default").run()
    Database(alias="bot").run()


def test_database__warns_above_the_latency_setting(settings):
    """A round trip slower than the latency setting is a warning that says how slow."""
    settings.OBSERVABILITY_HEALTH_LATENCY_WARNING = timedelta(0)
    with pytest.raises(ServiceWarning, match=r"'bot' database answered in \d+ ms"):
        Database(alias="bot").run()


def test_database__fails_fast_on_a_refused_connection():
    """A closed port fails the check within the connect timeout, without a traceback text."""
    port = str(closed_port())
    with extra_alias("down", HOST="127.0.0.1", PORT=port, OPTIONS=_options_without_pool()):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="Cannot connect to the 'down' database"):
            Database(alias="down").run()
    assert time.monotonic() - started < 3


def test_database__fails_within_the_connect_timeout_through_a_pool(settings):
    """With a pool, a refused connection fails the check at once, not after the pool timeout."""
    settings.OBSERVABILITY_HEALTH_CONNECT_TIMEOUT = timedelta(seconds=1)
    options = {**_options_without_pool(), "pool": {"min_size": 0, "max_size": 2, "timeout": 30}}
    with extra_alias("downpool", HOST="127.0.0.1", PORT=str(closed_port()), OPTIONS=options):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="within 1 s"):
            Database(alias="downpool").run()
        elapsed = time.monotonic() - started
    assert elapsed < 1  # the pool's connection failure is reported (observability.db_backend)


def test_database__unknown_alias_fails():
    """A misspelt alias is a clear failure."""
    with pytest.raises(ServiceUnavailable, match="No database alias 'nope'"):
        Database(alias="nope").run()


# --- Connection pool --------------------------------------------------------------------------


@pytest.fixture
def small_pool():
    """A real two-connection pool of its own, so its counters start at zero."""
    options = {
        **_options_without_pool(),
        "application_name": "health-test-pool",
        "pool": {"min_size": 0, "max_size": 2, "timeout": 5},
    }
    with extra_alias("smallpool", OPTIONS=options) as alias:
        pool = connections[alias].pool
        pool.open()
        yield alias, pool


def _exhaust(pool) -> list:
    return [pool.getconn() for _ in range(pool.max_size)]


def test_connection_pool__ok_when_nobody_waited(small_pool):
    """Requests served at once leave the pool check OK."""
    alias, pool = small_pool
    pool.putconn(pool.getconn())
    ConnectionPool(alias=alias).run()


def test_connection_pool__warns_when_a_request_waited(small_pool):
    """A request that had to wait for a connection makes the check warn, once."""
    alias, pool = small_pool
    ConnectionPool(alias=alias).run()  # baseline
    held = _exhaust(pool)
    waiter_got = []
    waiter = threading.Thread(target=lambda: waiter_got.append(pool.getconn(timeout=5)))
    waiter.start()
    time.sleep(0.2)
    pool.putconn(held.pop())
    waiter.join(5)
    held += waiter_got
    try:
        with pytest.raises(ServiceWarning, match=r"1 request\(s\) waited for a busy 'smallpool'"):
            ConnectionPool(alias=alias).run()
        ConnectionPool(alias=alias).run()  # nothing new since the last check
    finally:
        for connection in held:
            pool.putconn(connection)


def test_connection_pool__fails_when_a_request_timed_out(small_pool):
    """A request that timed out waiting for a connection fails the check."""
    alias, pool = small_pool
    ConnectionPool(alias=alias).run()
    held = _exhaust(pool)
    try:
        with pytest.raises(psycopg_pool.PoolTimeout):
            pool.getconn(timeout=0.1)
        with pytest.raises(ServiceUnavailable, match=r"1 request\(s\) .* timed out or failed"):
            ConnectionPool(alias=alias).run()
    finally:
        for connection in held:
            pool.putconn(connection)
    ConnectionPool(alias=alias).run()


def test_connection_pool__ok_without_a_pool():
    """With pooling off there is no pool to exhaust."""
    with extra_alias("nopool", OPTIONS=_options_without_pool()) as alias:
        ConnectionPool(alias=alias).run()


# --- Connection budget ------------------------------------------------------------------------


@pytest.fixture
def _own_pool_budget(settings):
    """
    The test process's own services may hold four connections each at a check.

    The full suite leaves up to three idle in each alias's pool (its max size), and the
    check reads pg_stat_activity over one more at times: these tests are about the svc-*
    services, not about this process's pools.
    """
    own = {db["OPTIONS"].get("application_name") for db in settings.DATABASES.values()}
    settings.OBSERVABILITY_CONNECTION_BUDGET_OVERRIDES = {name: 4 for name in own if name}


@pytest.mark.usefixtures("_own_pool_budget")
def test_connection_budget__ok_within_budgets():
    """Services within three connections each and a quiet server are OK."""
    with real_connections("svc-budget-ok", 3):
        ConnectionBudget().run()


@pytest.mark.usefixtures("_own_pool_budget")
def test_connection_budget__warns_and_names_a_service_over_budget():
    """A service holding four connections against a budget of three is named."""
    with (
        real_connections("svc-budget-over", 4),
        pytest.raises(ServiceWarning, match=r"over their connection budget: svc-budget-over 4/3"),
    ):
        ConnectionBudget().run()


@pytest.mark.usefixtures("_own_pool_budget")
def test_connection_budget__override_raises_a_services_budget(settings):
    """A per-service override lets a larger service through."""
    settings.OBSERVABILITY_CONNECTION_BUDGET_OVERRIDES = {
        **settings.OBSERVABILITY_CONNECTION_BUDGET_OVERRIDES,
        "svc-budget-big": 5,
    }
    with real_connections("svc-budget-big", 4):
        ConnectionBudget().run()


def test_connection_budget__fails_near_max_connections(settings):
    """Connections at the failure share of max_connections fail the check."""
    settings.OBSERVABILITY_CONNECTIONS_TOTAL_FAILURE = 0.05
    settings.OBSERVABILITY_CONNECTION_BUDGET_OVERRIDES = {"svc-budget-flood": 10}
    with (
        real_connections("svc-budget-flood", 6),
        pytest.raises(ServiceUnavailable, match=r"server connections in use .*svc-budget-flood 6"),
    ):
        ConnectionBudget().run()


def test_connection_budget__warns_at_the_warning_share(settings):
    """Connections between the warning and failure shares warn."""
    settings.OBSERVABILITY_CONNECTIONS_TOTAL_WARNING = 0.05
    settings.OBSERVABILITY_CONNECTION_BUDGET_OVERRIDES = {"svc-budget-busy": 10}
    with (
        real_connections("svc-budget-busy", 6),
        pytest.raises(ServiceWarning, match=r"warning at 5%"),
    ):
        ConnectionBudget().run()


def test_connection_budget__warns_on_idle_in_transaction(settings):
    """A transaction held open past the threshold is named with its service."""
    settings.OBSERVABILITY_IDLE_IN_TRANSACTION_WARNING = timedelta(milliseconds=200)
    with idle_transaction("svc-budget-idle"):
        time.sleep(0.3)
        with pytest.raises(ServiceWarning, match=r"idle in transaction .*svc-budget-idle \(1"):
            ConnectionBudget().run()


def test_connection_budget__warns_on_long_queries(settings):
    """A real pg_sleep past the threshold is named with its service."""
    settings.OBSERVABILITY_LONG_QUERY_WARNING = timedelta(milliseconds=200)
    with running_query("svc-budget-slow"):
        time.sleep(0.3)
        with pytest.raises(ServiceWarning, match=r"queries running longer .*svc-budget-slow \(1"):
            ConnectionBudget().run()


def test_connection_budget__fails_when_the_server_is_down(settings):
    """pg_stat_activity unreachable is a failure that says so."""
    with extra_alias(
        "down", HOST="127.0.0.1", PORT=str(closed_port()), OPTIONS=_options_without_pool()
    ):
        settings.OBSERVABILITY_ACTIVITY_DATABASE = "down"
        with pytest.raises(ServiceUnavailable, match="Cannot read pg_stat_activity"):
            ConnectionBudget().run()


# --- WhatsApp store ---------------------------------------------------------------------------


def _session(session_id: str, *, written_hours_ago: float = 0, session_keys: int = 60) -> None:
    written_at = timezone.now() - timedelta(hours=written_hours_ago)
    factories.make_auth(session_id, written_at=written_at)
    factories.make_keys(session_id, "session", session_keys, written_at=written_at)
    factories.make_keys(session_id, "pre-key", 20, written_at=written_at)


def test_whatsapp_store__ok_with_healthy_sessions():
    """Fresh QR-paired sessions with pre-keys are OK."""
    _session("962302")
    _session("company_962303")
    _judged()


def test_whatsapp_store__warns_when_a_session_goes_quiet():
    """A session unwritten for 30 hours warns (24 h / 48 h thresholds)."""
    _session("962302")
    _session("962304", written_hours_ago=30)
    with pytest.raises(ServiceWarning, match=r"1 of 2 session\(s\) warning"):
        _judged()


def test_whatsapp_store__fails_and_counts_failing_sessions():
    """Two sessions unwritten for 3 days fail the check, counted and named by session id."""
    _session("962302")
    _session("962305", written_hours_ago=72)
    _session("company_962306", written_hours_ago=72)
    with pytest.raises(ServiceUnavailable, match=r"2 of 3 session\(s\) failing") as raised:
        _judged()
    assert "962305" in str(raised.value)
    # The sessions' phones never show.
    assert factories.default_phone("962305") not in str(raised.value)
    assert factories.default_phone("company_962306") not in str(raised.value)


def test_whatsapp_store__keys_past_expires_at_never_warn():
    """600 keys past expires_at (pre-keys Baileys still needs) leave the store check OK."""
    _session("962302", session_keys=200)
    factories.make_keys(
        "962302", "pre-key", 600, expires_at=timezone.now() - timedelta(days=1), first_id=100
    )
    _judged()


def test_whatsapp_store__fails_on_one_number_under_both_spellings():
    """A salon logged in as one number under 962302 and company_962302 fails, naming both."""
    _session("962302")
    _session("company_962302")
    with pytest.raises(
        ServiceUnavailable, match=r"1 login\(s\) or number\(s\) .*962302 \+ company_962302"
    ):
        _judged()


def test_whatsapp_store__answers_from_the_snapshot_without_the_bot(bot_database_down):
    """With the bot database down the verdict still comes from the last snapshot."""
    Snapshot.objects.create(
        taken_at=timezone.now() - timedelta(seconds=30),
        kind="full",
        outcome="succeeded",
        store={"findings": [], "status": "OK", "sessions_by_status": {"OK": 0}},
    )
    WhatsAppStore().run()


def test_whatsapp_store__a_stale_snapshot_warns_then_fails(settings):
    """Past 3 minutes the store check warns about the snapshot's age, past 10 it fails."""
    _session("962302")
    now = timezone.now()
    snapshot.refresh(full=True, now=now - timedelta(minutes=4))
    with pytest.raises(ServiceWarning, match=r"· 4 minutes ago.*worker"):
        WhatsAppStore().run()
    Snapshot.objects.update(taken_at=now - timedelta(minutes=11))
    with pytest.raises(ServiceUnavailable, match=r"· 11 minutes ago"):
        WhatsAppStore().run()


def test_whatsapp_store__no_snapshot_fails_saying_how_to_take_one():
    """Before the first snapshot the check fails and names the command that takes one."""
    with pytest.raises(ServiceUnavailable, match=r"take_snapshot"):
        WhatsAppStore().run()


# --- Snapshot freshness and the process -----------------------------------------------------


def test_snapshot_freshness__ok_warn_fail_by_age():
    """A recent snapshot is OK, 4 minutes old warns, 11 minutes old (or none) fails."""
    with pytest.raises(ServiceUnavailable, match="No session health snapshot yet"):
        SnapshotFreshness().run()
    snapshot.refresh(full=True)
    SnapshotFreshness().run()
    Snapshot.objects.update(taken_at=timezone.now() - timedelta(minutes=4))
    with pytest.raises(ServiceWarning, match="· 4 minutes ago"):
        SnapshotFreshness().run()
    Snapshot.objects.update(taken_at=timezone.now() - timedelta(minutes=11))
    with pytest.raises(ServiceUnavailable, match="· 11 minutes ago"):
        SnapshotFreshness().run()


def test_snapshot_freshness__a_failed_refresh_warns_with_its_reason(bot_database_down):
    """A recent snapshot followed by a failed refresh warns and says why it failed."""
    from observability.exceptions import BotDatabaseUnavailable

    Snapshot.objects.create(
        taken_at=timezone.now() - timedelta(seconds=50), kind="full", outcome="succeeded"
    )
    with pytest.raises(BotDatabaseUnavailable):
        snapshot.refresh()
    with pytest.raises(ServiceWarning, match="failed: .*unavailable"):
        SnapshotFreshness().run()


def test_process__always_ok():
    """The liveness check needs nothing but this process."""
    Process().run()


# --- Job queue --------------------------------------------------------------------------------


def _heartbeat(age: timedelta = timedelta(0)) -> None:
    """Store a cluster heartbeat in the shared cache exactly as a running qcluster does."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.signing import SignedPackage
    from django_q.status import Stat, Status

    status = Status(pid=4242, cluster_id="test-cluster")
    status.status = Conf.IDLE
    status.timestamp = timezone.now() - age
    get_broker().set_stat(Stat.get_key("test-cluster"), SignedPackage.dumps(status, True), 30)


def _cleanup_schedule(next_run_in: timedelta = timedelta(hours=1)):
    from django_q.models import Schedule

    return Schedule.objects.create(
        name="cleanup expired keys",
        func=CLEANUP_FUNC,
        schedule_type=Schedule.DAILY,
        next_run=timezone.now() + next_run_in,
    )


def _task(func: str, *, success: bool, stopped_ago: timedelta) -> None:
    from django_q.models import Task

    stopped = timezone.now() - stopped_ago
    Task.objects.create(
        id=uuid.uuid4().hex,
        name=f"task-{uuid.uuid4().hex[:8]}",
        func=func,
        started=stopped - timedelta(seconds=3),
        stopped=stopped,
        success=success,
    )


def test_job_queue__ok_with_a_live_cluster_and_a_punctual_cleanup():
    """A fresh heartbeat, a cleanup schedule in the future and no failures are OK."""
    _heartbeat()
    _cleanup_schedule()
    _task(CLEANUP_FUNC, success=True, stopped_ago=timedelta(hours=20))
    JobQueue().run()


def test_job_queue__fails_without_a_heartbeat():
    """No cluster heartbeat in the shared cache fails the check."""
    _cleanup_schedule()
    with pytest.raises(ServiceUnavailable, match="no django-q2 cluster reported a heartbeat"):
        JobQueue().run()


def test_job_queue__fails_with_a_stale_heartbeat():
    """A heartbeat older than the allowed age counts as a dead cluster."""
    _heartbeat(age=timedelta(minutes=5))
    _cleanup_schedule()
    with pytest.raises(ServiceUnavailable, match="no django-q2 cluster"):
        JobQueue().run()


def test_job_queue__warns_with_the_count_of_recent_failures():
    """Tasks failed in the last 24 h warn with their count; older failures do not count."""
    _heartbeat()
    _cleanup_schedule()
    _task("observability.tasks.check_store_health", success=False, stopped_ago=timedelta(hours=1))
    _task("observability.tasks.check_store_health", success=False, stopped_ago=timedelta(hours=2))
    _task("observability.tasks.check_store_health", success=False, stopped_ago=timedelta(days=3))
    with pytest.raises(ServiceWarning, match=r"2 task\(s\) failed in the last 1 day"):
        JobQueue().run()


def test_job_queue__project_database_down_says_so():
    """The project's database down: the check names it (its translation is inside the try)."""
    from tests.health_support import database_down

    with database_down("default"), pytest.raises(ServiceUnavailable) as raised:
        JobQueue().run()
    assert "Cannot read the job queue's records" in str(raised.value)
    assert "project's own database ('default') is unavailable" in str(raised.value)


def test_job_queue__warns_when_the_cleanup_is_overdue():
    """A cleanup due two hours ago that never ran warns."""
    _heartbeat()
    _cleanup_schedule(next_run_in=-timedelta(hours=2))
    with pytest.raises(ServiceWarning, match="scheduled cleanup was due at"):
        JobQueue().run()


def test_job_queue__warns_when_the_last_cleanup_is_too_old():
    """A daily cleanup whose last success is 2 days old warns."""
    _heartbeat()
    _cleanup_schedule()
    _task(CLEANUP_FUNC, success=True, stopped_ago=timedelta(days=2))
    with pytest.raises(ServiceWarning, match="last successful cleanup finished"):
        JobQueue().run()


def test_job_queue__warns_when_no_cleanup_is_scheduled(settings):
    """A missing cleanup schedule (named by setting) warns."""
    settings.OBSERVABILITY_CLEANUP_TASK_FUNC = "observability.tasks.other_cleanup"
    _heartbeat()
    with pytest.raises(ServiceWarning, match="no schedule runs observability.tasks.other_cleanup"):
        JobQueue().run()


def test_checks_for__every_group_and_all():
    """Each group has its checks; ``all`` is the service's, without the salons' verdict."""
    assert [repr(c) for c in health_checks.checks_for("db")] == [
        "Database(alias='default')",
        "Database(alias='bot')",
    ]
    everything = health_checks.checks_for("all")
    assert len(everything) == 8
    assert {type(c).__name__ for c in everything} == {
        "Process",
        "Database",
        "ConnectionPool",
        "ConnectionBudget",
        "SnapshotFreshness",
        "JobQueue",
    }
    assert [type(c).__name__ for c in health_checks.checks_for("whatsapp")] == ["WhatsAppStore"]


def test_job_queue__cron_schedules_use_their_own_period():
    """A daily cron cleanup (as setup_schedules creates it) last run 30 h ago warns; 20 h is OK."""
    from django_q.models import Schedule, Task

    _heartbeat()
    Schedule.objects.create(
        name="cleanup (cron)",
        func=CLEANUP_FUNC,
        schedule_type=Schedule.CRON,
        cron="0 3 * * *",
    )
    _task(CLEANUP_FUNC, success=True, stopped_ago=timedelta(hours=20))
    JobQueue().run()
    Task.objects.all().delete()
    _task(CLEANUP_FUNC, success=True, stopped_ago=timedelta(hours=30))
    with pytest.raises(ServiceWarning, match=r"longer ago than its period \(1 day, 0:00:00\)"):
        JobQueue().run()
