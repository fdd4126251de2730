"""Tests of deploy/prometheus/alerts.yml: promtool unit tests; its metric names are emitted."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from observability import snapshot
from observability.models import CleanupRun, Company
from tests import factories

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
TOKEN = "metrics-token-for-rules"
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: prometheus)")
def test_alert_rules__promtool_unit_tests_pass():
    """`promtool check rules` and `promtool test rules` pass on the shipped rules."""
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _fires_on_scrape(client, alertname: str, tmp_path) -> bool:
    """
    Whether promtool fires ``alertname`` at 5 min when /metrics keeps answering as it does now.

    Every sample of one real scrape becomes a promtool input series (``up`` 1 added, as
    Prometheus does), so the rules are judged on exactly what a monitor would store.
    """
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    series = [{"series": 'up{job="observability"}', "values": "1x10"}]
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            labels = {"job": "observability", **sample.labels}
            text = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
            value = "NaN" if math.isnan(sample.value) else repr(float(sample.value))
            series.append({"series": f"{sample.name}{{{text}}}", "values": f"{value}x10"})
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": "5m", "alertname": alertname, "exp_alerts": []}],
            }
        ],
    }
    path = tmp_path / "scrape_test.yml"
    path.write_text(json.dumps(tests))  # JSON is YAML
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    if result.returncode == 0:
        return False  # it expected no alert and got none
    output = result.stdout + result.stderr
    assert f'alertname="{alertname}"' in output, output
    return True


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: prometheus)")
@pytest.mark.django_db(databases=["default", "bot"])
def test_alert_rules__no_snapshot_ever_taken_is_a_stale_snapshot(client, settings, tmp_path):
    """/metrics before the first snapshot makes WhatsAppSnapshotStale fire (not a NaN age)."""
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN
    assert _fires_on_scrape(client, "WhatsAppSnapshotStale", tmp_path)
    snapshot.refresh()
    assert not _fires_on_scrape(client, "WhatsAppSnapshotStale", tmp_path)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: prometheus)")
@pytest.mark.django_db(databases=["default", "bot"])
def test_alert_rules__a_failing_store_pages(client, settings, tmp_path):
    """A session failing (the store's verdict FAIL) makes WhatsAppStoreFailing fire."""
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN
    factories.make_company(962302)
    factories.make_session("company_962302")
    snapshot.refresh()
    assert not _fires_on_scrape(client, "WhatsAppStoreFailing", tmp_path)
    Company.objects.filter(company_id=962302).update(whatsapp_connected=False)
    snapshot.refresh(full=True)
    assert _fires_on_scrape(client, "WhatsAppStoreFailing", tmp_path)


@pytest.mark.django_db(databases=["default", "bot"])
def test_alert_rules__every_metric_they_use_is_emitted_by_metrics(client, settings):
    """Each observability_* name in alerts.yml (and its test series) is a family /metrics emits."""
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN
    factories.make_session("company_962302")
    snapshot.refresh()
    CleanupRun.objects.create(
        operation="expired_keys",
        started_by="test",
        dry_run=False,
        outcome="succeeded",
        finished_at=timezone.now(),
    )
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    used = set(re.findall(r"\bobservability_[a-z_]+\b", RULES.read_text()))
    used |= set(re.findall(r"\bobservability_[a-z_]+\b", RULE_TESTS.read_text()))
    assert used >= {
        "observability_snapshot_age_seconds",
        "observability_whatsapp_failing_sessions",
    }
    assert used - set(families) == set()
    # The labels the rules select on are the labels /metrics gives.
    failing = {
        s.labels["failing_for"]
        for s in families["observability_whatsapp_failing_sessions"].samples
    }
    assert "15m" in failing and "+Inf" in failing
    sections = {s.labels["section"] for s in families["observability_scrape_error"].samples}
    assert "store" in sections
    operations = {
        s.labels["operation"]
        for s in families["observability_cleanup_last_run_timestamp_seconds"].samples
    }
    assert "expired_keys" in operations
