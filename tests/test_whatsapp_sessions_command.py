"""The operator's command: every session with status and reasons, worst first, as stored."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from observability import snapshot
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


@pytest.fixture
def three_sessions():
    """One OK (QR-paired v7), one WARN (quiet 30 h), one FAIL (pairing never finished)."""
    now = timezone.now()
    factories.make_company(962302, whatsapp_phone="79001234567")
    factories.make_session("company_962302", phone="79001234567", now=now)
    factories.make_session("962303", now=now - timedelta(hours=30), connected_hours_ago=0)
    factories.make_auth("962304", paired=False)
    return now


def _run(*args) -> str:
    out = io.StringIO()
    call_command("whatsapp_sessions", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _snapshot(now=None) -> None:
    """What the worker does every minute: the command lists what this stored."""
    snapshot.refresh(full=True, now=now)


def test_whatsapp_sessions__table_worst_first_with_reasons(three_sessions):
    """The table lists FAIL, then WARN, then OK, each reason below its session, phones masked."""
    _snapshot(three_sessions - timedelta(minutes=2))
    text = _run()
    lines = text.splitlines()
    assert lines.pop(0).endswith("· 2 minutes ago (full).")  # the snapshot's age first
    assert lines[0].split()[:4] == ["status", "session", "salon", "phone"]
    assert lines[0].endswith("status since")
    assert lines[1].endswith("≥ 2 min ago")  # found so by the first snapshot, as the pages say
    order = [line.split()[1] for line in lines[1:] if line[:1] in "FWO"]
    assert order[:3] == ["962304", "962303", "company_962302"]
    assert "    - Not paired: the creds have no me.id and account" in text
    assert "No key written for 30 hours" in text and "quiet salon" in text
    assert "7900***4567" in text and "79001234567" not in text
    assert "· Key types the bot's list does not name: identity-key 40" in text
    assert lines[-1] == "3 session(s): 1 FAIL, 1 WARN, 1 OK."


def test_whatsapp_sessions__json_objects_with_sentences(three_sessions):
    """--json prints a list of objects: session_id, status, reasons (sentences), facts."""
    _snapshot()
    listed = json.loads(_run("--json"))
    assert [item["session_id"] for item in listed] == ["962304", "962303", "company_962302"]
    assert [item["status"] for item in listed] == ["FAIL", "WARN", "OK"]
    assert listed[0]["rules"] == ["not_paired"]
    assert all(isinstance(reason, str) and reason.endswith(".") for reason in listed[0]["reasons"])
    healthy = listed[2]
    assert healthy["reasons"] == [] and healthy["facts"]["pairing"] == "QR"
    assert healthy["facts"]["pre_keys"] == 782 and healthy["facts"]["next_pre_key_id"] == 813
    assert "79001234567" not in json.dumps(listed)


def test_whatsapp_sessions__status_filter(three_sessions):
    """--status keeps only that status, in either case."""
    _snapshot()
    assert [item["session_id"] for item in json.loads(_run("--status", "warn", "--json"))] == [
        "962303"
    ]
    text = _run("--status", "OK")
    assert "company_962302" in text and "962304" not in text
    assert text.splitlines()[-1] == "1 session(s): 0 FAIL, 0 WARN, 1 OK."


def test_whatsapp_sessions__empty_store_says_so():
    """With no session at all the table says so and --json is an empty list."""
    _snapshot()
    assert _run().splitlines()[1:] == ["No sessions."]
    assert json.loads(_run("--json")) == []


def test_whatsapp_sessions__bad_status_is_refused():
    """An unknown status is a usage error naming the choices."""
    with pytest.raises(CommandError, match="invalid choice: 'BROKEN'"):
        call_command("whatsapp_sessions", "--status", "broken")


def test_whatsapp_sessions__no_snapshot_yet_exits_7_naming_take_snapshot(three_sessions):
    """Before the first snapshot: exit 7, what to do (take_snapshot); --json prints the error."""
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("whatsapp_sessions", "--json", stdout=out, stderr=io.StringIO())
    assert raised.value.returncode == 7
    assert "take_snapshot" in str(raised.value)
    assert json.loads(out.getvalue())["error"]["code"] == "snapshot_missing"


def test_whatsapp_sessions__bot_database_down_lists_the_snapshot(three_sessions, request):
    """The bot database down: the command still lists the stored verdicts, exit 0."""
    _snapshot()
    request.getfixturevalue("bot_database_down")
    listed = json.loads(_run("--json"))
    assert [item["status"] for item in listed] == ["FAIL", "WARN", "OK"]


def test_whatsapp_sessions__says_what_the_pages_say_not_a_live_judgement(three_sessions):
    """The bot changed after the snapshot: the command shows the stored verdict, as the pages."""
    from observability import sessions
    from observability.models import SessionState, WhatsAppAuth

    taken = three_sessions - timedelta(minutes=1)
    _snapshot(taken)
    WhatsAppAuth.objects.filter(company_id="962304").delete()
    factories.make_session("962304", now=three_sessions)  # paired now: live, it is OK
    assert sessions.get_session("962304").status == "OK"
    item = next(i for i in json.loads(_run("--json")) if i["session_id"] == "962304")
    assert item["status"] == SessionState.objects.get(session_id="962304").status == "FAIL"
    assert item["snapshot_taken_at"] == taken.isoformat()


def test_whatsapp_sessions__a_stale_snapshot_is_listed_with_a_warning(three_sessions):
    """A snapshot 11 minutes old: listed all the same, exit 0, its age warned on stderr."""
    _snapshot(three_sessions - timedelta(minutes=11))
    out, err = io.StringIO(), io.StringIO()
    call_command("whatsapp_sessions", "--json", stdout=out, stderr=err)
    assert len(json.loads(out.getvalue())) == 3
    assert err.getvalue().startswith("Warning: Session health as of ")
    assert "· 11 minutes ago (full), older than 3 min" in err.getvalue()
    quiet = io.StringIO()
    _snapshot()
    call_command("whatsapp_sessions", "--json", stdout=io.StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""  # a fresh snapshot: nothing on stderr for cron to mail


def test_whatsapp_sessions__json_since_of_a_status_found_by_the_first_snapshot_is_or_earlier(
    three_sessions,
):
    """A status the first snapshot found is flagged "or earlier"; one seen changing is exact."""
    from observability.models import WhatsAppAuth

    first = three_sessions - timedelta(minutes=5)
    snapshot.refresh(full=True, now=first)
    listed = {item["session_id"]: item for item in json.loads(_run("--json"))}
    assert (listed["962304"]["since"], listed["962304"]["since_or_earlier"]) == (
        first.isoformat(),
        True,
    )
    assert listed["962303"]["since_or_earlier"] is True

    WhatsAppAuth.objects.filter(company_id="962304").delete()
    factories.make_session("962304", now=three_sessions)  # paired now: it becomes OK
    later = three_sessions - timedelta(minutes=1)
    snapshot.refresh(full=True, now=later)
    listed = {item["session_id"]: item for item in json.loads(_run("--json"))}
    assert listed["962304"]["status"] == "OK"
    assert (listed["962304"]["since"], listed["962304"]["since_or_earlier"]) == (
        later.isoformat(),
        False,
    )
    assert listed["962303"]["since_or_earlier"] is True  # still as the first snapshot found it


def test_whatsapp_sessions__terminal_controls_in_bot_data_are_shown_not_run():
    r"""A session id holding ESC, CR or a C1 CSI prints as \u escapes: the terminal runs none."""
    hostile = "9623\x1b]0;pwned\x07\r\x9b2J05"
    factories.make_auth(hostile, paired=False)
    _snapshot()
    text = _run()
    assert "9623\\u001b]0;pwned\\u0007\\u000d\\u009b2J05" in text
    assert not any(char in text for char in "\x1b\x07\r\x9b")
    header, row = text.splitlines()[1:3]
    assert row.index("9623") == header.index("session")  # the columns still line up
    listed = json.loads(_run("--json"))  # still valid JSON, the id intact once decoded
    assert listed[0]["session_id"] == hostile
