"""Browser test: a real headless Chromium walks the ops admin from login to a key browser."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from observability import snapshot
from observability.models import Client, Company, SessionState, WhatsAppAuth, WhatsAppKey
from tests import factories

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SALONS = (962302, 962303, 962304)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
    pytest.mark.django_db(transaction=True, databases=["default", "bot"]),
]


def _seed() -> None:
    """A healthy salon, a dying one (silent 3 days, no pre-key left), one with no pre-key."""
    now = timezone.now()
    factories.make_company(SALONS[0], title="Салон красоты «Лотос»")
    factories.make_company(SALONS[1], title="Барбершоп «Борода»")
    factories.make_auth(str(SALONS[0]), phone="79161234567")
    for day in range(14):
        factories.make_keys(
            str(SALONS[0]), "session", 6, written_at=now - timedelta(days=day), seed=day
        )
    factories.make_keys(str(SALONS[0]), "app-state-sync-key", 8)
    factories.make_keys(str(SALONS[0]), "pre-key", 20)
    factories.make_auth(
        f"company_{SALONS[1]}", seed=2, phone="79037654321", written_at=now - timedelta(days=3)
    )
    for day in range(3, 12):
        factories.make_keys(
            f"company_{SALONS[1]}", "sender-key", 5, written_at=now - timedelta(days=day), seed=day
        )
    factories.make_keys(f"company_{SALONS[1]}", "tctoken", 4, written_at=now - timedelta(days=3))
    factories.make_auth(str(SALONS[2]), seed=3, phone="79265550000")
    factories.make_keys(str(SALONS[2]), "session", 15)
    factories.make_keys(f"company_{SALONS[2]}", "session", 3)
    factories.make_client(SALONS[0], 1)


def _cleanup() -> None:
    """Unmanaged bot tables are not flushed between transactional tests: delete our rows."""
    ids = [spelling for salon in SALONS for spelling in (str(salon), f"company_{salon}")]
    WhatsAppKey.objects.filter(company_id__in=ids).delete()
    WhatsAppAuth.objects.filter(company_id__in=ids).delete()
    Client.objects.filter(company_id__in=SALONS).delete()
    Company.objects.filter(company_id__in=SALONS).delete()
    SessionState.objects.all().delete()


#: Reports every CSP violation to the console, in case the browser did not log one itself.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`Content Security Policy violation: ${event.violatedDirective} `
    + `blocked ${event.blockedURI || "inline"} at ${event.sourceFile}:${event.lineNumber}`);
});
"""


def _watch_for_csp_violations(page) -> list[str]:
    """Collect every console message about the Content-Security-Policy, as the pages load."""
    found: list[str] = []
    page.add_init_script(REPORT_CSP_VIOLATIONS)

    def on_console(message) -> None:
        if "Content Security Policy" in message.text:
            found.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: found.append(f"{page.url}: {error}"))
    return found


def _visit_the_other_pages(page, base: str) -> None:
    """The index, the cleanup confirmation, health, error pages, Sentry test, run records."""
    page.goto(f"{base}/admin/")
    page.wait_for_selector("#observability-overview-link")
    page.goto(f"{base}/admin/observability/sessionstate/")
    page.locator("#result_list tbody input.action-select").first.check()
    page.select_option("select[name=action]", "queue_expired_keys_cleanup")
    page.click("button[name=index]")
    page.wait_for_selector("#cleanup-total")
    for action in ("clean_orphan_keys", "clean_duplicate_spellings"):  # their dry-run pages
        page.goto(f"{base}/admin/observability/sessionstate/")
        page.locator("#result_list tbody input.action-select").first.check()
        page.select_option("select[name=action]", action)
        page.click("button[name=index]")
        page.wait_for_selector("body.delete-confirmation #content-main")
    page.goto(f"{base}/admin/observability/cleanuprun/")
    page.wait_for_selector("#result_list")
    page.goto(f"{base}/admin/observability/client/?last_visit_date__year=9999")
    page.wait_for_selector("#content")  # the 400 page
    page.goto(f"{base}/admin/no-such-page/")
    page.goto(f"{base}/admin/observability/sentry-test/")
    page.goto(f"{base}/health/")
    page.wait_for_selector("table")


def _screenshot_dir(tmp_path: Path) -> Path:
    """
    docs/screenshots when asked (UPDATE_SCREENSHOTS=1) or when it is empty; else a temp dir.

    The committed pictures are refreshed on purpose, not rewritten by every test run in a
    shared working tree.
    """
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not any(SCREENSHOTS.glob("*.png")):
        return SCREENSHOTS
    return tmp_path


def test_browser__login_filter_fail_open_session_and_keys(
    live_server, django_user_model, tmp_path
):
    """Log in, filter FAIL, open the failing session (reasons, chart), open its key browser."""
    from playwright.sync_api import sync_playwright

    shots = tmp_path  # the README's pictures come from the demo data (test_browser_demo.py)

    # Database work happens outside Playwright's event loop (Django refuses it inside).
    django_user_model.objects.create_superuser("ops", "ops@example.invalid", "ops-password")
    _seed()
    snapshot.refresh(full=True)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            violations = _watch_for_csp_violations(page)
            page.goto(f"{live_server.url}/admin/")
            assert (
                "content-security-policy"
                in page.context.request.get(f"{live_server.url}/admin/login/").headers
            )
            assert "/admin/login/" in page.url
            page.fill("#id_username", "ops")
            page.fill("#id_password", "ops-password")
            page.click("input[type=submit]")
            page.wait_for_selector("#observability-overview-link")

            page.click("text=WhatsApp sessions")
            page.wait_for_selector("#result_list")
            assert page.locator("#result_list tbody tr").count() == 4  # keys-only included
            # Readable at 1366 px: no row wraps into more than a few lines.
            heights = page.eval_on_selector_all(
                "#result_list tbody tr", "rows => rows.map(r => r.getBoundingClientRect().height)"
            )
            assert max(heights) < 80, heights
            widths = page.evaluate("document.documentElement.scrollWidth")
            assert widths <= 1366, widths
            page.screenshot(path=shots / "1-sessions-list.png", full_page=True)

            page.click("#changelist-filter a[href*='status=FAIL']")
            page.wait_for_url("**status=FAIL**")
            rows = page.locator("#result_list tbody tr")
            assert rows.count() == 2
            assert rows.first.locator(".obs-badge").inner_text() == "FAIL"
            page.screenshot(path=shots / "2-sessions-fail.png", full_page=True)

            page.click(f"#result_list a[href*='company_5F{SALONS[1]}']")
            page.wait_for_selector("#reasons")
            assert page.locator("#timeline-7 svg.obs-band rect").count() >= 1
            reasons = page.locator("#reasons").inner_text()
            assert "No pre-key is stored" in reasons and "No key written for 3 days" in reasons
            assert page.locator("svg.obs-chart").count() == 2
            assert page.locator("svg.obs-chart rect").count() == 28
            assert "7903***4321" in page.content()
            page.screenshot(path=shots / "3-session-page.png", full_page=True)

            page.click("#key-browser-link")
            page.wait_for_selector("table#keys")
            assert "Keys 1–49 of 49" in page.locator(".paginator").inner_text()
            page.click("#expired-filter a:text-is('Expired')")
            page.wait_for_url("**expired=yes**")
            assert page.locator("table#keys tbody tr").count() == 25
            page.screenshot(path=shots / "4-key-browser.png", full_page=True)

            page.goto(f"{live_server.url}/admin/observability/sessionstate/overview/")
            page.wait_for_selector("#worst")
            assert page.locator("#incidents").count() == 1
            page.screenshot(path=shots / "5-overview.png", full_page=True)

            page.goto(f"{live_server.url}/admin/observability/company/?q={SALONS[0]}")
            page.click(f"#result_list a:text-is('{SALONS[0]}')")
            page.wait_for_selector(".field-sessions_state")
            assert "sk_live" not in page.content()
            page.screenshot(path=shots / "6-salon-page.png", full_page=True)

            page.goto(f"{live_server.url}/admin/observability/client/?q=8+900+111+22+33")
            assert page.locator("#result_list tbody tr").count() == 1
            assert "7900***2233" in page.locator("#result_list").inner_text()
            page.screenshot(path=shots / "7-clients-search-by-phone.png", full_page=True)

            _visit_the_other_pages(page, live_server.url)
            browser.close()
            assert violations == [], violations
    finally:
        _cleanup()
