"""Prometheus metrics: a collector over the services, rendered into a private registry."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from observability import activity, config
from observability.exceptions import ObservabilityError
from observability.rules import Status

logger = logging.getLogger(__name__)

#: The label value that absorbs every label past ``metrics_max_application_labels``.
OTHER = "other"

#: Buckets of the failing-sessions gauge: a fixed set, so the series stay bounded.
FAILING_BUCKETS = (
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
)


def _bucket_label(bound: timedelta | None) -> str:
    if bound is None:
        return "+Inf"
    seconds = int(bound.total_seconds())
    return (
        f"{seconds // 86400}d"
        if seconds >= 86400
        else (f"{seconds // 3600}h" if seconds >= 3600 else f"{seconds // 60}m")
    )


def _capped(pairs: Iterable[tuple[str, float]], limit: int) -> list[tuple[str, float]]:
    """
    The largest ``limit`` labels as they are, the rest summed under ``other``.

    Labels come from data (application names, key types): capping them keeps the number of
    series bounded whatever a client puts in ``application_name``.
    """
    ordered = sorted(pairs, key=lambda pair: (-pair[1], pair[0]))
    kept = ordered[:limit]
    rest = ordered[limit:]
    if rest:
        kept.append((OTHER, sum(value for _, value in rest)))
    return kept


class ObservabilityCollector(Collector):
    """
    Reads the services at scrape time and yields gauges; holds no state between scrapes.

    Each section is independent: when the bot database is down the pool gauges are still
    exported, and ``observability_scrape_error{section=...}`` says which section failed.
    """

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily(
            "observability_scrape_error",
            "1 when a section of these metrics could not be read at this scrape.",
            labels=["section"],
        )
        for section, produce in (
            ("store", self._store),
            ("connections", self._connections),
            ("pool", self._pools),
            ("cleanup", self._cleanup),
        ):
            try:
                yield from list(produce())
                errors.add_metric([section], 0)
            except ObservabilityError as error:
                logger.warning("metrics section %s unavailable: %s", section, error.message)
                errors.add_metric([section], 1)
            except Exception:
                logger.exception("metrics section %s failed", section)
                errors.add_metric([section], 1)
        yield errors

    def _store(self) -> Iterator[Metric]:
        # Issue 13's gauges (deploy/prometheus/alerts.yml pages on them): the stored snapshot's
        # age, and failing sessions by how long they have failed (bounded buckets).
        from observability import snapshot
        from observability.snapshot import history

        fresh = snapshot.freshness()
        if fresh.age is None:
            # No snapshot yet: no age at all, rather than NaN (``NaN > 600`` is never true),
            # so the rule's ``absent(observability_snapshot_age_seconds)`` fires.
            return
        yield GaugeMetricFamily(
            "observability_snapshot_age_seconds",
            "Seconds since the stored session health snapshot was taken (every number below "
            "is that old; absent before the first snapshot).",
            value=fresh.age.total_seconds(),
        )
        store = snapshot.store_health(fresh.snapshot) if fresh.snapshot else None
        if store is None:
            return
        verdict = GaugeMetricFamily(
            "observability_whatsapp_store_status",
            "The store's verdict (what /health/whatsapp/ answers): 1 for its status, 0 for "
            "the others.",
            labels=["status"],
        )
        for status in Status:
            verdict.add_metric([str(status)], 1 if status == store.status else 0)
        yield verdict
        failing = GaugeMetricFamily(
            "observability_whatsapp_failing_sessions",
            "Failing WhatsApp sessions by how long they have failed (upper bound of the bucket, "
            "+Inf for longer).",
            labels=["failing_for"],
        )
        for bound, count in history.failing_by_duration(FAILING_BUCKETS):
            failing.add_metric([_bucket_label(bound)], count)
        yield failing
        sessions = GaugeMetricFamily(
            "observability_whatsapp_sessions",
            "WhatsApp sessions by health status.",
            labels=["status"],
        )
        for status, count in store.sessions_by_status.items():
            sessions.add_metric([str(status)], count)
        yield sessions
        yield GaugeMetricFamily(
            "observability_whatsapp_expired_keys",
            "Keys past the bot's expires_at in whatsapp_keys (not a fault: stored pre-keys "
            "and app-state keys stay live past it).",
            value=store.total_expired_keys,
        )
        keys = GaugeMetricFamily(
            "observability_whatsapp_keys",
            "Keys in whatsapp_keys by key_type.",
            labels=["key_type"],
        )
        limit = config.metrics_max_application_labels()
        for key_type, count in _capped(store.keys_by_type.items(), limit):
            keys.add_metric([key_type], count)
        yield keys
        yield GaugeMetricFamily(
            "observability_whatsapp_duplicate_salons",
            "Salons stored under both session id spellings.",
            value=len(store.duplicate_salon_ids),
        )
        yield GaugeMetricFamily(
            "observability_whatsapp_orphan_sessions",
            "Session ids with keys but no whatsapp_auth row.",
            value=len(store.orphan_session_ids),
        )

    def _connections(self) -> Iterator[Metric]:
        server = activity.server_activity()
        limit = config.metrics_max_application_labels()
        families = {
            "total": GaugeMetricFamily(
                "observability_db_connections",
                "Client connections on the bot's server by application_name.",
                labels=["application_name"],
            ),
            "idle_in_transaction": GaugeMetricFamily(
                "observability_db_connections_idle_in_transaction",
                "Connections idle in a transaction by application_name.",
                labels=["application_name"],
            ),
            "long_running": GaugeMetricFamily(
                "observability_db_long_running_queries",
                "Queries running past the long-query threshold by application_name.",
                labels=["application_name"],
            ),
        }
        # One set of labels for every family: the services holding the most connections.
        ranked = sorted(server.services, key=lambda s: (-s.total, s.service))
        shown, folded = ranked[:limit], ranked[limit:]
        for field, family in families.items():
            for service in shown:
                family.add_metric([service.service], getattr(service, field))
            if folded:
                family.add_metric([OTHER], sum(getattr(s, field) for s in folded))
            yield family
        yield GaugeMetricFamily(
            "observability_db_max_connections",
            "The server's max_connections.",
            value=server.max_connections,
        )

    def _pools(self) -> Iterator[Metric]:
        gauges = {
            field: GaugeMetricFamily(
                f"observability_pool_{name}", f"psycopg pool {name} now.", labels=["alias"]
            )
            for field, name in (
                ("pool_min", "min_size"),
                ("pool_max", "max_size"),
                ("pool_size", "size"),
                ("pool_available", "available"),
                ("requests_waiting", "requests_waiting"),
            )
        }
        counters = {
            name: CounterMetricFamily(
                f"observability_pool_{name}",
                f"psycopg pool {name} since this process started.",
                labels=["alias"],
            )
            for name in activity.POOL_COUNTERS
        }
        for alias in config.health_database_aliases():
            stats = activity.pool_stats(alias)
            if stats is None:
                continue
            for name, family in (*gauges.items(), *counters.items()):
                family.add_metric([alias], getattr(stats, name))
        yield from gauges.values()
        yield from counters.values()

    def _cleanup(self) -> Iterator[Metric]:
        from observability import models

        run_model = getattr(models, "CleanupRun", None)
        if run_model is None:
            return
        finished = GaugeMetricFamily(
            "observability_cleanup_last_run_timestamp_seconds",
            "When the last applied, successful cleanup of each operation finished (Unix time).",
            labels=["operation"],
        )
        deleted = GaugeMetricFamily(
            "observability_cleanup_last_deleted_rows",
            "Rows deleted by the last applied, successful cleanup of each operation.",
            labels=["operation"],
        )
        runs = (
            run_model.objects.filter(dry_run=False, outcome="succeeded")
            .exclude(finished_at=None)
            .order_by("operation", "-finished_at")
            .distinct("operation")
            .values_list("operation", "finished_at", "total_deleted")
        )
        for operation, finished_at, total_deleted in runs:
            finished.add_metric([operation], finished_at.timestamp())
            deleted.add_metric([operation], total_deleted)
        yield finished
        yield deleted


def render() -> tuple[bytes, str]:
    """
    The metrics in Prometheus text format, and their content type.

    A fresh registry per scrape: no process-global registry state, so tests and several
    workers never see each other's collectors.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ObservabilityCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
