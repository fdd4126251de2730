"""Tests of "new in the last 24 h": first seen after the store's baseline, not at its first."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from observability import snapshot
from observability.models import SessionState
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


def _new_ids(now) -> list[str]:
    after = snapshot.new_after(now)
    return sorted(SessionState.objects.filter(first_seen__gt=after).values_list("pk", flat=True))


def test_new_after__the_first_snapshot_marks_nothing_new_a_later_one_does():
    """Sessions of the very first snapshot are first observed; one seen later is new."""
    now = timezone.now()
    factories.make_keys("company_5400", "session", 2)
    first = snapshot.refresh(full=True, now=now)
    assert snapshot.baseline() == first.taken_at
    assert _new_ids(now) == []

    factories.make_keys("company_5401", "session", 2)
    snapshot.refresh(full=True, now=now + timedelta(minutes=1))
    assert _new_ids(now + timedelta(minutes=1)) == ["company_5401"]
    # A day on, the baseline no longer matters: the window alone decides.
    assert _new_ids(now + timedelta(hours=25)) == []


def test_sessions_admin__new_and_since_read_the_baseline(admin_client):
    """The list's 'new' filter and label, and the status 'since', say first observed honestly."""
    factories.make_keys("company_5410", "session", 2)
    snapshot.refresh(full=True)
    changelist = reverse("admin:observability_sessionstate_changelist")
    html = admin_client.get(changelist).content.decode()
    assert "since ≥" in html and "· new" not in html and "keys only · new" not in html
    assert "company_5410" not in admin_client.get(changelist + "?recent=new").content.decode()

    factories.make_keys("company_5411", "session", 2)
    snapshot.refresh(full=True, now=timezone.now() + timedelta(seconds=1))
    found = admin_client.get(changelist + "?recent=new").content.decode()
    assert "company_5411" in found and "company_5410" not in found
    overview = admin_client.get(reverse("admin:observability_sessionstate_overview"))
    assert [row["state"].session_id for row in overview.context["new_sessions"]] == [
        "company_5411"
    ]


def test_sessions_admin__a_status_from_recorded_history_is_not_at_least(admin_client):
    """The first snapshot's statuses read 'since ≥'; a status dated by history reads 'since'."""
    from django.contrib.admin.utils import quote

    from observability_demo import demo_history

    factories.make_keys(
        "company_5420", "session", 2, written_at=timezone.now() - timedelta(hours=3)
    )
    first = snapshot.refresh(full=True)
    changelist = reverse("admin:observability_sessionstate_changelist")
    page = reverse("admin:observability_sessionstate_change", args=[quote("company_5420")])
    assert "since ≥" in admin_client.get(changelist).content.decode()
    assert "first snapshot or earlier" in admin_client.get(page).content.decode()
    assert "company_5420" not in admin_client.get(changelist + "?recent=changed").content.decode()
    overview = reverse("admin:observability_sessionstate_overview")
    assert '<span class="obs-since" title="as the first snapshot found it: it began then or ' in (
        admin_client.get(overview).content.decode()
    )

    demo_history.seed_state_history(first.taken_at, {})  # WARN since its write, 3 h ago
    assert "since ≥" not in admin_client.get(changelist).content.decode()
    assert "first snapshot or earlier" not in admin_client.get(page).content.decode()
    assert "it began then or earlier" not in admin_client.get(overview).content.decode()
    assert "company_5420" in admin_client.get(changelist + "?recent=changed").content.decode()
