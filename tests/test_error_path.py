"""
Errors without tracebacks, through one path: bad configuration, the project's database down.

Real processes: what an operator sees is stderr, stdout and the exit status of ``manage.py`` or
of the WSGI entry point, not an exception inside a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from observability.cleanup import LOCK_KEY
from observability.exceptions import CleanupAlreadyRunning
from project.startup import EXIT_CONFIGURATION
from tests.cleanup_support import ROOT, raw_bot_connection
from tests.health_support import closed_port

SOME_URL = "postgres://observability@127.0.0.1:5432/observability"


def _run(argv: list[str], **environment: str) -> subprocess.CompletedProcess:
    """Run a Python process from the project's folder with exactly these variables set."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BOT_DATABASE_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")
    }
    env.update(environment, PYTHONWARNINGS="ignore")
    return subprocess.run(  # noqa: S603
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        (
            {"DATABASE_URL": SOME_URL, "BOT_DATABASE_URL": SOME_URL, "SECRET_KEY": ""},
            "SECRET_KEY must be set when database URLs are configured.",
        ),
        (
            {"DATABASE_URL": SOME_URL},
            "Set both DATABASE_URL and BOT_DATABASE_URL, or neither",
        ),
        ({"DB_POOL_MAX_SIZE": "three"}, "DB_POOL_MAX_SIZE must be a whole number, not 'three'."),
    ],
    ids=["empty-secret-key", "one-database-url", "malformed-number"],
)
def test_manage__bad_configuration_is_one_line(environment, says):
    """A configuration mistake: one line on stderr saying what to set, exit 78, no traceback."""
    finished = _run(["manage.py", "check"], **environment)
    assert finished.returncode == EXIT_CONFIGURATION
    (line,) = finished.stderr.strip().splitlines()
    assert line.startswith(f"Configuration error: {says}")


def test_wsgi__bad_configuration_is_one_line():
    """The web server's entry point stops the same way (gunicorn shows that one line)."""
    finished = _run(
        ["-c", "import project.wsgi"],
        DATABASE_URL=SOME_URL,
        BOT_DATABASE_URL=SOME_URL,
        SECRET_KEY="",
    )
    assert finished.returncode == EXIT_CONFIGURATION
    assert finished.stderr.strip() == (
        "Configuration error: SECRET_KEY must be set when database URLs are configured."
    )


def _bot_database_url() -> str:
    settings_dict = connections["bot"].settings_dict
    host = settings_dict["HOST"].replace("/", "%2F")
    return f"postgres://{settings_dict['USER']}@{host}/{settings_dict['NAME']}?sslmode=disable"


@pytest.mark.django_db(databases=["default", "bot"])
@pytest.mark.parametrize("name", ["cleanup_expired_keys", "cleanup_orphan_keys"])
def test_cleanup_commands__project_database_down_is_one_line(name):
    """The project's database down: one line naming it, exit 3; --json prints the error."""
    environment = {
        "DATABASE_URL": f"postgres://observability@127.0.0.1:{closed_port()}/x?sslmode=disable",
        "BOT_DATABASE_URL": _bot_database_url(),
        "SECRET_KEY": "x" * 50,
        "DB_POOL_TIMEOUT": "1",
    }
    finished = _run(["manage.py", name], **environment)
    assert finished.returncode == 3, finished.stderr
    # The pool logs each failed attempt (a log line); the error itself is one line.
    assert "Traceback" not in finished.stderr
    (line,) = [line for line in finished.stderr.splitlines() if line.startswith("CommandError")]
    assert "This project's own database ('default') is unavailable." in line
    assert "DATABASE_URL" in line  # what to do

    as_json = _run(["manage.py", name, "--json"], **environment)
    assert as_json.returncode == 3
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "project_database_unavailable"
    assert "Traceback" not in as_json.stderr


@pytest.mark.django_db(databases=["default", "bot"])
def test_cleanup_command__a_failure_says_what_to_do():
    """The command's error carries the message and what to do, with the error's exit code."""
    with raw_bot_connection() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        with pytest.raises(CommandError) as raised:
            call_command("cleanup_orphan_keys", "--apply", stdout=StringIO(), stderr=StringIO())
    assert raised.value.returncode == CleanupAlreadyRunning.exit_code
    assert CleanupAlreadyRunning.default_message in str(raised.value)
    assert CleanupAlreadyRunning.what_to_do in str(raised.value)
