"""The cleanup runs in the admin: salons, per-session table, human sizes, refused reads refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from observability import cleanup
from observability.admin.cleanup import breakdown
from observability.models import CleanupRun
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

CHANGELIST = reverse("admin:observability_cleanuprun_changelist")


def _row_of(html: str, run_id: int) -> str:
    """The changelist row of one run (from its change link to the end of the row)."""
    link = reverse("admin:observability_cleanuprun_change", args=[run_id])
    start = html.index(f'href="{link}')
    return html[html.rindex("<tr", 0, start) : html.index("</tr>", start)]


def test_breakdown__counts_side_by_side_missing_pairs_zero():
    """Seen, deleted and kept of each session and key type share one row, sorted."""
    seen = {"962302": {"session": 4, "pre-key": 3}, "company_1": {"tctoken": 2}}
    deleted = {"962302": {"session": 4}}
    kept = {"962302": {"pre-key": 3}}
    assert breakdown(seen, deleted, kept) == [
        ("962302", "pre-key", 3, 0, 3),
        ("962302", "session", 4, 4, 0),
        ("company_1", "tctoken", 2, 0, 0),
    ]


def test_cleanup_runs__salons_sizes_and_per_session_table(admin_client):
    """A run names its salons (linked), sizes in human units, and a per-session table."""
    old = timezone.now() - timedelta(days=100)
    factories.make_keys("962302", "session", 3, written_at=old)
    factories.make_keys("company_777", "tctoken", 2, written_at=old)
    report = cleanup.cleanup_expired_keys(apply=True, started_by="test")
    run = CleanupRun.objects.get(pk=report.run_id)
    assert run.bytes_before > 1024  # so the page has a unit to show

    html = admin_client.get(CHANGELIST).content.decode()
    row = _row_of(html, run.pk)
    sessions = reverse("admin:observability_sessionstate_changelist")
    assert f'<a href="{sessions}?q=777">777</a>' in row
    assert f'<a href="{sessions}?q=962302">962302</a>' in row
    assert "KB" in row or "MB" in row
    assert "5 / 5 / 0" in row  # seen / deleted / kept
    assert "{" not in row  # no JSON in the list

    detail = admin_client.get(
        reverse("admin:observability_cleanuprun_change", args=[run.pk])
    ).content.decode()
    table = detail[detail.index('class="obs-table obs-breakdown"') :]
    table = table[: table.index("</table>")]
    assert '<tr><td>962302</td><td>session</td><td class="num">3</td><td class="num">3</td>' in (
        table
    )
    assert '<td>company_777</td><td>tctoken</td><td class="num">2</td><td class="num">2</td>' in (
        table
    )
    assert "&quot;962302&quot;: {" not in detail  # the counts are a table, not JSON


def test_cleanup_runs__a_refused_duplicates_run_reads_refused_with_its_reason(
    admin_client, tmp_path, settings
):
    """Both spellings still written: the run's row says refused, and why, never succeeded."""
    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    now = timezone.now()
    factories.make_auth("962302", written_at=now, seed=1)  # both written now: no stale side
    factories.make_keys("962302", "session", 2, written_at=now, seed=1)
    factories.make_auth("company_962302", written_at=now, seed=2)
    factories.make_keys("company_962302", "session", 2, written_at=now, seed=2)
    report = cleanup.cleanup_duplicates(apply=True, started_by="test")
    assert report.outcome == "refused"

    row = _row_of(admin_client.get(CHANGELIST).content.decode(), report.run_id)
    assert '<strong class="obs-outcome-refused">refused</strong>' in row
    assert "Refused: salon 962302: both sides were last written" in row
    assert "succeeded" not in row


def test_cleanup_runs__filter_by_outcome_and_operation(admin_client):
    """The list filters on outcome (status) and operation (kind); anything else is a 400."""
    CleanupRun.objects.create(operation="expired_keys", started_by="t", outcome="succeeded")
    CleanupRun.objects.create(operation="duplicates", started_by="t", outcome="refused")
    CleanupRun.objects.create(operation="orphan_keys", started_by="t", outcome="failed")

    def operations(query: str) -> set[str]:
        response = admin_client.get(CHANGELIST + query)
        assert response.status_code == 200, query
        return {run.operation for run in response.context["cl"].result_list}

    assert operations("?outcome__exact=refused") == {"duplicates"}
    assert operations("?operation=orphan_keys") == {"orphan_keys"}
    assert operations("") == {"expired_keys", "duplicates", "orphan_keys"}
    html = admin_client.get(CHANGELIST).content.decode()
    assert "By outcome" in html and "By operation" in html
    drill_down = html.split('class="toplinks"')[1].split("</nav>")[0]
    assert f"{timezone.localdate():%Y-%m-%d}" in drill_down  # a day as the one date format
    assert admin_client.get(CHANGELIST + "?error__startswith=R").status_code == 400


def test_cleanup_runs__search_by_salon_finds_the_runs_over_its_sessions(admin_client):
    """A salon id in either spelling finds runs that counted or chose it; text still works."""
    kwargs = {"operation": "expired_keys", "outcome": "succeeded"}
    counted = CleanupRun.objects.create(
        started_by="command", rows_seen={"company_962302": {"session": 3}}, **kwargs
    )
    chosen = CleanupRun.objects.create(
        started_by="admin:ops", parameters={"session_ids": ["962302"]}, **kwargs
    )
    CleanupRun.objects.create(started_by="task", rows_seen={"777": {"session": 1}}, **kwargs)

    def found(term: str) -> set[int]:
        response = admin_client.get(CHANGELIST, {"q": term})
        assert response.status_code == 200, term
        return {run.pk for run in response.context["cl"].result_list}

    assert found("962302") == found("company_962302") == {counted.pk, chosen.pk}
    assert found("admin:ops") == {chosen.pk}
