"""Tests of /metrics: access, parsing with prometheus-client's parser, expected samples."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from observability import snapshot
from observability.models import CleanupRun
from tests import factories
from tests.health_support import closed_port, extra_alias, real_connections

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

TOKEN = "metrics-token-for-tests"


@pytest.fixture(autouse=True)
def _metrics_settings(settings):
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN


def _scrape(client) -> dict[tuple[str, tuple], float]:
    """Scrape /metrics with the token and index every sample by (name, sorted labels)."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics__anonymous_is_refused(client):
    """Without the token or a staff login /metrics answers 401."""
    response = client.get("/metrics")
    assert response.status_code == 401
    assert b"observability_" not in response.content


def test_metrics__wrong_token_is_refused(client):
    """A wrong bearer token is refused."""
    response = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_metrics__user_with_the_permission_may_scrape(client, django_user_model):
    """A logged-in user with "Can read /metrics" sees the metrics."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("ops", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_metrics"))
    client.force_login(user)
    assert client.get("/metrics").status_code == 200


def test_metrics__store_gauges_reflect_the_rows(client):
    """Sessions by status, expired keys and keys by type match the rows inserted."""
    now = timezone.now()
    factories.make_auth("962302")
    factories.make_keys("962302", "session", 60)
    factories.make_keys("962302", "pre-key", 30, expires_at=now - timedelta(days=1))
    factories.make_auth("962303", written_at=now - timedelta(days=3))
    factories.make_keys("962303", "session", 20, written_at=now - timedelta(days=3))
    snapshot.refresh(full=True, now=now - timedelta(hours=2))
    snapshot.refresh(full=True, now=now - timedelta(seconds=30))
    samples = _scrape(client)
    assert 30 <= samples[("observability_snapshot_age_seconds", ())] < 60
    failing = {
        labels[0][1]: value
        for (name, labels), value in samples.items()
        if name == "observability_whatsapp_failing_sessions"
    }
    assert failing == {"15m": 0, "1h": 0, "6h": 1, "1d": 0, "7d": 0, "+Inf": 0}
    assert samples[("observability_whatsapp_sessions", (("status", "OK"),))] == 1
    assert samples[("observability_whatsapp_sessions", (("status", "FAIL"),))] == 1
    assert samples[("observability_whatsapp_sessions", (("status", "WARN"),))] == 0
    assert samples[("observability_whatsapp_expired_keys", ())] == 30
    assert samples[("observability_whatsapp_keys", (("key_type", "session"),))] == 80
    assert samples[("observability_whatsapp_keys", (("key_type", "pre-key"),))] == 30
    assert samples[("observability_whatsapp_duplicate_salons", ())] == 0
    assert samples[("observability_scrape_error", (("section", "store"),))] == 0


def test_metrics__connections_by_application_name(client):
    """Real connections show under their application_name, with max_connections."""
    with real_connections("svc-metrics", 2):
        samples = _scrape(client)
    assert samples[("observability_db_connections", (("application_name", "svc-metrics"),))] == 2
    assert samples[("observability_db_max_connections", ())] >= 20


def test_metrics__application_labels_are_capped(client, settings):
    """Past the label limit, services are summed under ``other``."""
    settings.OBSERVABILITY_METRICS_MAX_APPLICATION_LABELS = 2
    with real_connections("svc-metrics-big", 6), real_connections("svc-metrics-small", 1):
        samples = _scrape(client)
    names = {
        dict(labels)["application_name"]
        for (name, labels) in samples
        if name == "observability_db_connections"
    }
    assert len(names) == 3  # the two largest services and "other"
    assert "svc-metrics-big" in names
    assert "svc-metrics-small" not in names
    assert samples[("observability_db_connections", (("application_name", "other"),))] >= 1


def test_metrics__pool_statistics_per_alias(client):
    """This process's pools are exported per alias, counters as counters."""
    samples = _scrape(client)
    max_size = connections["bot"].pool.max_size
    assert samples[("observability_pool_max_size", (("alias", "bot"),))] == max_size
    assert ("observability_pool_size", (("alias", "default"),)) in samples
    assert samples[("observability_pool_requests_num_total", (("alias", "bot"),))] >= 1
    assert samples[("observability_pool_returns_bad_total", (("alias", "bot"),))] == 0


def test_metrics__last_cleanup_time_and_deleted_rows(client):
    """The last applied, successful run of each operation is exported; dry runs are not."""
    finished = timezone.now() - timedelta(hours=2)
    CleanupRun.objects.create(
        operation="expired_keys",
        started_by="task",
        dry_run=False,
        started_at=finished - timedelta(minutes=1),
        finished_at=finished,
        total_deleted=1234,
        outcome=CleanupRun.Outcome.SUCCEEDED,
    )
    CleanupRun.objects.create(
        operation="expired_keys",
        started_by="command",
        dry_run=True,
        finished_at=timezone.now(),
        total_deleted=0,
        outcome=CleanupRun.Outcome.SUCCEEDED,
    )
    samples = _scrape(client)
    labels = (("operation", "expired_keys"),)
    assert samples[("observability_cleanup_last_deleted_rows", labels)] == 1234
    assert samples[("observability_cleanup_last_run_timestamp_seconds", labels)] == pytest.approx(
        finished.timestamp()
    )


def test_metrics__a_down_section_is_flagged_not_fatal(client, settings):
    """With pg_stat_activity unreachable the scrape still answers and flags the section."""
    options = {k: v for k, v in connections.settings["bot"]["OPTIONS"].items() if k != "pool"}
    with extra_alias("down", HOST="127.0.0.1", PORT=str(closed_port()), OPTIONS=options):
        settings.OBSERVABILITY_ACTIVITY_DATABASE = "down"
        samples = _scrape(client)
    assert samples[("observability_scrape_error", (("section", "connections"),))] == 1
    assert samples[("observability_scrape_error", (("section", "pool"),))] == 0
