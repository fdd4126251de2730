"""Browser test: the insights page in headless Chromium at 1366x768, with a real held lock."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from observability import insights
from observability.models import TableSizeSample, WhatsAppKey
from tests import factories
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _screenshot_dir
from tests.test_insights import held_lock

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
    pytest.mark.django_db(transaction=True, databases=["default", "bot"]),
]


def _size_history() -> None:
    """Two weeks of hourly-job samples (the page charts the last one of each day)."""
    insights.capture_sizes()
    latest = list(TableSizeSample.objects.all())
    now = timezone.now()
    for day in range(1, 14):
        TableSizeSample.objects.bulk_create(
            TableSizeSample(
                taken_at=now - timedelta(days=day),
                table=sample.table,
                relation=sample.relation,
                kind=sample.kind,
                bytes=int(sample.bytes * (1 - day * 0.04)),
            )
            for sample in latest
        )


def test_browser__insights_page_shows_duplicate_index_and_a_held_lock(
    live_server, django_user_model, tmp_path
):
    """At 1366x768 the page shows the duplicate's DROP statement and who blocks whom."""
    from playwright.sync_api import sync_playwright

    shots = _screenshot_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    django_user_model.objects.create_superuser("ops", "ops@example.invalid", "ops-password")
    factories.make_keys("962302", "session", 200)
    _size_history()
    try:
        with held_lock() as (holder_pid, waiter_pid), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", "ops")
            page.fill("#id_password", "ops-password")
            page.click("input[type=submit]")
            page.click("#insights-link a, a#insights-link")
            page.wait_for_selector("#duplicate-indexes")
            assert "DROP INDEX CONCURRENTLY idx_whatsapp_keys_expires_cleanup;" in (
                page.locator("#duplicate-indexes").inner_text()
            )
            blocking = page.locator("#blocking").inner_text()
            assert f"pid {waiter_pid}" in blocking and f"pid {holder_pid}" in blocking
            assert "bot-writer" in blocking and "whatsapp_auth" in blocking
            assert page.locator("svg.obs-size-chart").count() == 4
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1366, f"the page scrolls sideways ({width} px)"
            page.screenshot(path=shots / "8-insights.png", full_page=True)
            browser.close()
    finally:
        WhatsAppKey.objects.filter(company_id="962302").delete()
        # The page's panels filled the shared pools: close them, so the connection budget
        # checks of later tests count only their own connections.
        for alias in ("bot", "default"):
            connections[alias].close()
            connections[alias].close_pool()
