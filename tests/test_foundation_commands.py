"""The foundation's commands from the outside: demo set-up and serving, bad input, deploy check."""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(ROOT / "manage.py")]
#: A localhost port nothing listens on (TCP port 9 "discard" is never served here).
CLOSED_URL = "postgres://observability:secret@127.0.0.1:9/{name}?sslmode=disable"


def _env(**overrides: str) -> dict[str, str]:
    """The current environment without database URLs, plus ``overrides``."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "BOT_DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    }
    return {**environment, **overrides}


def _production_env(**overrides: str) -> dict[str, str]:
    """Production-like variables: both URLs set (a closed port), a long random secret key."""
    production = {
        "DATABASE_URL": CLOSED_URL.format(name="observability"),
        "BOT_DATABASE_URL": CLOSED_URL.format(name="bot"),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "ops.example.com",
        "DB_POOL_TIMEOUT": "1",
    }
    return _env(**{**production, **overrides})


def _run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MANAGE, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _stop_embedded_server(data_dir: Path) -> None:
    """Stop the embedded server a subprocess started in ``data_dir`` (it outlives commands)."""
    from pgserver._commands import pg_ctl

    # pgserver runs PostgreSQL as the system user "pgserver" when we are root.
    user = "pgserver" if os.geteuid() == 0 else None
    if (data_dir / "postmaster.pid").exists():
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)


# --- Unreachable database and production-like settings ---------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["check_bot_schema"],
        ["check_bot_schema", "--json"],
        ["create_bot_schema"],
        ["seed_demo_data", "--allow-external-database"],
    ],
)
def test_commands__unreachable_database_is_a_clear_message(command):
    """A closed port gives 'unavailable', exit code 3 and no traceback."""
    result = _run(*command, env=_production_env(DEMO_APP="1"))
    assert result.returncode == 3, result.stderr
    assert "The 'bot' database is unavailable" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_seed_demo_data__refuses_a_configured_database():
    """Without --allow-external-database demo data never goes into a configured database."""
    result = _run("seed_demo_data", env=_production_env(DEMO_APP="1"))
    assert result.returncode == 2
    assert "Refusing to write demo data into a configured database" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo__refuses_a_configured_database():
    """The demo runs only on the embedded database."""
    result = _run("demo", "--no-serve", env=_production_env(DEMO_APP="1"))
    assert result.returncode == 2
    assert "The demo runs only on the embedded PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_deploy__no_warning_with_production_settings():
    """`check --deploy` reports nothing with production-like environment variables."""
    result = _run(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env=_production_env(
            DATABASE_URL="postgres://u:p@localhost:5432/obs",
            BOT_DATABASE_URL="postgres://u:p@localhost:5432/bot",
        ),
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


# --- demo: bad input (in process, before any database work) -----------------------------------


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_demo__port_out_of_range_is_refused(port):
    """A port outside 1-65535 is a usage error."""
    with pytest.raises(CommandError, match="--port must be between 1 and 65535") as failure:
        call_command("demo", "--port", port)
    assert failure.value.returncode == 2


def test_demo__port_in_use_is_refused():
    """A busy port is named before anything starts."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CommandError, match=f"Port {port} on 127.0.0.1 is in use"):
            call_command("demo", "--port", str(port), "--no-worker")


def test_demo__port_that_is_not_a_number_is_refused():
    """A non-numeric port is refused by the argument parser."""
    with pytest.raises(CommandError, match="invalid int value"):
        call_command("demo", "--port", "http")


# --- demo: a fresh data folder, end to end ------------------------------------------------------


@pytest.fixture(scope="module")
def demo_data_dir():
    """
    A fresh embedded data folder for the demo; its server is stopped and the folder removed.

    Not under pytest's tmp_path: every new pytest session (ours or a parallel one) resets
    ``pytest-of-<user>`` to mode 0700, which locks out the ``pgserver`` system user that runs
    PostgreSQL when tests run as root.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="observability-demo-test-")) / "pgdata"
    yield data_dir
    _stop_embedded_server(data_dir)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


_PASSWORD = re.compile(r"password: (\S+)")


@pytest.mark.slow
def test_demo__sets_up_a_fresh_data_folder_then_is_idempotent(demo_data_dir):
    """First run creates tables, data and an admin (password printed); a second run keeps all."""
    env = _env(OBSERVABILITY_DATA_DIR=str(demo_data_dir))
    first = _run("demo", "--no-serve", "--no-worker", env=env)
    assert first.returncode == 0, first.stderr
    assert "Creating the bot tables" in first.stdout
    assert "40 WhatsApp sessions, 40,000 keys" in first.stdout
    assert _PASSWORD.search(first.stdout)
    assert "Session history written for the 35 days before it" in first.stdout
    story = _run(
        "shell",
        "-c",
        "from observability import snapshot; from observability.models import SessionState as S; "
        "print(S.objects.filter(first_seen__gt=snapshot.new_after()).count(), "
        "S.objects.exclude(status='OK').filter(status_since__lt=snapshot.baseline()).count())",
        env=env,
    )
    new, failing_before = map(int, story.stdout.split()[-2:])
    assert new == 0 and failing_before > 10  # no session "new", faults dated by the rows

    second = _run("demo", "--no-serve", "--no-worker", env=env)
    assert second.returncode == 0, second.stderr
    assert "Demo data present: kept as it is" in second.stdout
    assert "An admin login exists already" in second.stdout
    assert "Session history written" not in second.stdout
    assert not _PASSWORD.search(second.stdout)

    check = _run("check_bot_schema", env=env)
    assert check.returncode == 0, check.stderr
    password = _PASSWORD.search(first.stdout).group(1)
    shell = _run(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; u = User.objects.get(username='admin'); "
        f"print(u.is_superuser, u.check_password({password!r}), {password!r} in u.password)",
        env=env,
    )
    assert shell.stdout.splitlines()[-1].split() == ["True", "True", "False"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (localhost)
        return response.status


@pytest.mark.slow
def test_demo__serves_the_admin_and_ctrl_c_stops_server_and_worker(demo_data_dir):
    """The admin login answers on 127.0.0.1; SIGINT stops the server and its worker."""
    port = _free_port()
    demo = subprocess.Popen(
        [*MANAGE, "demo", "--port", str(port)],
        env=_env(OBSERVABILITY_DATA_DIR=str(demo_data_dir)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status, deadline = None, time.monotonic() + 60
        while status != 200 and time.monotonic() < deadline:
            try:
                status = _get(f"http://127.0.0.1:{port}/admin/login/")
            except OSError:
                time.sleep(0.2)
        assert status == 200
        workers = [
            child
            for child in psutil.Process(demo.pid).children()
            if "qcluster" in " ".join(child.cmdline())
        ]
        assert len(workers) == 1
        assert workers[0].environ().get("DB_POOL") == "0"
        assert _get(f"http://127.0.0.1:{port}/static/admin/css/base.css") == 200

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
        assert not workers[0].is_running()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


@pytest.mark.slow
def test_embedded_db__status_and_stop_the_server_the_demo_left_running(demo_data_dir):
    """After the demo (server left running), `embedded_db stop` stops it, data kept."""
    env = _env(OBSERVABILITY_DATA_DIR=str(demo_data_dir))
    assert _run("demo", "--no-serve", "--no-worker", env=env).returncode == 0
    running = _run("embedded_db", "status", env=env)
    assert running.returncode == 0 and "Running: pid" in running.stdout
    pid = int(re.search(r"pid (\d+)", running.stdout).group(1))

    stopped = _run("embedded_db", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped the embedded PostgreSQL (pid {pid})" in stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "Not running" in _run("embedded_db", "status", env=env).stdout
    again = _run("embedded_db", "stop", env=env)
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    # The next command starts it again, with the data kept.
    assert "Demo data present" in _run("demo", "--no-serve", "--no-worker", env=env).stdout


def test_embedded_db__refused_with_configured_databases():
    """With database URLs configured there is no embedded server to stop: exit 1, a message."""
    result = _run("embedded_db", "stop", env=_production_env(DEMO_APP="1"))
    assert result.returncode == 1
    assert "No embedded PostgreSQL" in result.stderr and "Traceback" not in result.stderr


# --- In process: create_bot_schema and the demo's set-up on the test databases ------------------


@pytest.mark.django_db(databases=["default", "bot"])
def test_create_bot_schema__refuses_existing_tables():
    """Existing bot tables are refused with a hint at --replace (exit code 2)."""
    with pytest.raises(CommandError, match="pass --replace") as failure:
        call_command("create_bot_schema")
    assert failure.value.returncode == 2


@pytest.mark.django_db(databases=["default", "bot"])
def test_create_bot_schema__replace_recreates_empty_tables():
    """--replace drops the tables (and their rows) and creates them again."""
    from django.db import connections

    from tests import factories

    factories.make_auth("962302")
    out = io.StringIO()
    call_command("create_bot_schema", "--replace", stdout=out)
    assert "Created the bot tables" in out.getvalue()
    with connections["bot"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM whatsapp_auth")
        assert cursor.fetchone() == (0,)


def test_create_bot_schema__unknown_alias_is_a_usage_error():
    """An unknown --database alias is named, exit code 2, no traceback."""
    with pytest.raises(CommandError, match="Unknown database alias 'nope'") as failure:
        call_command("create_bot_schema", "--database", "nope")
    assert failure.value.returncode == 2


@pytest.mark.django_db(databases=["default", "bot"])
def test_demo__set_up_in_process_creates_data_and_one_admin():
    """--no-serve writes the demo data and an admin once; a second run changes nothing."""
    from django.contrib.auth.models import User

    from observability.models import WhatsAppKey

    out = io.StringIO()
    call_command("demo", "--no-serve", stdout=out)
    assert "40 WhatsApp sessions, 40,000 keys" in out.getvalue()
    assert "Demo history written: the first snapshot catches reconnect_loop" in out.getvalue()
    password = _PASSWORD.search(out.getvalue()).group(1)
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    assert password not in admin.password

    again = io.StringIO()
    call_command("demo", "--no-serve", stdout=again)
    assert "Demo data present" in again.getvalue()
    assert not _PASSWORD.search(again.getvalue())
    assert User.objects.count() == 1
    assert WhatsAppKey.objects.count() == 40_000
