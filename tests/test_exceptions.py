"""The error vocabulary: one status, JSON shape and exit code per error; DB errors translated."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import psycopg
import pytest
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, connections

from observability import error_pages, exceptions
from observability.exceptions import (
    BadInput,
    BotDatabaseUnavailable,
    CleanupAlreadyRunning,
    MalformedSessionId,
    ObservabilityError,
    QueryTimedOut,
    SchemaDrift,
    SessionNotFound,
    command_error,
    command_errors,
    error_classes,
    translate_database_errors,
)

#: The contract other parts rely on (monitors, cron wrappers, scripts): change it deliberately.
EXPECTED = {
    ObservabilityError: ("error", 500, 1),
    BadInput: ("bad_input", 400, 2),
    MalformedSessionId: ("malformed_session_id", 400, 2),
    SessionNotFound: ("session_not_found", 404, 2),
    BotDatabaseUnavailable: ("bot_database_unavailable", 503, 3),
    exceptions.DatabaseBusy: ("database_busy", 503, 3),
    exceptions.ProjectDatabaseUnavailable: ("project_database_unavailable", 503, 3),
    QueryTimedOut: ("query_timed_out", 504, 4),
    CleanupAlreadyRunning: ("cleanup_already_running", 409, 5),
    SchemaDrift: ("schema_drift", 500, 6),
    exceptions.ProjectSchemaMissing: ("project_not_migrated", 500, 6),
    exceptions.SnapshotMissing: ("snapshot_missing", 503, 7),
    exceptions.MissingPrivilege: ("missing_privilege", 503, 8),
}


def test_error_classes__every_class_has_a_pinned_mapping():
    """Every error class of the vocabulary is listed here, so none escapes the contract."""
    assert set(error_classes()) == set(EXPECTED)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda cls: cls.__name__)
def test_error__status_json_shape_and_exit_code(cls):
    """Each error gives its HTTP status, the one JSON shape, its exit code and a hint."""
    code, status, exit_code = EXPECTED[cls]
    error = cls()
    assert (error.code, error.http_status, error.exit_code) == (code, status, exit_code)
    assert error.as_json() == {"error": {"code": code, "message": cls.default_message}}
    assert error.title and error.what_to_do.endswith(".")

    response = error_pages.json_response(cls("custom message"))
    assert response.status_code == status
    assert json.loads(response.content) == {"error": {"code": code, "message": "custom message"}}


def test_json_response__tells_when_to_retry_for_unavailable_database():
    """A 503 says when to retry, so monitors and clients back off."""
    response = error_pages.json_response(BotDatabaseUnavailable())
    assert response.status_code == 503
    assert response["Retry-After"] == "30"


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda cls: cls.__name__)
def test_command_error__carries_message_hint_and_exit_code(cls):
    """A command failing with an error exits with its code and says what to do."""
    error = command_error(cls())
    assert isinstance(error, CommandError)
    assert error.returncode == EXPECTED[cls][2]
    assert str(error) == f"{cls.default_message} {cls.what_to_do}"


class _FailingCommand(BaseCommand):
    help = "Fails the way a real command does when the bot database cancels its query."

    def handle(self, *args, **options):
        with command_errors():
            raise QueryTimedOut()


def test_command_errors__command_exits_with_code_and_no_traceback(capsys):
    """Run from the command line, the command prints the message and exits 4, no traceback."""
    with pytest.raises(SystemExit) as exited:
        _FailingCommand().run_from_argv(["manage.py", "failing"])
    assert exited.value.code == 4
    err = capsys.readouterr().err
    assert "did not answer in time" in err
    assert "Retry in a minute" in err
    assert "Traceback" not in err


@pytest.mark.django_db(databases=["default", "bot"])
def test_translate_database_errors__statement_timeout_becomes_query_timed_out():
    """A real statement timeout on the bot alias becomes QueryTimedOut, cause kept."""
    with pytest.raises(QueryTimedOut) as raised:  # noqa: SIM117 (order of the blocks matters)
        with translate_database_errors("bot"), connections["bot"].cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 1")
            cursor.execute("SELECT pg_sleep(0.5)")
    assert isinstance(raised.value.__cause__.__cause__, psycopg.errors.QueryCanceled)
    assert raised.value.http_status == 504


@pytest.mark.django_db(databases=["default", "bot"])
def test_translate_database_errors__missing_table_becomes_schema_drift():
    """A query naming a table the bot database lacks becomes SchemaDrift, not a 500 page."""
    with pytest.raises(SchemaDrift, match="lacks a table or column"):  # noqa: SIM117
        with translate_database_errors("bot"), connections["bot"].cursor() as cursor:
            cursor.execute("SELECT * FROM whatsapp_auth_missing")


@pytest.mark.django_db(databases=["default", "bot"])
def test_translate_database_errors__missing_own_table_says_migrate():
    """A table missing from this project's own database asks for migrate, not a comparison."""
    with pytest.raises(SchemaDrift) as raised:  # noqa: SIM117
        with translate_database_errors("default"), connections["default"].cursor() as cursor:
            cursor.execute("SELECT * FROM observability_not_migrated")
    assert "python manage.py migrate" in raised.value.what_to_do
    assert "Compare the bot's tables" not in str(raised.value) + raised.value.what_to_do
    assert raised.value.exit_code == SchemaDrift.exit_code


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_translate_database_errors__refused_connection_becomes_unavailable():
    """A server refusing connections becomes BotDatabaseUnavailable naming the alias."""
    with pytest.raises(BotDatabaseUnavailable, match="'bot' database is unavailable"):  # noqa: SIM117
        with translate_database_errors("bot"):
            psycopg.connect(host="127.0.0.1", port=_closed_port(), connect_timeout=2)


@pytest.mark.django_db(databases=["default", "bot"])
def test_translate_database_errors__lost_connection_becomes_unavailable():
    """A connection the server terminated mid-use becomes BotDatabaseUnavailable."""
    params = connections["bot"].get_connection_params()
    params.pop("pool", None)
    conn = psycopg.connect(**params, autocommit=True)
    try:
        pid = conn.info.backend_pid
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        with pytest.raises(BotDatabaseUnavailable):  # noqa: SIM117
            with translate_database_errors("bot"):
                conn.execute("SELECT 1")
    finally:
        conn.close()


def test_translate_database_errors__other_errors_pass_unchanged():
    """Bugs and integrity errors are not disguised as an outage."""
    with pytest.raises(ValueError), translate_database_errors():
        raise ValueError("a bug")
    with pytest.raises(IntegrityError), translate_database_errors():
        raise IntegrityError("duplicate key")
    with pytest.raises(MalformedSessionId), translate_database_errors():
        raise MalformedSessionId()


def test_command_errors__translates_database_errors_too():
    """Inside a command, a refused connection exits 3 with the unavailable message."""
    with pytest.raises(CommandError) as raised, command_errors("bot"):
        psycopg.connect(host="127.0.0.1", port=_closed_port(), connect_timeout=2)
    assert raised.value.returncode == 3
    assert "'bot' database is unavailable" in str(raised.value)


def _readme_exit_codes() -> dict[str, tuple[int, int]]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Exit codes and HTTP statuses", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| (\d+) \|", section, re.MULTILINE)
    return {code: (int(status), int(exit_code)) for code, status, exit_code in rows}


def test_readme__exit_code_table_matches_the_code():
    """The README's table of codes, statuses and exit codes is the code's, row for row."""
    expected = {cls.code: (cls.http_status, cls.exit_code) for cls in error_classes()}
    assert _readme_exit_codes() == expected


def _imported_modules(module) -> set[str]:
    """Every module a Python module imports, at the top or inside functions."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_exceptions__the_vocabulary_renders_nothing_for_the_web():
    """The base layer holds plain data: no template, HTTP response or admin; the edge renders."""
    imported = _imported_modules(exceptions)
    web = {
        m for m in imported if m.startswith(("django.http", "django.template", "django.contrib"))
    }
    assert web == set()
    assert not hasattr(exceptions, "html_response")
    assert not hasattr(exceptions, "json_response")
