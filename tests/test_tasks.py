"""Queued jobs: the cleanup task, the health task, their Sentry reporting, the schedules."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule, Task

from observability import snapshot, tasks
from observability.cleanup import LOCK_KEY
from observability.exceptions import BadInput, CleanupAlreadyRunning
from observability.models import CleanupRun, WhatsAppKey
from tests import factories
from tests.cleanup_support import raw_bot_connection
from tests.sentry_server import SentryServer, sentry_initialised

bot_tables = pytest.mark.django_db(databases=["default", "bot"])


def _expired(session_id: str, count: int, seed: int = 1):
    """Per-contact sessions unwritten for 100 days: past their 90-day retention."""
    old = timezone.now() - timedelta(days=100)
    return factories.make_keys(session_id, "session", count, written_at=old, seed=seed)


@pytest.fixture
def sentry():
    """A real local Sentry endpoint with the project's Sentry set-up pointed at it."""
    server = SentryServer().start()
    try:
        with sentry_initialised(server.dsn):
            yield server
    finally:
        server.stop()


@bot_tables
def test_cleanup_expired_keys_task__deletes_and_returns_the_report():
    """The task applies the cleanup (not a dry run), records it as "task", returns the report."""
    _expired("962302", 4)
    factories.make_keys("962302", "session", 2, seed=2)
    result = tasks.cleanup_expired_keys_task()
    assert result["dry_run"] is False
    assert result["rows_deleted"] == {"962302": {"session": 4}}
    assert result["rows_kept"] == {"962302": {"session": 2}}
    assert WhatsAppKey.objects.count() == 2
    assert CleanupRun.objects.get().started_by == "task"


@bot_tables
def test_cleanup_expired_keys_task__queued_runs_inline_in_tests():
    """async_task runs synchronously in tests and its result lands in django-q2's records."""
    from django_q.tasks import async_task, result

    _expired("962302", 3)
    task_id = async_task(tasks.CLEANUP_EXPIRED_KEYS, salons=["962302"])
    assert result(task_id)["total_deleted"] == 3
    assert Task.objects.get(id=task_id).success is True
    assert not WhatsAppKey.objects.exists()


@bot_tables
def test_cleanup_expired_keys_task__checks_in_and_reports_failures_to_sentry(sentry):
    """The scheduled run checks in with the cron monitor; a failure is captured, then raised."""
    _expired("962302", 1)
    tasks.cleanup_expired_keys_task()
    assert sentry.wait_for(lambda s: len(s.check_ins()) >= 2)
    statuses = [c["status"] for c in sentry.check_ins()]
    assert statuses == ["in_progress", "ok"]
    assert sentry.check_ins()[0]["monitor_slug"] == tasks.CLEANUP_MONITOR
    assert sentry.check_ins()[0]["monitor_config"]["schedule"]["value"] == "0 3 * * *"

    sentry.clear()
    with raw_bot_connection() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        with pytest.raises(CleanupAlreadyRunning):
            tasks.cleanup_expired_keys_task()
    assert sentry.wait_for(lambda s: s.events() and len(s.check_ins()) >= 2)
    (event,) = sentry.events()
    assert event["exception"]["values"][-1]["type"] == "CleanupAlreadyRunning"
    assert event["tags"]["operation"] == "task:cleanup_expired_keys_task"
    assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "error"]


@bot_tables
def test_check_store_health__calls_the_alerting_service_under_a_monitor(sentry, monkeypatch):
    """The 5-minute task runs observability.alerts.check_store_and_alert and checks in."""
    alerts = pytest.importorskip("observability.alerts")
    calls = []
    monkeypatch.setattr(alerts, "check_store_and_alert", lambda: calls.append(1) or "checked")
    assert tasks.check_store_health() == "checked"
    assert calls == [1]
    assert sentry.wait_for(lambda s: len(s.check_ins()) >= 2)
    assert sentry.check_ins()[0]["monitor_slug"] == tasks.HEALTH_MONITOR


@pytest.mark.django_db
def test_setup_schedules__creates_each_schedule_once_however_often_it_runs(settings):
    """Three runs leave four schedules; a new hour updates the cleanup schedule in place."""
    for _ in range(3):
        call_command("setup_schedules", stdout=StringIO())
    assert Schedule.objects.count() == 4
    assert Schedule.objects.get(func=tasks.TAKE_SNAPSHOT).cron == "* * * * *"
    assert Schedule.objects.get(func=tasks.CAPTURE_TABLE_SIZES).cron == "7 * * * *"
    cleanup_schedule = Schedule.objects.get(func=tasks.CLEANUP_EXPIRED_KEYS)
    health_schedule = Schedule.objects.get(func=tasks.CHECK_STORE_HEALTH)
    assert (cleanup_schedule.schedule_type, cleanup_schedule.cron) == (Schedule.CRON, "0 3 * * *")
    assert health_schedule.cron == "*/5 * * * *"
    assert cleanup_schedule.next_run > timezone.now()  # not run the moment it is installed
    assert cleanup_schedule.next_run.hour == 3

    settings.OBSERVABILITY_CLEANUP_SCHEDULE_HOUR = 4
    out = StringIO()
    call_command("setup_schedules", stdout=out)
    assert "updated: observability: cleanup expired keys" in out.getvalue()
    assert Schedule.objects.count() == 4
    assert Schedule.objects.get(func=tasks.CLEANUP_EXPIRED_KEYS).cron == "0 4 * * *"


@pytest.mark.django_db
def test_setup_schedules__refuses_an_impossible_hour(settings):
    """An hour outside 0-23 is a configuration error, and no schedule is written."""
    from django.core.exceptions import ImproperlyConfigured

    settings.OBSERVABILITY_CLEANUP_SCHEDULE_HOUR = 25
    with pytest.raises(ImproperlyConfigured, match="0 to 23"):
        call_command("setup_schedules", stdout=StringIO())
    assert not Schedule.objects.exists()


# --- The admin action ----------------------------------------------------------------------


@bot_tables
def test_queue_cleanup_action__confirms_with_dry_run_counts_then_queues(admin_client):
    """The action shows the dry-run counts; confirming runs the task; both are recorded."""
    factories.make_auth("962302")
    factories.make_auth("company_111", seed=2)
    _expired("962302", 5)
    _expired("company_111", 2, seed=2)
    snapshot.refresh(full=True)
    url = reverse("admin:observability_sessionstate_changelist")
    form = {"action": "queue_expired_keys_cleanup", "_selected_action": ["962302"]}

    page = admin_client.post(url, form)
    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="cleanup-total">5<' in body
    assert "<th>keys to delete</th><th>keys kept</th>" in body
    assert "<td>962302</td><td>session</td><td>5</td><td>0</td>" in body
    assert "removePreKey" in body  # the retention table says why pre-keys are never deleted
    assert WhatsAppKey.objects.count() == 7
    preview = CleanupRun.objects.get()
    assert (preview.dry_run, preview.started_by) == (True, "admin:admin")

    assert f'name="preview" value="{preview.pk}"' in body
    done = admin_client.post(url, {**form, "post": "yes", "preview": preview.pk}, follow=True)
    assert "Queued the cleanup of expired keys for 1 session" in done.content.decode()
    assert list(WhatsAppKey.objects.values_list("company_id", flat=True).distinct()) == [
        "company_111"
    ]
    applied = CleanupRun.objects.get(dry_run=False)
    assert applied.started_by == "admin:admin"
    assert applied.rows_deleted == {"962302": {"session": 5}}
    assert Task.objects.filter(func=tasks.CLEANUP_EXPIRED_KEYS, success=True).count() == 1


@bot_tables
def test_queue_cleanup_action__a_confirmation_without_its_dry_run_queues_nothing(admin_client):
    """post=yes without this user's dry run of the same sessions shows the dry run instead."""
    factories.make_auth("962302")
    factories.make_auth("company_111", seed=2)
    _expired("962302", 3)
    _expired("company_111", 2, seed=2)
    snapshot.refresh(full=True)
    url = reverse("admin:observability_sessionstate_changelist")
    form = {"action": "queue_expired_keys_cleanup", "_selected_action": ["962302"]}
    other = CleanupRun.objects.create(operation="expired_keys", started_by="admin:someone")
    other_selection = admin_client.post(
        url, {**form, "_selected_action": ["company_111"]}
    ).context["preview_run_id"]
    for extra in ({}, {"preview": "x"}, {"preview": other.pk}, {"preview": other_selection}):
        page = admin_client.post(url, {**form, "post": "yes", **extra})
        assert page.status_code == 200, extra
        assert "Nothing was queued" in page.content.decode(), extra
        assert 'id="cleanup-total">3<' in page.content.decode(), extra
    assert WhatsAppKey.objects.count() == 5
    assert not Task.objects.filter(func=tasks.CLEANUP_EXPIRED_KEYS).exists()
    assert not CleanupRun.objects.filter(dry_run=False).exists()


@bot_tables
def test_queue_cleanup_action__a_post_without_the_csrf_token_is_refused(admin_user):
    """A forged cross-site POST of the action (no CSRF token) is a 403: no dry run, no queue."""
    from django.test import Client

    factories.make_auth("962302")
    _expired("962302", 2)
    snapshot.refresh(full=True)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    url = reverse("admin:observability_sessionstate_changelist")
    response = browser.post(
        url,
        {"action": "queue_expired_keys_cleanup", "_selected_action": ["962302"], "post": "yes"},
    )
    assert response.status_code == 403
    assert not CleanupRun.objects.exists()
    assert WhatsAppKey.objects.count() == 2


@bot_tables
def test_queue_cleanup_action__needs_the_cleanup_permission(client):
    """A staff user who may only view sessions is not offered the action and cannot queue it."""
    factories.make_auth("962302")
    _expired("962302", 2)
    snapshot.refresh(full=True)
    user = User.objects.create_user("viewer", password="pw", is_staff=True)  # noqa: S106
    user.user_permissions.add(Permission.objects.get(codename="view_sessionstate"))
    client.force_login(user)
    url = reverse("admin:observability_sessionstate_changelist")
    assert "queue_expired_keys_cleanup" not in client.get(url).content.decode()
    response = client.post(
        url,
        {"action": "queue_expired_keys_cleanup", "_selected_action": ["962302"], "post": "yes"},
        follow=True,
    )
    assert "No action selected" in response.content.decode()
    assert WhatsAppKey.objects.count() == 2
    assert not CleanupRun.objects.exists()


@bot_tables
def test_cleanup_run_admin__lists_runs_read_only(admin_client):
    """The run records are listed and shown, and cannot be added, changed or deleted."""
    _expired("962302", 1)
    tasks.cleanup_expired_keys_task()
    run = CleanupRun.objects.get()
    changelist = admin_client.get(reverse("admin:observability_cleanuprun_changelist"))
    assert changelist.status_code == 200 and "expired_keys" in changelist.content.decode()
    detail = admin_client.get(reverse("admin:observability_cleanuprun_change", args=[run.pk]))
    assert detail.status_code == 200 and "session" in detail.content.decode()
    # Sizes in human units and moments in the one format, with the zone and an age.
    html = detail.content.decode()
    assert "KB" in html or "MB" in html
    assert f">{run.started_at:%Y-%m-%d %H:%M} UTC</time>" in html and "ago" in html
    assert admin_client.get(reverse("admin:observability_cleanuprun_add")).status_code == 403
    delete = reverse("admin:observability_cleanuprun_delete", args=[run.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert CleanupRun.objects.filter(pk=run.pk).exists()


@bot_tables
def test_take_snapshot_task__refreshes_under_its_monitor(sentry):
    """The every-minute task takes a snapshot and checks in with its own cron monitor."""
    factories.make_auth("962302")
    result = tasks.take_snapshot_task()
    assert (result["outcome"], result["kind"]) == ("succeeded", "full")
    assert result["sessions_total"] == 1
    assert sentry.wait_for(lambda s: len(s.check_ins()) >= 2)
    assert {c["monitor_slug"] for c in sentry.check_ins()} == {tasks.SNAPSHOT_MONITOR}
    assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "ok"]


@bot_tables
def test_take_snapshot_task__bot_down_is_reported(sentry, bot_database_down):
    """A refresh that cannot read the bot is reported to Sentry and marks the check-in failed."""
    from observability.exceptions import BotDatabaseUnavailable

    with pytest.raises(BotDatabaseUnavailable):
        tasks.take_snapshot_task()
    assert sentry.wait_for(lambda s: s.events() and len(s.check_ins()) >= 2)
    assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "error"]


def test_tasks__report_and_monitor_through_the_sentry_module(caplog):
    """tasks.py keeps no copy of the Sentry helpers: each task is wrapped by the one path."""
    import inspect

    assert "sentry_sdk" not in inspect.getsource(tasks)
    for task in (
        tasks.cleanup_expired_keys_task,
        tasks.cleanup_orphan_keys_task,
        tasks.cleanup_duplicates_task,
        tasks.check_store_health,
        tasks.take_snapshot_task,
    ):
        assert task.__wrapped__.__module__ == tasks.__name__  # observability.sentry's wrapper
    with caplog.at_level("WARNING", logger="observability.sentry"), pytest.raises(BadInput):
        tasks.cleanup_expired_keys_task(batch_size=0)
    assert "task task:cleanup_expired_keys_task failed: BadInput" in caplog.text
