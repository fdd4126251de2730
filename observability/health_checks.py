"""django-health-check plugins: database, pool, connection budget, WhatsApp store, job queue."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import connections
from django.utils import timezone
from django.utils.connection import ConnectionDoesNotExist
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from observability import activity, config, moments
from observability.exceptions import (
    BotDatabaseUnavailable,
    ObservabilityError,
    QueryTimedOut,
    translate_database_errors,
)

logger = logging.getLogger(__name__)


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g} s"


def _raise_worst(failures: list[str], warnings: list[str]) -> None:
    """Raise the most severe finding with every finding in the message; return when none."""
    if failures:
        raise ServiceUnavailable("; ".join(failures + warnings))
    if warnings:
        raise ServiceWarning("; ".join(warnings))


@contextlib.contextmanager
def _thread_connections_released(*aliases: str) -> Iterator[None]:
    """
    Close, at the end, the Django connections this block opened in the current thread.

    Checks run in short-lived executor threads. A Django connection opened there and left open
    keeps a pooled connection checked out after the thread dies, and the pool drains. This is
    ``temporary_connection()`` without the cursor, for code (the ORM, django-q2, the cache)
    that opens its own cursors. A connection that was already open (a test's transaction) is
    left alone.
    """
    were_closed = {alias: connections[alias].connection is None for alias in aliases}
    try:
        yield
    finally:
        for alias, was_closed in were_closed.items():
            if was_closed:
                connections[alias].close()


# --- Database ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Database(HealthCheck):
    """
    The database behind ``alias`` answers ``SELECT 1`` quickly.

    FAIL when it cannot connect (refused, unreachable, no pooled connection within the connect
    timeout) or the query is cancelled by the statement timeout; WARN when the round trip is
    slower than ``health_latency_warning``.
    """

    alias: str = "default"

    timeout = timedelta(seconds=5)

    def run(self) -> None:
        try:
            result = activity.ping(self.alias)
        except ConnectionDoesNotExist as error:
            raise ServiceUnavailable(f"No database alias {self.alias!r} is configured.") from error
        except QueryTimedOut as error:
            raise ServiceUnavailable(
                f"The {self.alias!r} database did not answer SELECT 1 within "
                f"{_seconds(config.health_statement_timeout())}."
            ) from error
        except BotDatabaseUnavailable as error:
            raise ServiceUnavailable(
                f"Cannot connect to the {self.alias!r} database within "
                f"{_seconds(config.health_connect_timeout())} (refused, unreachable or no "
                "free pooled connection). Check that the server is running and reachable."
            ) from error
        except ObservabilityError as error:  # e.g. a role without CONNECT: names the GRANT
            raise ServiceUnavailable(error.message) from error
        limit = config.health_latency_warning()
        if result.latency > limit:
            raise ServiceWarning(
                f"The {self.alias!r} database answered in "
                f"{result.latency.total_seconds() * 1000:.0f} ms "
                f"(warning above {limit.total_seconds() * 1000:.0f} ms)."
            )


# --- Connection pool --------------------------------------------------------------------------

_previous_pool_stats: dict[str, activity.PoolStats] = {}
_previous_pool_stats_lock = threading.Lock()


def _pool_changes_since_last_check(alias: str) -> activity.PoolStats | None:
    """The pool's stats with counters relative to the previous check in this process."""
    stats = activity.pool_stats(alias)
    if stats is None:
        return None
    with _previous_pool_stats_lock:
        previous = _previous_pool_stats.get(alias)
        _previous_pool_stats[alias] = stats
    return stats.since(previous)


@dataclasses.dataclass
class ConnectionPool(HealthCheck):
    """
    This process's psycopg pool for ``alias`` served every request since the last check.

    FAIL when a request timed out or failed, or a server connection attempt failed, since the
    previous check in this process; WARN when requests had to wait for a connection another
    caller held (waits for the pool to open a new connection do not count).
    OK when pooling is off (``DB_POOL=0``): there is no pool to exhaust. The counters are read,
    not reset, so /metrics still sees the cumulative values.
    """

    alias: str = "default"

    timeout = timedelta(seconds=2)

    def run(self) -> None:
        try:
            changes = _pool_changes_since_last_check(self.alias)
        except ConnectionDoesNotExist as error:
            raise ServiceUnavailable(f"No database alias {self.alias!r} is configured.") from error
        if changes is None:
            return
        shape = (
            f"pool {changes.pool_size}/{changes.pool_max} open, {changes.pool_available} idle, "
            f"{changes.requests_waiting} waiting now"
        )
        failures: list[str] = []
        warnings: list[str] = []
        if changes.requests_errors:
            failures.append(
                f"{changes.requests_errors} request(s) for a {self.alias!r} connection timed out "
                "or failed since the last check"
            )
        if changes.connections_errors:
            failures.append(
                f"{changes.connections_errors} attempt(s) to open a {self.alias!r} connection "
                "failed since the last check"
            )
        # A pool with min_size 0 queues every request that makes it open a new connection;
        # only the requests beyond those waited for a connection someone else was holding.
        waited_for_busy = changes.requests_queued - changes.connections_num
        if waited_for_busy > 0:
            warnings.append(
                f"{waited_for_busy} request(s) waited for a busy {self.alias!r} connection "
                f"({changes.requests_wait_ms} ms of waiting in total) since the last check: "
                "raise DB_POOL_MAX_SIZE within the connection budget, or find what holds "
                "connections"
            )
        if failures or warnings:
            _raise_worst(failures, [*warnings, shape])


# --- Connection budget ------------------------------------------------------------------------


def _budget(service: str, default: int, overrides: dict[str, int]) -> int:
    return overrides.get(service, default)


@dataclasses.dataclass
class ConnectionBudget(HealthCheck):
    """
    The server's connections, by ``application_name``, stay within their budgets.

    FAIL when the server's connections reach ``connections_total_failure`` of
    ``max_connections``; WARN at ``connections_total_warning``, when a service holds more than
    its budget (``connections_per_service``, default 3), when a session sits idle in a
    transaction or a query runs longer than their thresholds. Offending services are named.
    """

    timeout = timedelta(seconds=5)

    def run(self) -> None:
        try:
            server = activity.server_activity()
        except ObservabilityError as error:
            raise ServiceUnavailable(f"Cannot read pg_stat_activity: {error.message}") from error
        failures: list[str] = []
        warnings: list[str] = []
        busiest = ", ".join(f"{s.service} {s.total}" for s in server.services[:5])
        usage = (
            f"{server.total} of {server.max_connections} server connections in use "
            f"({server.usage:.0%}; busiest: {busiest})"
        )
        if server.usage >= config.connections_total_failure():
            failures.append(f"{usage}, failure at {config.connections_total_failure():.0%}")
        elif server.usage >= config.connections_total_warning():
            warnings.append(f"{usage}, warning at {config.connections_total_warning():.0%}")

        default_budget = config.connections_per_service()
        overrides = config.connection_budget_overrides()
        over = [
            f"{s.service} {s.total}/{_budget(s.service, default_budget, overrides)}"
            for s in server.services
            if s.total > _budget(s.service, default_budget, overrides)
        ]
        if over:
            warnings.append(f"over their connection budget: {', '.join(over)}")
        idle = [
            f"{s.service} ({s.idle_in_transaction_too_long}, oldest "
            f"{s.longest_idle_in_transaction:.0f} s)"
            for s in server.services
            if s.idle_in_transaction_too_long
        ]
        if idle:
            warnings.append(
                f"idle in transaction for more than {_seconds(server.idle_after)}: "
                f"{', '.join(idle)}"
            )
        slow = [
            f"{s.service} ({s.long_running}, longest {s.longest_query:.0f} s)"
            for s in server.services
            if s.long_running
        ]
        if slow:
            warnings.append(
                f"queries running longer than {_seconds(server.long_after)}: {', '.join(slow)}"
            )
        _raise_worst(failures, warnings)


# --- Job queue --------------------------------------------------------------------------------


def _schedule_period(schedule, now: datetime) -> timedelta | None:
    """How often a django-q2 schedule runs (None for one-off schedules)."""
    from django_q.models import Schedule

    if schedule.schedule_type == Schedule.ONCE:
        return None
    if schedule.schedule_type == Schedule.CRON:
        from croniter import croniter

        runs = croniter(schedule.cron, now)
        first = runs.get_next(datetime)
        return runs.get_next(datetime) - first
    start = schedule.next_run or now
    return schedule.calculate_next_run(start) - start


def _cluster_stats() -> list:
    """
    The django-q2 clusters' status packages in the shared cache, read without writing.

    ``Stat.get_all()`` rewrites the cluster list on every call (an UPDATE of the row every
    running cluster also updates); a health check polled by monitors only reads: one
    ``get`` of the list and one ``get_many`` of the packages.
    """
    from django.core.cache import caches
    from django_q.conf import Conf
    from django_q.signing import BadSignature, SignedPackage

    cache = caches[Conf.CACHE]
    keys = cache.get(Conf.Q_STAT) or []
    stats = []
    for package in cache.get_many(keys).values():
        try:
            stats.append(SignedPackage.loads(package))
        except BadSignature:
            continue
    return stats


@dataclasses.dataclass
class JobQueue(HealthCheck):
    """
    django-q2 is alive and doing its work.

    FAIL when no cluster has reported a heartbeat recently (the worker is down, or it uses a
    cache the web server does not share); WARN when the scheduled cleanup
    (``cleanup_task_func``) is missing or overdue by more than its period plus
    ``cleanup_overdue_margin``, or when tasks failed within ``task_failure_window``.
    """

    timeout = timedelta(seconds=5)

    def run(self) -> None:
        # The translation sits inside the ``try``: a driver error leaving _findings must
        # become the check's own message, not the library's "unknown error".
        with _thread_connections_released("default"):
            try:
                with translate_database_errors("default"):
                    failures, warnings = self._findings(timezone.now())
            except ObservabilityError as error:
                raise ServiceUnavailable(
                    f"Cannot read the job queue's records: {error.message}"
                ) from error
        _raise_worst(failures, warnings)

    def _findings(self, now: datetime) -> tuple[list[str], list[str]]:
        from django.db.models import Count, Max, Q
        from django_q.conf import Conf
        from django_q.models import Failure, Schedule, Task

        failures: list[str] = []
        warnings: list[str] = []
        max_age = config.queue_heartbeat_max_age()
        alive = [
            stat
            for stat in _cluster_stats()
            if stat.status != Conf.STOPPED and now - stat.timestamp <= max_age
        ]
        if not alive:
            failures.append(
                f"no django-q2 cluster reported a heartbeat in the last {_seconds(max_age)}: "
                "start `manage.py qcluster` (with DB_POOL=0) and check it shares the cache"
            )

        func = config.cleanup_task_func()
        margin = config.cleanup_overdue_margin()
        window = config.task_failure_window()
        # The cleanup's last success and the recent failures in one read of the task table.
        succeeded = Q(success=True, func=func)
        failed_recently = Q(success=False, stopped__gte=now - window)
        tasks = Task.objects.filter(succeeded | failed_recently).aggregate(
            last=Max("stopped", filter=succeeded), failed=Count("pk", filter=failed_recently)
        )
        schedule = Schedule.objects.filter(func=func).order_by("next_run").first()
        if schedule is None:
            warnings.append(f"no schedule runs {func}: create the cleanup schedule")
        else:
            period = _schedule_period(schedule, now)
            if schedule.next_run and schedule.next_run < now - margin:
                warnings.append(
                    f"the scheduled cleanup was due at {moments.text(schedule.next_run, now)} "
                    "and has not run"
                )
            last = tasks["last"]
            if period is not None and last is not None and now - last > period + margin:
                warnings.append(
                    f"the last successful cleanup finished at {moments.text(last, now)}, "
                    f"longer ago than its period ({period}) plus {margin}"
                )

        count = tasks["failed"]
        if count:
            failed = Failure.objects.filter(stopped__gte=now - window)
            names = sorted(set(failed.values_list("func", flat=True)[:50]))
            warnings.append(
                f"{count} task(s) failed in the last {window}: {', '.join(names[:5])} "
                "(see the admin's Failed tasks)"
            )
        return failures, warnings


# --- The stored snapshot and the WhatsApp store -----------------------------------------------


@dataclasses.dataclass
class Process(HealthCheck):
    """
    This process answers: the liveness probe (no database, nothing that a salon can fail).

    Restart the process only when this fails; every other check says whether it should get
    traffic (readiness), not whether it is alive.
    """

    timeout = timedelta(seconds=1)

    def run(self) -> None:
        return None


def _taken_at_field():
    """
    Where a check notes the snapshot it judged (None before the first, or unreadable).

    Not a constructor argument nor part of ``repr`` (the check's name in every format) or
    ``labels``: the view reads it to say the snapshot's age in every state
    (``health_views.snapshot_headers``), OK included, where the library's formats allow no
    message.
    """
    return dataclasses.field(default=None, init=False, repr=False, compare=False)


@dataclasses.dataclass
class SnapshotFreshness(HealthCheck):
    """
    The stored session health snapshot is recent (the worker's every-minute refresh runs).

    WARN past ``snapshot_stale_warning`` (3 min), FAIL past ``snapshot_stale_failure``
    (10 min) or when none was ever taken. The message names the last failed refresh, if any.
    """

    timeout = timedelta(seconds=3)
    snapshot_taken_at: datetime | None = _taken_at_field()

    def run(self) -> None:
        from observability import snapshot
        from observability.sessions import Status

        with _thread_connections_released("default"), translate_database_errors("default"):
            try:
                fresh = snapshot.freshness()
            except ObservabilityError as error:
                raise ServiceUnavailable(
                    f"Cannot read the stored snapshot: {error.message}"
                ) from error
        self.snapshot_taken_at = fresh.snapshot.taken_at if fresh.snapshot else None
        if fresh.status is Status.FAIL:
            raise ServiceUnavailable(fresh.message)
        if fresh.status is Status.WARN or fresh.failed_since is not None:
            raise ServiceWarning(fresh.message)


@dataclasses.dataclass
class WhatsAppStore(HealthCheck):
    """
    The WhatsApp session store is healthy, as of the stored snapshot (no bot query).

    Judged by the store's findings (``StoreHealth.findings``, the verdict the admin's overview
    and the store alert show too), plus the snapshot's own age: a stale snapshot warns, and
    fails past ``snapshot_stale_failure``. Answers from the last snapshot while the bot
    database is down.
    """

    timeout = timedelta(seconds=3)
    snapshot_taken_at: datetime | None = _taken_at_field()

    def run(self) -> None:
        from observability import snapshot
        from observability.sessions import Status

        with _thread_connections_released("default"), translate_database_errors("default"):
            try:
                fresh = snapshot.freshness()
                store = snapshot.store_health(fresh.snapshot) if fresh.snapshot else None
            except ObservabilityError as error:
                raise ServiceUnavailable(error.message) from error
        self.snapshot_taken_at = fresh.snapshot.taken_at if fresh.snapshot else None
        if store is None:
            raise ServiceUnavailable(fresh.message)
        failures = [f.sentence for f in store.findings if f.status is Status.FAIL]
        warnings = [f.sentence for f in store.findings if f.status is Status.WARN]
        if fresh.status is Status.FAIL:
            failures.append(fresh.message)
        elif fresh.status is Status.WARN:
            warnings.append(fresh.message)
        elif failures or warnings:
            # Every answer says how old the verdict is.
            (failures or warnings).append(fresh.message)
        _raise_worst(failures, warnings)


#: Every check by group, as ``HealthCheckView`` accepts them (built per request so settings
#: such as ``OBSERVABILITY_HEALTH_DATABASE_ALIASES`` apply without a restart).
GROUPS = ("live", "db", "pool", "connections", "snapshot", "queue", "whatsapp")

#: The groups ``/health/`` runs: the service itself, not the salons' WhatsApp (``whatsapp``).
SERVICE_GROUPS = ("live", "db", "pool", "connections", "snapshot", "queue")


def checks_for(group: str) -> list[HealthCheck]:
    """
    The checks of one group, or of the service's groups for ``all``.

    Groups: ``live`` (this process), ``db``, ``pool``, ``connections``, ``snapshot``,
    ``queue``, and ``whatsapp`` (the store's verdict, which ``all`` leaves out: a salon
    failing is not the service failing).

    Raises:
        KeyError: the group is unknown.

    """
    aliases = config.health_database_aliases()
    builders = {
        "live": lambda: [Process()],
        "snapshot": lambda: [SnapshotFreshness()],
        "db": lambda: [Database(alias=alias) for alias in aliases],
        "pool": lambda: [ConnectionPool(alias=alias) for alias in aliases],
        "connections": lambda: [ConnectionBudget()],
        "whatsapp": lambda: [WhatsAppStore()],
        "queue": lambda: [JobQueue()],
    }
    if group == "all":
        return [check for name in SERVICE_GROUPS for check in builders[name]()]
    return builders[group]()
