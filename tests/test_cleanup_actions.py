"""The orphan-key and twin-spelling cleanups as admin actions: dry-run preview, confirm, record."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone
from django_q.models import Task

from observability import cleanup, snapshot, tasks
from observability.cleanup import duplicates
from observability.models import CleanupRun, WhatsAppAuth, WhatsAppKey
from tests import factories
from tests.cleanup_support import duplicate_salon

bot_tables = pytest.mark.django_db(databases=["default", "bot"])

DAY = timedelta(days=1)
CHANGELIST = "admin:observability_sessionstate_changelist"


def _moment_attr(moment) -> str:
    """The ``datetime`` attribute the one time format (``display.when``) gives a moment."""
    return f'datetime="{timezone.localtime(moment).isoformat()}"'


def _orphans():
    """company_444 (no auth): 5 keys 10 days old, 3 written 2 days ago; 962302 paired."""
    now = timezone.now()
    factories.make_auth("962302")
    factories.make_keys("962302", "session", 2, written_at=now - 10 * DAY)
    factories.make_keys("company_444", "session", 5, written_at=now - 10 * DAY)
    recent = factories.make_keys("company_444", "sender-key", 3, written_at=now - 2 * DAY, seed=2)
    snapshot.refresh(full=True)
    return recent


def _twins(*, stale_days: float = 5):
    """The cleanup tests' twin salon (962302 stale, company_962302 live), in the snapshot."""
    duplicate_salon(stale_days=stale_days)
    snapshot.refresh(full=True)


def _act(client, action: str, selected: list[str], **extra):
    form = {"action": action, "_selected_action": selected, **extra}
    return client.post(reverse(CHANGELIST), form, follow=True)


# --- Orphan keys ---------------------------------------------------------------------------


@bot_tables
def test_orphan_action__preview_shows_what_the_grace_period_holds_back(admin_client):
    """The dry run counts the keys deletable now and says how many the grace keeps, until when."""
    recent = _orphans()
    page = _act(admin_client, "clean_orphan_keys", ["962302", "company_444"])
    body = page.content.decode()
    assert page.status_code == 200
    assert 'id="orphans-total">5<' in body
    assert 'id="orphans-held">3<' in body
    written = max(key.updated_at for key in recent)
    assert _moment_attr(written + 7 * DAY) in body  # from when they become deletable
    assert "in 4 days" in body or "in 5 days" in body
    assert "<th>keys to delete now</th><th>keys held back</th>" in body
    assert "<td>company_444</td><td>sender-key</td><td>0</td><td>3</td>" in body
    assert "<td>company_444</td><td>session</td><td>5</td><td>0</td>" in body
    held = body.split("<h2>Why keys are held back</h2>", 1)[1].split("</ul>", 1)[0]
    assert "<li><strong>sender-key</strong>: " in held and "grace period" in held
    preview = CleanupRun.objects.get()
    assert (preview.operation, preview.dry_run) == ("orphan_keys", True)
    assert (preview.started_by, preview.total_seen, preview.total_kept) == ("admin:admin", 5, 3)
    assert "grace period" in preview.kept_reasons["sender-key"]
    assert WhatsAppKey.objects.count() == 10


@bot_tables
def test_orphan_action__nothing_deletable_says_why_and_offers_no_confirmation(admin_client):
    """Only orphans within the grace: "0 would be deleted", the grace is why, no button."""
    factories.make_keys("company_444", "session", 4, written_at=timezone.now() - 3 * DAY)
    WhatsAppKey.objects.bulk_create(  # written by hand long ago: no updated_at
        WhatsAppKey(
            company_id="company_444",
            key_type="tctoken",
            key_id=f"{n}@lid",
            value={"token": "x"},
            updated_at=None,
        )
        for n in (1, 2)
    )
    snapshot.refresh(full=True)
    body = _act(admin_client, "clean_orphan_keys", ["company_444"]).content.decode()
    assert 'id="orphans-total">0<' in body and 'id="orphans-held">4<' in body
    assert "<strong>2</strong> orphan keys without" in body and "never deleted" in body
    assert "Nothing to delete now" in body
    assert 'name="post"' not in body
    preview = CleanupRun.objects.get()
    confirm = _act(
        admin_client, "clean_orphan_keys", ["company_444"], post="yes", preview=preview.pk
    )
    assert "Nothing was queued" in confirm.content.decode()
    assert WhatsAppKey.objects.count() == 6
    assert not CleanupRun.objects.filter(dry_run=False).exists()


@bot_tables
def test_cleanup_actions__a_session_gone_since_the_snapshot_is_a_clear_message(admin_client):
    """A selected session the bot deleted since the snapshot: the message says so, no run."""
    factories.make_keys("company_444", "session", 2, written_at=timezone.now() - 10 * DAY)
    snapshot.refresh(full=True)
    WhatsAppKey.objects.all().delete()
    for action in ("clean_orphan_keys", "clean_duplicate_spellings"):
        body = _act(admin_client, action, ["company_444"]).content.decode()
        assert "No WhatsApp session" in body, action
    assert not CleanupRun.objects.exists()


@bot_tables
def test_orphan_action__confirming_deletes_exactly_the_preview_and_records_it(admin_client):
    """Confirming queues the applied run: it deletes what the preview counted, recorded."""
    _orphans()
    selected = ["962302", "company_444"]
    _act(admin_client, "clean_orphan_keys", selected)
    preview = CleanupRun.objects.get()
    done = _act(admin_client, "clean_orphan_keys", selected, post="yes", preview=preview.pk)
    assert "Queued the cleanup of 5 orphan key(s) of 2 session(s)" in done.content.decode()
    applied = CleanupRun.objects.get(dry_run=False)
    assert (applied.operation, applied.outcome, applied.started_by) == (
        "orphan_keys",
        "succeeded",
        "admin:admin",
    )
    assert applied.rows_deleted == preview.rows_seen == {"company_444": {"session": 5}}
    assert applied.parameters["cutoff"] == preview.parameters["cutoff"]
    assert sorted(WhatsAppKey.objects.values_list("company_id", "key_type").distinct()) == [
        ("962302", "session"),
        ("company_444", "sender-key"),
    ]
    assert Task.objects.filter(func=tasks.CLEANUP_ORPHAN_KEYS, success=True).count() == 1


@bot_tables
def test_orphan_action__a_confirmation_without_its_dry_run_queues_nothing(admin_client):
    """post=yes without this user's dry run of these sessions shows the dry run again."""
    _orphans()
    other = CleanupRun.objects.create(operation="orphan_keys", started_by="admin:someone")
    for extra in ({}, {"preview": "x"}, {"preview": other.pk}):
        page = _act(admin_client, "clean_orphan_keys", ["company_444"], post="yes", **extra)
        body = page.content.decode()
        assert "Nothing was queued" in body and 'id="orphans-total">5<' in body, extra
    assert WhatsAppKey.objects.count() == 10
    assert not CleanupRun.objects.filter(dry_run=False).exists()


# --- Twin spellings ------------------------------------------------------------------------


@bot_tables
def test_duplicates_action__preview_names_the_stale_twin_the_rule_and_the_backup(admin_client):
    """The stale side, the rule with both moments compared, and the backup's tables and rows."""
    _twins()
    page = _act(admin_client, "clean_duplicate_spellings", ["company_962302"])
    body = page.content.decode()
    assert page.status_code == 200
    assert '<span class="duplicate-stale">962302</span> is stale, company_962302 is live' in body
    assert duplicates_rule_text(duplicates.RULE_OLDER_WRITE) in body
    stale_auth = WhatsAppAuth.objects.get(company_id="962302")
    live_auth = WhatsAppAuth.objects.get(company_id="company_962302")
    assert _moment_attr(stale_auth.updated_at) in body and "5 days ago" in body
    assert _moment_attr(live_auth.updated_at) in body
    assert "<td>whatsapp_auth</td><td>1</td>" in body
    assert "<td>whatsapp_keys</td><td>7</td><td>pre-key 3, session 4</td>" in body
    for secret in (stale_auth.creds["noiseKey"]["private"], stale_auth.creds["me"]["id"]):
        assert str(secret) not in body  # counts only, never creds
    preview = CleanupRun.objects.get()
    assert (preview.operation, preview.outcome, preview.total_seen) == (
        "duplicates",
        "succeeded",
        8,
    )
    assert WhatsAppAuth.objects.count() == 2


def duplicates_rule_text(rule: str) -> str:
    """The page's explanation of a rule, as the template escapes it."""
    from django.utils.html import escape

    from observability.admin.cleanup_actions import RULE_EXPLAINED

    return str(escape(RULE_EXPLAINED[rule]))


@bot_tables
def test_duplicates_action__confirming_backs_up_and_removes_the_stale_side(
    admin_client, tmp_path, settings
):
    """Confirming removes exactly the previewed stale side, backed up, recorded as applied."""
    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    _twins()
    live_keys = set(
        WhatsAppKey.objects.filter(company_id="company_962302").values_list("pk", flat=True)
    )
    _act(admin_client, "clean_duplicate_spellings", ["962302"])
    preview = CleanupRun.objects.get()
    done = _act(
        admin_client, "clean_duplicate_spellings", ["962302"], post="yes", preview=preview.pk
    )
    assert "Queued the removal of 962302" in done.content.decode()
    applied = CleanupRun.objects.get(dry_run=False)
    assert (applied.outcome, applied.started_by) == ("succeeded", "admin:admin")
    assert applied.rows_deleted == preview.rows_seen
    assert applied.parameters["confirmed_stale"] == ["962302"]
    assert not WhatsAppKey.objects.filter(company_id="962302").exists()
    assert not WhatsAppAuth.objects.filter(company_id="962302").exists()
    assert set(WhatsAppKey.objects.values_list("pk", flat=True)) == live_keys
    (backup,) = tmp_path.iterdir()
    assert applied.backup_path == str(backup) and os.stat(backup).st_mode & 0o077 == 0
    assert Task.objects.filter(func=tasks.CLEANUP_DUPLICATES, success=True).count() == 1


@bot_tables
def test_duplicates_action__a_refused_run_reads_refused_with_its_reason(admin_client):
    """Both sides still written: the preview says refused, why, and offers no confirmation."""
    _twins(stale_days=0.1)
    body = _act(admin_client, "clean_duplicate_spellings", ["962302"]).content.decode()
    assert 'id="duplicates-refused"' in body and "Refused" in body
    assert "may still be writing both" in body
    assert duplicates_rule_text(duplicates.RULE_STILL_WRITTEN) in body
    stale_written = WhatsAppAuth.objects.get(company_id="962302").updated_at
    assert "can be removed from" in body and _moment_attr(stale_written + DAY) in body
    assert 'name="post"' not in body and "Nothing to remove" in body
    preview = CleanupRun.objects.get()
    assert preview.outcome == "refused" and "may still be writing both" in preview.error
    confirm = _act(
        admin_client, "clean_duplicate_spellings", ["962302"], post="yes", preview=preview.pk
    )
    assert "Nothing was queued" in confirm.content.decode()
    assert not CleanupRun.objects.filter(dry_run=False).exists()
    assert WhatsAppAuth.objects.count() == 2


@bot_tables
def test_duplicates_action__a_salon_under_one_spelling_has_nothing_to_remove(admin_client):
    """A selected salon with no twin is named as such; sessions naming no salon are refused."""
    factories.make_auth("company_111")
    factories.make_keys("not-a-salon", "session", 1)
    snapshot.refresh(full=True)
    body = _act(admin_client, "clean_duplicate_spellings", ["company_111"]).content.decode()
    assert 'id="duplicates-single"' in body and "111" in body and "Nothing to remove" in body
    unparsed = _act(admin_client, "clean_duplicate_spellings", ["not-a-salon"])
    assert "None of the selected sessions names a salon" in unparsed.content.decode()
    assert CleanupRun.objects.count() == 1


@bot_tables
def test_cleanup_duplicates__a_side_other_than_the_confirmed_one_is_refused(tmp_path, settings):
    """An applied run told another stale side than the one decided now removes nothing."""
    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    _twins()
    report = cleanup.cleanup_duplicates(apply=True, confirmed_stale=["company_962302"])
    (pair,) = report.duplicates
    assert (pair.verdict, pair.rule) == ("refused", duplicates.RULE_NOT_CONFIRMED)
    assert "'962302'" in pair.reason
    assert CleanupRun.objects.get(pk=report.run_id).outcome == "refused"
    assert WhatsAppAuth.objects.count() == 2 and list(tmp_path.iterdir()) == []


# --- Who may ------------------------------------------------------------------------------


@bot_tables
def test_cleanup_actions__absent_and_inert_without_the_cleanup_permission(client):
    """A staff user who may only view sessions is not offered the actions and cannot run them."""
    factories.make_keys("company_444", "session", 5, written_at=timezone.now() - 10 * DAY)
    _twins()
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)  # noqa: S106
    viewer.user_permissions.add(Permission.objects.get(codename="view_sessionstate"))
    client.force_login(viewer)
    changelist = client.get(reverse(CHANGELIST)).content.decode()
    assert "clean_orphan_keys" not in changelist
    assert "clean_duplicate_spellings" not in changelist
    for action, selected in (
        ("clean_orphan_keys", ["company_444"]),
        ("clean_duplicate_spellings", ["962302"]),
    ):
        page = _act(client, action, selected)
        assert page.status_code == 200 and "No action selected" in page.content.decode()
        _act(client, action, selected, post="yes", preview="1")
    assert not CleanupRun.objects.exists()
    assert WhatsAppKey.objects.count() == 18

    viewer.user_permissions.add(Permission.objects.get(codename="add_cleanuprun"))
    viewer = User.objects.get(pk=viewer.pk)  # drop the cached permissions
    client.force_login(viewer)
    changelist = client.get(reverse(CHANGELIST)).content.decode()
    assert "clean_orphan_keys" in changelist and "clean_duplicate_spellings" in changelist


# --- Roles: the preview under the web's read-only role, the applied run under the cleanup role --


@pytest.mark.django_db(databases=["default", "bot"], transaction=True)
def test_cleanup_actions__preview_needs_only_the_read_only_role(
    readme_roles, committed_bot_rows, admin_client, tmp_path, settings
):
    """Both dry runs render under the web's role; the queued runs delete under the cleanup role."""
    from tests.roles_support import CLEANUP, READ_ONLY, bot_alias_as

    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    _twins()
    factories.make_keys("company_444", "session", 5, written_at=timezone.now() - 10 * DAY)
    snapshot.refresh(full=True)
    steps = (("clean_orphan_keys", ["company_444"]), ("clean_duplicate_spellings", ["962302"]))
    for action, selected in steps:
        with bot_alias_as(READ_ONLY):
            page = _act(admin_client, action, selected)
        assert page.status_code == 200 and 'name="post"' in page.content.decode(), action
        preview = CleanupRun.objects.filter(dry_run=True).latest("pk")
        assert preview.outcome == "succeeded", preview.error
        with bot_alias_as(CLEANUP):
            _act(admin_client, action, selected, post="yes", preview=preview.pk)
        applied = CleanupRun.objects.filter(dry_run=False).latest("pk")
        assert applied.outcome == "succeeded" and applied.rows_deleted == preview.rows_seen
    assert set(WhatsAppKey.objects.values_list("company_id", flat=True)) == {"company_962302"}


@bot_tables
def test_duplicates_action__sides_written_at_one_instant_are_refused_and_named_once(admin_client):
    """The demo's twin: both written at the same instant; the page says so once, refused."""
    written = timezone.now() - 3 * DAY
    for seed, session_id in enumerate(("962302", "company_962302"), start=1):
        factories.make_auth(session_id, written_at=written, seed=seed)
    snapshot.refresh(full=True)
    body = _act(admin_client, "clean_duplicate_spellings", ["962302"]).content.decode()
    assert duplicates_rule_text(duplicates.RULE_SAME_INSTANT) in body
    assert body.count("last written at the same instant") == 2  # the refusal, then the why
    assert "Refused: salon 962302" in body and "Nothing can be removed" in body
    assert CleanupRun.objects.get().outcome == "refused"
