"""Tests for the overview's advice: it says "now" exactly when the cleanup would act."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from observability import cleanup, snapshot
from observability.cleanup import advice
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


def _orphan(session_id: str, days_ago: float, count: int = 4) -> None:
    factories.make_keys(
        session_id, "session", count, written_at=timezone.now() - timedelta(days=days_ago)
    )


def test_orphan_steps__grace_holds_back_until_the_last_write_plus_seven_days():
    """Keys written 5 days ago: nothing now, held until their write + 7 days, as the cleanup."""
    factories.make_auth("962302")
    _orphan("company_777", days_ago=5)
    snapshot.refresh(full=True)
    written = timezone.now() - timedelta(days=5)

    (held, hint) = advice.orphan_steps(timezone.now())
    assert not held.now and "grace" in held.held_by
    assert abs(held.held_until - (written + timedelta(days=7))) < timedelta(minutes=1)
    assert hint.command == advice.ORPHAN_COMMAND
    assert cleanup.cleanup_orphan_keys().total_seen == 0  # the cleanup agrees: nothing now

    later = held.held_until + timedelta(minutes=1)
    (due,) = advice.orphan_steps(later)
    assert due.now and "4 keys of 1 session (company_777)" in due.text
    assert cleanup.cleanup_orphan_keys(now=later).total_seen == 4  # and then it would act


def test_orphan_steps__old_and_recent_orphans_split(settings):
    """An orphan past the grace can go now; one within it waits; the setting moves the line."""
    _orphan("company_111", days_ago=10, count=3)
    _orphan("company_222", days_ago=2, count=5)
    snapshot.refresh(full=True)

    steps = advice.orphan_steps(timezone.now())
    assert [step.now for step in steps] == [True, False]
    assert "3 keys of 1 session (company_111)" in steps[0].text
    assert "5 keys of 1 session (company_222)" in steps[1].text

    settings.OBSERVABILITY_CLEANUP_ORPHAN_AGE = timedelta(days=1)
    (due,) = advice.orphan_steps(timezone.now())
    assert "8 keys of 2 sessions (company_111, company_222)" in due.text


def test_duplicate_steps__stale_side_written_recently_waits_for_the_idle_period():
    """The duplicates cleanup refuses a stale side written 2 h ago: the advice says until when."""
    now = timezone.now()
    factories.make_auth("962302", written_at=now - timedelta(hours=2), seed=1)
    factories.make_keys("962302", "session", 2, written_at=now - timedelta(hours=2), seed=1)
    factories.make_auth("company_962302", written_at=now, seed=2)
    factories.make_keys("company_962302", "session", 2, written_at=now, seed=2)
    snapshot.refresh(full=True)

    (step,) = advice.duplicate_steps(now)
    assert not step.now and "may still be writing both" in step.held_by
    assert abs(step.held_until - (now + timedelta(hours=22))) < timedelta(minutes=1)
    (pair,) = cleanup.cleanup_duplicates().duplicates  # the cleanup's own verdict agrees
    assert pair.verdict == "refused"

    (later,) = advice.duplicate_steps(now + timedelta(hours=23))
    assert later.now and "removes the stale '962302'" in later.text
    assert later.command == "manage.py cleanup_duplicates --salon 962302"


def test_overview__advice_says_when_and_what_holds_it_back(admin_client):
    """The overview no longer just says 'remove them': it names the grace and its end."""
    factories.make_auth("962302")
    _orphan("company_777", days_ago=5)
    snapshot.refresh(full=True)

    html = admin_client.get(reverse("admin:observability_sessionstate_overview")).content.decode()
    assert "Waits:" in html and "held back by the orphan cleanup&#x27;s grace of 7 days" in html
    assert "in 1 day" in html  # the release moment, with its relative age
    assert "remove them with cleanup_orphan_keys." not in html.lower()  # the old, timeless one


def test_overview__advice_links_the_admin_action_once_it_is_offered(admin_client, client):
    """The advice links the keys-only sessions where 'clean_orphan_keys' is offered, only then."""
    from django.contrib.auth.models import Permission, User

    factories.make_auth("962302")
    _orphan("company_777", days_ago=10)
    snapshot.refresh(full=True)
    overview = reverse("admin:observability_sessionstate_overview")
    listed = reverse("admin:observability_sessionstate_changelist") + "?auth=no"

    # A viewer without the cleanup permission is not offered the action: no link, the command.
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)  # noqa: S106
    viewer.user_permissions.add(Permission.objects.get(codename="view_sessionstate"))
    client.force_login(viewer)
    html = client.get(overview).content.decode()
    assert "Now:" in html and advice.ORPHAN_COMMAND in html and listed not in html

    html = admin_client.get(overview).content.decode()
    assert f'href="{listed}"' in html.replace("&amp;", "&")
    assert admin_client.get(listed).status_code == 200
