"""The cleanup commands: dry run by default, --apply, --json, exit codes, nothing on bad input."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from observability.cleanup import LOCK_KEY
from observability.models import CleanupRun, WhatsAppKey
from tests import factories
from tests.cleanup_support import raw_bot_connection, run_manage

bot_tables = pytest.mark.django_db(databases=["default", "bot"])


def _call(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _seed():
    old = timezone.now() - timedelta(days=100)
    factories.make_auth("962302")
    factories.make_keys("962302", "session", 6, written_at=old)
    factories.make_keys("962302", "pre-key", 4, written_at=old)  # live, whatever its age
    factories.make_keys("company_962302", "session", 2, written_at=old)
    factories.make_keys("962302", "session", 3, seed=2)


@bot_tables
def test_cleanup_expired_keys_command__dry_run_by_default_then_apply():
    """Without --apply nothing is deleted and the output says how to delete; --apply deletes."""
    _seed()
    out = _call("cleanup_expired_keys")
    assert "Dry run: 8 rows would be deleted and 7 kept; nothing was." in out
    assert "pre-key                 never deleted for its age" in out  # the retention table
    assert "session                 90 days" in out
    lines = out.splitlines()
    assert ["session", "key", "type", "to", "delete", "kept"] in [line.split() for line in lines]
    assert any(line.split() == ["962302", "pre-key", "0", "4"] for line in lines)
    assert any(line.split() == ["962302", "session", "6", "3"] for line in lines)
    assert any(line.startswith("  pre-key: never deleted for its age") for line in lines)
    assert WhatsAppKey.objects.count() == 15

    out = _call("cleanup_expired_keys", "--apply", "--batch-size", "5")
    assert "Deleted 8 of 8 rows in 2 batches" in out
    assert "; kept 7." in out
    # An applied run over every session shows each session.
    lines = [line.split() for line in out.splitlines()]
    assert ["company_962302", "session", "2", "0"] in lines
    assert WhatsAppKey.objects.count() == 7
    run = CleanupRun.objects.filter(dry_run=False).get()
    assert run.started_by.startswith("command")


@bot_tables
def test_cleanup_expired_keys_command__json_salon_and_key_type():
    """--json prints the report; --salon (either spelling) and --key-type narrow it."""
    _seed()
    report = json.loads(
        _call(
            "cleanup_expired_keys",
            "--salon",
            "company_962302",
            "--key-type",
            "session",
            "--apply",
            "--json",
        )
    )
    assert report["rows_deleted"] == {"962302": {"session": 6}, "company_962302": {"session": 2}}
    assert report["rows_kept"] == {"962302": {"session": 3}}
    assert "last 90 days" in report["kept_reasons"]["session"]
    assert report["dry_run"] is False
    assert WhatsAppKey.objects.count() == 7


@bot_tables
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--salon", "96230x"], "is not a salon id"),
        (["--salon", "5550001"], "No WhatsApp session exists for salon 5550001"),
        (["--batch-size", "-10"], "batch size must be between 1"),
        (["--key-type", "nonsense"], "Unknown key type"),
    ],
)
def test_cleanup_expired_keys_command__bad_input_exits_2_and_deletes_nothing(args, message):
    """Bad input: a clear message, exit code 2, no key deleted."""
    _seed()
    with pytest.raises(CommandError, match=message) as raised:
        _call("cleanup_expired_keys", "--apply", *args)
    assert raised.value.returncode == 2
    assert WhatsAppKey.objects.count() == 15


def test_cleanup_command__a_malformed_salon_is_explained_once():
    """The message says what is wrong, then once how to write a salon id."""
    with pytest.raises(CommandError) as raised:
        _call("cleanup_expired_keys", "--salon", "abc")
    text = str(raised.value)
    assert text.startswith("'abc' is not a salon id.")
    assert text.lower().count("use the salon number") == 1


@bot_tables
def test_cleanup_expired_keys_command__json_error_shape():
    """With --json a failure also prints the error as JSON."""
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("cleanup_expired_keys", "--salon", "x", "--json", stdout=out)
    assert json.loads(out.getvalue())["error"]["code"] == "malformed_session_id"


@bot_tables
def test_cleanup_orphan_keys_command__grace_days_is_the_minimum_age():
    """Orphan keys written 3 days ago go only with --grace-days below 3."""
    factories.make_keys("company_444", "session", 4, written_at=timezone.now() - timedelta(days=3))
    assert "Dry run: 0 rows" in _call("cleanup_orphan_keys")
    assert "Deleted 0 of 0" in _call("cleanup_orphan_keys", "--apply")
    assert "Deleted 4 of 4" in _call("cleanup_orphan_keys", "--apply", "--grace-days", "2")
    assert not WhatsAppKey.objects.exists()


@bot_tables
def test_cleanup_duplicates_command__report_apply_restore(tmp_path, settings):
    """The report names both sides; --apply removes the stale one; --restore puts it back."""
    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    old = timezone.now() - timedelta(days=4)
    factories.make_auth("962302", written_at=old)
    factories.make_keys("962302", "session", 3, written_at=old)
    factories.make_auth("company_962302", seed=2)
    factories.make_keys("company_962302", "session", 5, seed=2)

    out = _call("cleanup_duplicates")
    assert "Salon 962302" in out
    assert "would remove '962302', keep 'company_962302'" in out
    assert "Dry run: 4 rows would be deleted" in out

    out = _call("cleanup_duplicates", "--apply")
    assert "removed '962302', kept 'company_962302'" in out
    (backup,) = tmp_path.iterdir()
    assert f"backup: {backup}" in out
    assert WhatsAppKey.objects.filter(company_id="962302").count() == 0

    assert "Add --apply to insert them" in _call("cleanup_duplicates", "--restore", str(backup))
    assert "Restored 4 rows of '962302'" in _call(
        "cleanup_duplicates", "--restore", str(backup), "--apply"
    )
    assert WhatsAppKey.objects.filter(company_id="962302").count() == 3

    with pytest.raises(CommandError, match="No backup file") as raised:
        _call("cleanup_duplicates", "--restore", str(tmp_path / "missing.jsonl.gz"))
    assert raised.value.returncode == 2


@pytest.mark.slow
@pytest.mark.django_db(databases=["default", "bot"], transaction=True)
def test_cleanup_command__real_process_says_another_run_holds_the_lock():
    """A real `manage.py cleanup_expired_keys --apply` while the lock is held: exit 5, says so."""
    with raw_bot_connection() as holder:
        assert holder.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
        result = run_manage("cleanup_expired_keys", "--apply")
    assert result.returncode == 5, result.stderr
    assert "Another cleanup run is in progress" in result.stderr
    assert "Traceback" not in result.stderr
    assert CleanupRun.objects.get().outcome == "refused"

    bad = run_manage("cleanup_expired_keys", "--batch-size", "-1", "--apply")
    assert bad.returncode == 2
    assert "batch size" in bad.stderr and "Traceback" not in bad.stderr


def _run_on_a_terminal(*args: str) -> bytes:
    """Run manage.py with its stderr on a pseudo-terminal; return what the terminal got."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    from tests.cleanup_support import ROOT, manage_command

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(  # noqa: S603
        manage_command(*args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={**os.environ, "LOG_LEVEL": "WARNING", "PYTHONWARNINGS": "ignore"},
    )
    os.close(slave)
    received = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        received += chunk
    process.wait(timeout=60)
    os.close(master)
    return received


@pytest.mark.slow
@pytest.mark.django_db(databases=["default", "bot"], transaction=True)
def test_cleanup_command__progress_bar_on_a_terminal_only():
    """On a terminal the command shows a tqdm bar counting rows; piped, it stays quiet."""
    from tests.cleanup_support import raw_bot_connection

    with raw_bot_connection() as conn:
        conn.execute(
            "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, expires_at) "
            "SELECT '962302', 'session', 'k' || g, '{}', now() - interval '100 days' "
            "- g * interval '1 second' FROM generate_series(1, 40) g"
        )
        try:
            shown = _run_on_a_terminal("cleanup_expired_keys", "--apply", "--batch-size", "4")
            assert b"0/40" in shown and b"rows/s" in shown
            conn.execute(
                "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, expires_at) "
                "VALUES ('962302', 'session', 'x', '{}', now() - interval '100 days')"
            )
            piped = run_manage("cleanup_expired_keys", "--apply")
            assert piped.returncode == 0
            assert "rows/s" not in piped.stderr and "Deleted 1 of 1" in piped.stdout
        finally:
            conn.execute("TRUNCATE whatsapp_keys, whatsapp_auth")
