"""
The project's exception vocabulary: plain data, and the one path from driver errors into it.

Each error class names, in one place, its machine code, its HTTP status, its command exit code,
its title and what an operator should do about it, and its JSON shape (:meth:`as_json`).
Views, the admin, health checks, tasks and commands raise these and never invent their own
mapping. The edges show them: the web through ``observability.error_pages`` (the JSON body,
the staff page), management commands through :func:`command_errors` (the message, what to do,
the exit code, and the JSON error with ``--json``).

Database driver errors are translated into this vocabulary at the data layer's edge by
:func:`translate_database_errors`; :func:`from_database_error` is the same decision for code
that already holds the error (the middleware, for lazy querysets evaluated while rendering).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from django.db import utils as db_utils

if TYPE_CHECKING:
    from django.core.management.base import CommandError

#: Exit code for bad input (argparse uses 2 as well).
EXIT_USAGE = 2


class ObservabilityError(Exception):
    """
    Base class: a failure with a message an operator can act on.

    Attributes:
        code: short machine-readable name, stable across releases.
        http_status: the HTTP status a web caller receives.
        exit_code: the exit status of a management command that fails with it.
        title: the heading of the staff page.
        what_to_do: one sentence telling the operator how to get unstuck.
        retry_after: seconds a web caller should wait before retrying (``Retry-After``), or None.

    """

    code = "error"
    http_status = 500
    exit_code = 1
    title = "Something went wrong"
    default_message = "Something went wrong."
    what_to_do = "Retry; if it keeps failing, give the team the time and the page you opened."
    retry_after: int | None = None

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        """The human-readable message (never carries a secret or a phone number)."""
        return str(self)

    def as_json(self) -> dict:
        """The one JSON shape every JSON caller receives."""
        return {"error": {"code": self.code, "message": self.message}}


class BadInput(ObservabilityError):
    """Input that cannot be acted on (a malformed id, a negative size, an unknown option)."""

    code = "bad_input"
    http_status = 400
    exit_code = EXIT_USAGE
    title = "Invalid input"
    default_message = "The input is not valid."
    what_to_do = "Correct the input and try again."


class MalformedSessionId(BadInput):
    """A session or salon id that is neither ``962302`` nor ``company_962302``."""

    code = "malformed_session_id"
    title = "Invalid salon id"
    default_message = "A session id is a salon number such as 962302 or company_962302."
    what_to_do = "Use the salon number, e.g. 962302, or the session id company_962302."


class SessionNotFound(ObservabilityError):
    """No session (auth row or keys) exists for the requested salon."""

    code = "session_not_found"
    http_status = 404
    exit_code = EXIT_USAGE
    title = "Session not found"
    default_message = "No WhatsApp session exists for that salon."
    what_to_do = "Check the salon id; the WhatsApp sessions list shows every session stored."


class BotDatabaseUnavailable(ObservabilityError):
    """The bot's database cannot be reached (down, refusing connections, pool exhausted)."""

    code = "bot_database_unavailable"
    http_status = 503
    exit_code = 3
    title = "Bot database unavailable"
    default_message = (
        "The bot database is unavailable. Check that it is running and reachable, then retry."
    )
    what_to_do = (
        "Check that the bot's PostgreSQL is running and reachable from this server "
        "(BOT_DATABASE_URL), then retry. Pages over this project's own records still work."
    )
    retry_after = 30


class DatabaseBusy(BotDatabaseUnavailable):
    """Every pooled connection is in use and none came free within the pool timeout."""

    code = "database_busy"
    title = "Too many requests at once"
    default_message = "Every database connection of this server is in use; retry in a few seconds."
    what_to_do = (
        "Retry in a few seconds. If it keeps happening, raise DB_POOL_MAX_SIZE within the "
        "connection budget or find what holds connections (/health/pool/)."
    )
    retry_after = 5


class ProjectDatabaseUnavailable(BotDatabaseUnavailable):
    """
    This project's own database (``default``: logins, cleanup records) cannot be reached.

    A subclass of :class:`BotDatabaseUnavailable` because callers treat both alike (a 503,
    exit code 3); only the message and what to do differ: the URL to check is another.
    """

    code = "project_database_unavailable"
    title = "Project database unavailable"
    default_message = "This project's own database is unavailable."
    what_to_do = (
        "Check that this project's PostgreSQL (DATABASE_URL) is running and reachable from "
        "this server, then retry."
    )


class QueryTimedOut(ObservabilityError):
    """A query ran past its statement or lock timeout and was cancelled by the server."""

    code = "query_timed_out"
    http_status = 504
    exit_code = 4
    title = "Query timed out"
    default_message = "The bot database did not answer in time; the query was cancelled."
    what_to_do = (
        "Retry in a minute. If it keeps happening the server is overloaded or a lock is held: "
        "look at the health page and the database's active queries."
    )
    retry_after = 60


class CleanupAlreadyRunning(ObservabilityError):
    """Another cleanup run holds the advisory lock."""

    code = "cleanup_already_running"
    http_status = 409
    exit_code = 5
    title = "Cleanup already running"
    default_message = "Another cleanup run is in progress; wait for it to finish and retry."
    what_to_do = "Wait for the running cleanup to finish (see the cleanup runs), then retry."


class SchemaDrift(ObservabilityError):
    """The live bot database's tables differ from the models."""

    code = "schema_drift"
    http_status = 500
    exit_code = 6
    title = "Bot database schema differs"
    default_message = "The bot database's schema differs from what this project expects."
    what_to_do = (
        "Compare the bot's tables with the models (see README) and update this project "
        "before running anything that writes to the bot database."
    )


class ProjectSchemaMissing(SchemaDrift):
    """
    This project's own database (``default``) lacks a table: its migrations have not run.

    A subclass of :class:`SchemaDrift` (same code and exit status) whose advice fits the
    database this project owns: there is nothing to compare, only ``migrate`` to run.
    """

    code = "project_not_migrated"
    title = "Project database not migrated"
    default_message = "This project's own database lacks its tables."
    what_to_do = "Run python manage.py migrate (it touches only this project's own database)."


class SnapshotMissing(ObservabilityError):
    """No session health snapshot has been taken yet (pages read only the stored snapshot)."""

    code = "snapshot_missing"
    http_status = 503
    exit_code = 7
    title = "No health snapshot yet"
    default_message = "No session health snapshot has been taken yet."
    what_to_do = (
        "Start the django-q2 worker (manage.py qcluster) with the schedules set up "
        "(manage.py setup_schedules), or take one now (python manage.py take_snapshot)."
    )
    retry_after = 60


class MissingPrivilege(ObservabilityError):
    """
    The database role lacks a privilege a statement needs (SQLSTATE 42501).

    A deployment error, not a bug and not an outage: retrying does not help until the
    database's owner grants the privilege, so the message names the ``GRANT`` to run
    (``grant``), built from the denied object and the statement that needed it.
    """

    code = "missing_privilege"
    http_status = 503
    exit_code = 8
    title = "Database privilege missing"
    default_message = "The database role lacks a privilege this needs."
    what_to_do = (
        "Have the database's owner run the GRANT named above, or run this with the role meant "
        'for it (README "The bot database\'s roles" lists what each role needs).'
    )

    def __init__(self, message: str | None = None, *, grant: str | None = None) -> None:
        super().__init__(message)
        self.grant = grant


def error_classes() -> list[type[ObservabilityError]]:
    """Every error class of the vocabulary, base first, in definition order (for docs, tests)."""
    found: list[type[ObservabilityError]] = []
    pending: list[type[ObservabilityError]] = [ObservabilityError]
    while pending:
        cls = pending.pop(0)
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found


# --- Translating database errors --------------------------------------------------------------


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_timeout(error: BaseException) -> bool:
    import psycopg.errors

    return any(
        isinstance(cause, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable)
        for cause in _causes(error)
    )


def _is_missing_table_or_column(error: BaseException) -> bool:
    import psycopg.errors

    return any(
        isinstance(cause, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn)
        for cause in _causes(error)
    )


def _is_unsendable_value(error: BaseException) -> bool:
    """
    True when the driver refused a query parameter before sending it (a NUL in a string).

    psycopg raises ``DataError`` without an SQLSTATE for a value PostgreSQL cannot receive at
    all; that value came from the caller (a query string, an argument), so it is bad input.
    Data errors the server raises (with an SQLSTATE) may come from stored rows: a bug.
    """
    import psycopg

    return any(
        isinstance(cause, psycopg.DataError) and cause.sqlstate is None for cause in _causes(error)
    )


def _pool_exhausted(error: BaseException, alias: str) -> bool:
    """
    True when ``error`` is a pool timeout while every connection of the alias's pool is in use.

    A pool also times out when the server is down (it cannot open a connection); only a full
    pool with nothing idle means "busy, retry shortly" rather than "unavailable".
    """
    import psycopg_pool
    from django.db import connections

    if not any(isinstance(cause, psycopg_pool.PoolTimeout) for cause in _causes(error)):
        return False
    try:
        pool = connections[alias].pool
    except Exception:  # an unknown alias or no pooling: not a pool problem
        return False
    if pool is None:
        return False
    stats = pool.get_stats()
    return stats.get("pool_size", 0) >= stats.get("pool_max", 1) and not stats.get(
        "pool_available", 0
    )


def _default_alias() -> str:
    from observability import config

    return config.bot_database_alias()


def database_alias_of(error: BaseException) -> str | None:
    """
    The database alias whose connection raised ``error``, read from the traceback's frames.

    Django's error wrapper does not record the alias, but the frames that raised it belong to a
    connection (``DatabaseWrapper``) or a cursor wrapper that knows its own. None for errors
    raised by a connection of psycopg's own (the cleanup lock's).
    """
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper

    for cause in _causes(error):
        traceback = cause.__traceback__
        alias = None
        while traceback is not None:
            owner = traceback.tb_frame.f_locals.get("self")
            # type(), not isinstance(): isinstance() asks a lazy object (request.user's
            # SimpleLazyObject) for its __class__, which evaluates it, i.e. queries the
            # database that just failed, and raises again inside this error handler.
            owner_type = type(owner)
            if issubclass(owner_type, BaseDatabaseWrapper):
                alias = owner.alias
            elif issubclass(owner_type, CursorWrapper):
                alias = owner.db.alias
            traceback = traceback.tb_next
        if alias is not None:
            return alias
    return None


def _failed_statement(error: BaseException) -> str:
    """The SQL a Django cursor was running when ``error`` was raised ("" when unknown)."""
    from django.db.backends.utils import CursorWrapper

    for cause in _causes(error):
        traceback = cause.__traceback__
        while traceback is not None:
            local = traceback.tb_frame.f_locals
            if issubclass(type(local.get("self")), CursorWrapper) and isinstance(
                local.get("sql"), str
            ):
                return local["sql"]
            traceback = traceback.tb_next
    return ""


#: The object PostgreSQL names in "permission denied for table whatsapp_keys".
_DENIED_OBJECT = re.compile(
    r"permission denied for (?P<kind>table|relation|view|sequence|schema|database|function)"
    r" \"?(?P<name>[\w.$-]+)\"?"
)


_DENIED_DATABASE = re.compile(r'permission denied for database "?[\w.$-]+"?')


def _table_privileges(table: str, statement: str) -> str:
    """
    The privileges ``statement`` needs on ``table`` (see PostgreSQL's GRANT and SELECT pages).

    Reading any column needs SELECT (a ``DELETE``'s WHERE clause reads its own table too);
    ``DELETE FROM`` the table needs DELETE, ``INSERT INTO`` it INSERT; ``UPDATE`` and every
    row-locking clause (``FOR UPDATE``, ``NO KEY UPDATE``, ``SHARE``, ``KEY SHARE``) need
    UPDATE.
    """
    name = rf"(?:\w+\.)?\"?{re.escape(table)}\"?\b"
    flags = re.IGNORECASE
    needed = ["SELECT"]
    if re.search(rf"\bDELETE\s+FROM\s+{name}", statement, flags):
        needed.append("DELETE")
    if re.search(rf"\bINSERT\s+INTO\s+{name}", statement, flags):
        needed.append("INSERT")
    if re.search(rf"\bUPDATE\s+{name}", statement, flags) or re.search(
        r"\bFOR\s+(NO\s+KEY\s+UPDATE|UPDATE|SHARE|KEY\s+SHARE)\b", statement, flags
    ):
        needed.append("UPDATE")
    return ", ".join(needed)


def _missing_privilege(error: BaseException, alias: str) -> MissingPrivilege | None:
    """:class:`MissingPrivilege` naming the GRANT to run, when ``error`` is SQLSTATE 42501."""
    import psycopg.errors
    from django.db import connections

    denied = next(
        (c for c in _causes(error) if isinstance(c, psycopg.errors.InsufficientPrivilege)), None
    )
    if denied is not None:
        server_says = (denied.diag.message_primary or str(denied)).strip()
    else:
        # Refused at login (no CONNECT): libpq reports it as a failed connection, the
        # server's "FATAL:  permission denied for database ..." inside the message.
        refused = next(
            (
                found
                for c in _causes(error)
                if isinstance(c, psycopg.OperationalError)
                and (found := _DENIED_DATABASE.search(str(c)))
            ),
            None,
        )
        if refused is None:
            return None
        server_says = refused.group(0)
    try:
        role = connections[alias].settings_dict.get("USER") or "<the role in the URL>"
    except Exception:  # an alias that is not configured: name no role
        role = "<the role in the URL>"
    found = _DENIED_OBJECT.search(server_says)
    if found is None:
        return MissingPrivilege(
            f"The {alias!r} database refused a statement to role {role!r}: {server_says}."
        )
    kind, name = found["kind"], found["name"]
    if kind == "schema":
        privileges, target = "USAGE", f"SCHEMA {name}"
    elif kind == "database":
        privileges, target = "CONNECT", f"DATABASE {name}"
    elif kind == "function":
        privileges, target = "EXECUTE", f"FUNCTION {name}"
    else:
        privileges, target = _table_privileges(name, _failed_statement(error)), name
    grant = f"GRANT {privileges} ON {target} TO {role};"
    return MissingPrivilege(
        f"The {alias!r} database refused role {role!r} ({server_says}). Needed: {grant}",
        grant=grant,
    )


def from_database_error(
    error: BaseException, alias: str | None = None
) -> ObservabilityError | None:
    """
    The project's error for a driver or pool error raised while talking to ``alias``.

    Args:
        error: the exception raised by Django's database layer, psycopg or psycopg_pool.
        alias: the database alias the failing code talked to (default: the bot alias).

    Returns:
        :class:`QueryTimedOut`, :class:`BotDatabaseUnavailable` (or
        :class:`ProjectDatabaseUnavailable` for this project's own database),
        :class:`MissingPrivilege` naming the GRANT needed, :class:`SchemaDrift`, or
        :class:`BadInput` for a parameter the driver cannot send (a NUL character), or
        None when the error is not one this vocabulary covers (a bug: let it surface).
        The alias is the one whose connection raised the error when the traceback tells
        (a block talking to the bot database may also write this project's records).

    """
    import psycopg
    import psycopg_pool

    if isinstance(error, ObservabilityError):
        return error
    alias = database_alias_of(error) or alias or _default_alias()
    missing = _missing_privilege(error, alias)
    if missing is not None:
        return missing
    if isinstance(error, db_utils.DataError | psycopg.DataError) and _is_unsendable_value(error):
        return BadInput(
            "A value given cannot be sent to the database (it contains a NUL character): "
            "remove it and try again."
        )
    if isinstance(
        error,
        db_utils.OperationalError
        | db_utils.InterfaceError
        | psycopg.OperationalError
        | psycopg.InterfaceError
        | psycopg_pool.PoolTimeout,
    ):
        if _is_timeout(error):
            return QueryTimedOut()
        if _pool_exhausted(error, alias):
            return DatabaseBusy(
                f"All pooled connections to the {alias!r} database are in use and none came "
                "free in time: too many requests at once. Retry in a few seconds."
            )
        if alias == db_utils.DEFAULT_DB_ALIAS:
            return ProjectDatabaseUnavailable(
                f"This project's own database ({alias!r}) is unavailable."
            )
        return BotDatabaseUnavailable(
            f"The {alias!r} database is unavailable. Check that it is running and reachable, "
            "then retry."
        )
    if isinstance(error, db_utils.ProgrammingError | psycopg.ProgrammingError) and (
        _is_missing_table_or_column(error)
    ):
        if alias == db_utils.DEFAULT_DB_ALIAS:
            return ProjectSchemaMissing(
                f"This project's own database ({alias!r}) lacks a table or column: its "
                "migrations have not all run."
            )
        return SchemaDrift(
            f"The {alias!r} database lacks a table or column this project reads: its schema "
            "differs from the models."
        )
    return None


@contextlib.contextmanager
def translate_database_errors(alias: str | None = None) -> Iterator[None]:
    """
    Turn driver and pool errors raised inside the block into the project's vocabulary.

    Args:
        alias: the database alias the block talks to, named in the message (default: the bot
            alias from ``observability.config``).

    Raises:
        QueryTimedOut: the server cancelled a statement (statement or lock timeout).
        BotDatabaseUnavailable: the connection failed, was lost, or the pool timed out
            (:class:`DatabaseBusy` when the pool timed out because every connection was busy).
        SchemaDrift: a table or column the query names does not exist.

    """
    try:
        yield
    except ObservabilityError:
        raise
    except Exception as error:
        translated = from_database_error(error, alias)
        if translated is None:
            raise
        raise translated from error


# --- A management command's failure -----------------------------------------------------------
#
# How a web caller sees an error (the JSON body, the staff page) is decided at the web's edge,
# ``observability.error_pages``; this module stays plain data plus the commands' one path.


def command_error(error: ObservabilityError) -> CommandError:
    """
    The ``CommandError`` a management command raises for ``error``: message, then what to do.

    Django prints it without a traceback and exits with the error's ``exit_code``.
    """
    from django.core.management.base import CommandError

    return CommandError(f"{error.message} {error.what_to_do}", returncode=error.exit_code)


@contextlib.contextmanager
def command_errors(alias: str | None = None, *, json_output=None) -> Iterator[None]:
    """
    Inside a command: turn this vocabulary (and database errors) into CommandError.

    The one path of every command's failure (``observability.management.base`` puts each
    command inside it). Example::

        def handle(self, *args, **options):
            with command_errors():
                run_cleanup(...)

    Args:
        alias: the database the block talks to, when the failing connection cannot tell.
        json_output: a stream (``--json``): the error's JSON object is written to it too.

    Raises:
        CommandError: carrying the message, what to do and the error's exit code.

    """
    try:
        with translate_database_errors(alias):
            yield
    except ObservabilityError as error:
        if json_output is not None:
            json_output.write(json.dumps(error.as_json(), ensure_ascii=False))
        raise command_error(error) from error
