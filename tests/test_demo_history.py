"""Tests of the demo history: the demo's first snapshot catches one session per detector."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from observability import sessions, snapshot
from observability.models import SessionState
from observability_demo import demo_history
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


def test_demo_history__the_first_snapshot_catches_one_session_per_history_detector():
    """Five healthy sessions, the demo history written: each history detector fires once."""
    now = timezone.now()
    for n in range(6):
        factories.make_session(f"company_{5100 + n}", now=now, connected_hours_ago=1 + n)
    chosen = demo_history.pick(sessions.list_sessions(now=now))
    assert len(chosen) == 5
    given = demo_history.seed_demo_history(chosen, now)
    snapshot.refresh(now=now + timedelta(seconds=30))
    fired = {
        state.session_id: tuple(state.facts.get("rules") or ())
        for state in SessionState.objects.filter(session_id__in=chosen)
    }
    for session_id, detector in given.items():
        assert detector in fired[session_id], (session_id, detector, fired[session_id])
    assert sorted(given.values()) == sorted(demo_history.DETECTORS)
    untouched = SessionState.objects.exclude(session_id__in=chosen).get()
    assert untouched.status == "OK"


def test_seed_demo_history__its_rows_read_as_the_refresh_records_them():
    """The timeline's seeded fact rows carry the session's status, as the refresh's rows do."""
    from observability.models import SessionChange
    from observability.snapshot import history

    now = timezone.now()
    for n in range(5):
        factories.make_session(f"company_{5400 + n}", now=now, connected_hours_ago=1 + n)
    chosen = demo_history.pick(sessions.list_sessions(now=now))
    given = demo_history.seed_demo_history(chosen, now)
    snapshot.refresh(now=now + timedelta(seconds=30))
    status = dict(SessionState.objects.values_list("session_id", "status"))
    facts = SessionChange.objects.exclude(kind__in=history.STATUS_KINDS)
    assert {row.session_id for row in facts} == set(chosen) - {chosen[-1]}  # silence: no row
    for row in facts:
        assert row.old_status == row.new_status == status[row.session_id], row
    loop = next(sid for sid, detector in given.items() if detector == "reconnect_loop")
    (rewrites,) = facts.filter(session_id=loop)
    assert rewrites.kind == SessionChange.Kind.CREDS_REWRITTEN
    assert rewrites.detail.startswith("3 rewrites, last at ")

    # The bot's rows agree: the creds were written now, and up to the storm's nextPreKeyId.
    storm = next(sid for sid, detector in given.items() if detector == "decryption_failures")
    healths = {h.session_id: h for h in snapshot.all_health()}
    for session_id in (loop, storm):
        assert healths[session_id].auth_updated_at > timezone.now() - timedelta(minutes=1)
    newest = facts.filter(session_id=storm).latest("at")
    assert newest.data["new"] == healths[storm].facts.next_pre_key_id
    assert newest.detail.endswith(f"→ {healths[storm].facts.next_pre_key_id}")


def test_demo_history__too_few_healthy_sessions_writes_nothing():
    """With fewer healthy sessions than detectors, no history is picked."""
    factories.make_session("company_5200")
    assert demo_history.pick(sessions.list_sessions()) == []


def test_seed_state_history__the_live_snapshot_continues_the_demo_history():
    """After the demo's past is written, no session is new and each status has its own since."""
    from observability.models import SessionChange
    from observability.snapshot import history

    now = timezone.now()
    factories.make_session("company_5300", now=now)
    factories.make_keys("company_5301", "session", 3, written_at=now - timedelta(days=3))
    first = snapshot.refresh(full=True, now=now)
    assert demo_history.seed_state_history(first.taken_at, {}) == 2

    later = now + timedelta(minutes=1)
    snapshot.refresh(full=True, now=later)  # the first live snapshot after the seeded past
    assert not SessionState.objects.filter(first_seen__gt=snapshot.new_after(later)).exists()
    orphan = SessionState.objects.get(session_id="company_5301")
    assert orphan.status == "WARN"
    assert abs(orphan.status_since - (now - timedelta(days=3))) < timedelta(seconds=1)
    healthy = SessionState.objects.get(session_id="company_5300")
    began, hours = demo_history.PAST_INCIDENTS[0]
    assert healthy.status_since == now - timedelta(days=began) + timedelta(hours=hours)

    band = history.timeline("company_5301", days=7, now=later)
    assert [segment.status for segment in band.segments] == ["OK", "WARN"]
    assert history.median_time_to_recovery(now=later) == timedelta(hours=hours)
    appeared = SessionChange.objects.filter(kind=SessionChange.Kind.APPEARED)
    assert sorted(appeared.values_list("session_id", flat=True)) == [
        "company_5300",
        "company_5301",
    ]


def _rules(session_id: str) -> tuple[str, ...]:
    return tuple(SessionState.objects.get(session_id=session_id).facts.get("rules") or ())


def test_demo_history__each_catch_stays_on_the_pages_as_the_worker_refreshes(admin_client):
    """The demo's five catches survive the worker's refreshes; a passed window keeps its cause."""
    from django.urls import reverse

    start = timezone.now() - timedelta(minutes=15)
    for n in range(6):
        factories.make_session(f"company_{5500 + n}", now=start, connected_hours_ago=1 + n)
    chosen = demo_history.pick(sessions.list_sessions(now=start))
    given = demo_history.seed_demo_history(chosen, start)
    first = snapshot.refresh(full=True, now=start)  # as `manage.py demo` does, then its past
    demo_history.seed_state_history(first.taken_at, given)
    by_detector = {detector: sid for sid, detector in given.items()}

    for minute in (1, 2, 3):  # the worker's refreshes: nothing is wiped out
        snapshot.refresh(now=start + timedelta(minutes=minute))
        for session_id, detector in given.items():
            assert detector in _rules(session_id), (minute, detector)

    snapshot.refresh()  # a quarter of an hour on: the loop and the storm are over
    assert _rules(by_detector["reconnect_loop"]) == ()
    assert _rules(by_detector["decryption_failures"]) == ()
    for detector in ("session_rows_lost", "paired_again", "silence_rhythm"):
        assert detector in _rules(by_detector[detector]), detector

    listed = admin_client.get(reverse("admin:observability_sessionstate_changelist")).content
    listed = listed.decode()
    assert "Session rows lost" in listed
    assert "paired again while it was working" in listed
    assert "Unusual silence" in listed

    overview = admin_client.get(reverse("admin:observability_sessionstate_overview")).content
    incidents = overview.decode().split('id="incidents"', 1)[1].split('id="flapping"', 1)[0]
    for detector, cause in (
        ("reconnect_loop", "Reconnect loop"),
        ("decryption_failures", "Decryption failures"),
    ):
        row = incidents.split(f">{by_detector[detector]}</a>", 1)[1].split("</tr>", 1)[0]
        assert f">{cause}</td>" in row, (detector, row)

    for detector, headline in (
        ("reconnect_loop", "Reconnect loop:"),
        ("decryption_failures", "Decryption failures:"),
        ("session_rows_lost", "Session rows lost:"),
        ("paired_again", "The salon was paired again while it was working"),
        ("silence_rhythm", "Unusual silence:"),
    ):
        url = reverse("admin:observability_sessionstate_change", args=[by_detector[detector]])
        page = admin_client.get(url).content.decode()
        timeline = page.split('id="incidents"', 1)[0]
        assert headline in timeline, detector  # the status change into it, with its reason
    loop_page = admin_client.get(
        reverse("admin:observability_sessionstate_change", args=[by_detector["reconnect_loop"]])
    ).content.decode()
    assert '<span class="obs-cause"' in loop_page.split('id="incidents"', 1)[1].split("</div>")[0]
