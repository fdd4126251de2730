"""Every moment on the ops pages reads one way: ``2026-11-30 19:40 UTC · 3 hours ago``."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule, Task

from observability import sessions, snapshot
from observability.models import AlertDelivery, CleanupRun, Client, Company, SessionState
from observability_demo import demo_data, demo_history

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

#: What one format looks like in HTML (display.when) and in plain text (moments.text).
ONE_FORMAT = (
    re.compile(
        r'<time class="obs-when" datetime="[^"]+" title="[^"]+">\d{4}-\d{2}-\d{2} \d{2}:\d{2} '
        r'[A-Z]{2,5}</time> <small class="obs-age">· (in )?[\w ,]+?( ago)?</small>'
    ),
    re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} [A-Z]{2,5} · (in )?\d+ [a-z]+( ago)?"),
)
#: Shown verbatim, not as moments: jsonb and payloads (<pre>).
VERBATIM = re.compile(r"<pre[ >].*?</pre>", re.DOTALL)
#: The formats that crept in before: ISO, Django's default, US short, chart labels, bare ages.
OTHER_FORMATS = {
    "ISO or minutes without zone and age": re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}"),
    "Django's 'Nov. 30, 2026'": re.compile(
        r"\b(Jan|Feb|March|April|May|June|July|Aug|Sept|Oct|Nov|Dec)[a-z]*\.? \d{1,2}\b"
    ),
    "US '11/30/2026'": re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b"),
    "'7:40 p.m.'": re.compile(r"\b\d{1,2}(:\d{2})? ?[ap]\.m\."),
    "chart label '30.11'": re.compile(r"<text[^>]*>\d{2}\.\d{2}</text>"),
    # display.age's '3 h ago', and Django's timesince / naturaltime ('3\xa0hours'): an age
    # alone. (A rule's reason may say 'a disconnect 3 days ago' in a sentence: prose.)
    "an age without its moment": re.compile(
        r"\b\d+ (s|min|h|d \d+ h) ago\b|\d+(\xa0|&nbsp;)(minute|hour|day|week|month|year)"
    ),
}


def other_formats(html: str) -> list[str]:
    """Every moment of ``html`` written another way than the one format, with its context."""
    text = VERBATIM.sub("", html)
    for pattern in ONE_FORMAT:
        text = pattern.sub("", text)
    return [
        f"{name}: …{text[max(0, m.start() - 60) : m.end() + 20]}…"
        for name, pattern in OTHER_FORMATS.items()
        for m in pattern.finditer(text)
    ]


@pytest.fixture
def demo_pages():
    """The small demo data set with history, a snapshot, two dry runs and an alert delivery."""
    now = timezone.now()
    demo_data.seed_demo_data(demo_data.SIZES["small"], replace=True)
    demo_history.seed_demo_history(demo_history.pick(sessions.list_sessions()), now)
    snapshot.refresh(full=True)
    for command in ("cleanup_expired_keys", "cleanup_orphan_keys"):
        call_command(command, stdout=io.StringIO())
    failing = SessionState.objects.filter(status="FAIL", has_auth=True).order_by("session_id")[0]
    delivery = AlertDelivery.objects.create(
        change_id=1,
        session_id=failing.session_id,
        old_status="OK",
        new_status="FAIL",
        at=now - timedelta(hours=3),
        outcome=AlertDelivery.Outcome.DELIVERED,
        attempts=1,
        last_attempt_at=now - timedelta(hours=3),
        delivered_at=now - timedelta(hours=3),
        payload={"timestamp": (now - timedelta(hours=3)).isoformat()},
    )
    Schedule.objects.create(
        name="demo schedule", func="observability.tasks.take_snapshot_task", next_run=now
    )
    for number, success in ((1, True), (2, False)):
        Task.objects.create(
            id=f"{number:032x}",
            name=f"demo task {number}",
            func="observability.tasks.take_snapshot_task",
            started=now - timedelta(hours=2),
            stopped=now - timedelta(hours=1),
            success=success,
        )
    salon = Company.objects.order_by("company_id").first()
    client = Client.objects.exclude(last_sync_at=None).order_by("id").first()
    sessions_list = reverse("admin:observability_sessionstate_changelist")
    session_id = quote(failing.session_id)
    return [
        reverse("admin:index"),
        sessions_list,
        sessions_list + "?status=FAIL",
        reverse("admin:observability_sessionstate_change", args=[session_id]),
        reverse("admin:observability_sessionstate_keys", args=[session_id]),
        reverse("admin:observability_sessionstate_overview"),
        reverse("admin:observability_company_changelist"),
        reverse("admin:observability_company_change", args=[salon.pk]),
        reverse("admin:observability_client_changelist"),
        reverse("admin:observability_client_change", args=[client.pk]),
        reverse("admin:observability_cleanuprun_changelist"),
        reverse("admin:observability_cleanuprun_change", args=[CleanupRun.objects.first().pk]),
        reverse("admin:observability_alertdelivery_changelist"),
        reverse("admin:observability_alertdelivery_change", args=[delivery.pk]),
        reverse("admin:observability_insights"),
        # django-q2's lists: their date-time columns through MomentColumnsMixin.
        reverse("admin:django_q_schedule_changelist"),
        reverse("admin:django_q_success_changelist"),
        reverse("admin:django_q_failure_changelist"),
        "/health/?format=html",
    ]


def test_other_formats__catches_each_format_that_crept_in_before():
    """The scanner flags ISO, Django's default, US, chart-label and bare-age moments."""
    assert (
        other_formats(
            '<time class="obs-when" datetime="x" title="x">2026-11-30 19:40 UTC'
            '</time> <small class="obs-age">· 3 hours ago</small>'
        )
        == []
    )
    assert other_formats("as of 2026-11-30 19:40 UTC · 3 minutes ago (full)") == []
    assert other_formats("<pre>2026-11-30T19:40:00+00:00</pre>") == []
    for html in (
        "<td>2026-11-30 19:40</td>",
        "<td>2026-11-30T19:40:00</td>",
        "<td>Nov. 30, 2026, 7:40 p.m.</td>",
        "<td>11/30/2026</td>",
        '<text x="1">30.11</text>',
        "<td>3 h ago</td>",
        "<td>3\xa0hours ago</td>",
    ):
        assert other_formats(html), html


def test_admin_pages__every_moment_in_the_one_format(admin_client, demo_pages):
    """On the demo data no page writes a moment otherwise than '2026-11-30 19:40 UTC · 3 h ago'."""
    found = {}
    for url in demo_pages:
        response = admin_client.get(url)
        # /health/ runs its checks on connections of their own, outside this test's
        # transaction: it sees no snapshot and answers 500 with its messages (and footer).
        assert response.status_code == (500 if url.startswith("/health/") else 200), url
        html = response.content.decode()
        # Each page but the index and /health/ shows moments: the scan has something to read.
        assert "<time " in html or url in ("/admin/", "/health/?format=html"), url
        problems = other_formats(html)
        if problems:
            found[url] = problems[:5]
    assert found == {}, "\n".join(f"{url}: {p}" for url, ps in found.items() for p in ps)


def test_day_ticks__first_last_and_a_few_between_that_never_overlap():
    """A 14-day chart labels its first and last day and some between, ISO dates, no overlap."""
    from datetime import date

    from observability.admin import display

    days = [date(2026, 11, 17) + timedelta(days=n) for n in range(14)]
    ticks = display.day_ticks(days, left=4, step=28, bar_width=22)
    assert (ticks[0].label, ticks[0].anchor) == ("2026-11-17", "start")
    assert (ticks[-1].label, ticks[-1].anchor) == ("2026-11-30", "end")
    assert 3 <= len(ticks) <= 6
    boxes = [
        {"start": (t.x, t.x + 54), "middle": (t.x - 27, t.x + 27), "end": (t.x - 54, t.x)}[
            t.anchor
        ]
        for t in ticks
    ]
    assert all(left[1] < right[0] for left, right in zip(boxes, boxes[1:], strict=False))
    narrow = display.day_ticks(days[:3], left=4, step=14, bar_width=11)
    assert [t.label for t in narrow] == ["2026-11-19"]  # no room for two: the newest day


def test_third_party_detail_pages__django_writes_the_absolute_moment(admin_client, demo_pages):
    """A django-q2 task's page (fields Django formats itself) reads '2026-11-30 19:40 UTC'."""
    task = Task.objects.get(id=f"{1:032x}")
    html = admin_client.get(reverse("admin:django_q_success_change", args=[task.pk])).content
    html = html.decode()
    assert f"{timezone.localtime(task.started):%Y-%m-%d %H:%M} UTC" in html
    kinds = {problem.split(":", 1)[0] for problem in other_formats(html)}
    assert kinds <= {"ISO or minutes without zone and age"}, kinds  # no 'Nov. 30', 'p.m.'


def test_moment_columns__a_third_party_list_still_sorts_by_its_moment(admin_client):
    """django-q2's schedules: next run in the one format, and sorting by it still works."""
    now = timezone.now()
    for name, hours in (("later", 5), ("sooner", 1)):
        Schedule.objects.create(
            name=name, func="math.floor", next_run=now + timedelta(hours=hours)
        )
    url = reverse("admin:django_q_schedule_changelist")
    response = admin_client.get(url)
    cl = response.context["cl"]
    column = [name for name in cl.list_display if getattr(name, "__name__", "") == "next_run"]
    index = cl.list_display.index(column[0])
    html = response.content.decode()
    assert "· in 4 hours" in html and "· in 59 minutes" in html

    def order(query: str) -> list[str]:
        return [s.name for s in admin_client.get(url + query).context["cl"].result_list]

    assert order(f"?o={index}") == ["sooner", "later"]
    assert order(f"?o=-{index}") == ["later", "sooner"]
