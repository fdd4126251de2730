"""
The project's exception vocabulary, and how each failure is shown to every kind of caller.

Each error class names, in one place, its machine code, its HTTP status and its command exit
code. Views, the admin, health checks, tasks and commands raise these and never invent their
own mapping. Database driver errors are translated into them at the data layer's edge by
:func:`translate_database_errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import utils as db_utils

#: Exit code for bad input (argparse uses 2 as well).
EXIT_USAGE = 2


class ObservabilityError(Exception):
    """
    Base class: a failure with a message an operator can act on.

    Attributes:
        code: short machine-readable name, stable across releases.
        http_status: the HTTP status a web caller receives.
        exit_code: the exit status of a management command that fails with it.

    """

    code = "error"
    http_status = 500
    exit_code = 1
    default_message = "Something went wrong."

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
    default_message = "The input is not valid."


class MalformedSessionId(BadInput):
    """A session or salon id that is neither ``962302`` nor ``company_962302``."""

    code = "malformed_session_id"
    default_message = "A session id is a salon number such as 962302 or company_962302."


class SessionNotFound(ObservabilityError):
    """No session (auth row or keys) exists for the requested salon."""

    code = "session_not_found"
    http_status = 404
    exit_code = EXIT_USAGE
    default_message = "No WhatsApp session exists for that salon."


class BotDatabaseUnavailable(ObservabilityError):
    """The bot's database cannot be reached (down, refusing connections, pool exhausted)."""

    code = "bot_database_unavailable"
    http_status = 503
    exit_code = 3
    default_message = (
        "The bot database is unavailable. Check that it is running and reachable, then retry."
    )


class QueryTimedOut(ObservabilityError):
    """A query ran past its statement or lock timeout and was cancelled by the server."""

    code = "query_timed_out"
    http_status = 504
    exit_code = 4
    default_message = "The bot database did not answer in time; the query was cancelled."


class CleanupAlreadyRunning(ObservabilityError):
    """Another cleanup run holds the advisory lock."""

    code = "cleanup_already_running"
    http_status = 409
    exit_code = 5
    default_message = "Another cleanup run is in progress; wait for it to finish and retry."


class SchemaDrift(ObservabilityError):
    """The live bot database's tables differ from the models."""

    code = "schema_drift"
    http_status = 500
    exit_code = 6
    default_message = "The bot database's schema differs from what this project expects."


def _is_timeout(error: BaseException) -> bool:
    import psycopg.errors

    cause = getattr(error, "__cause__", None) or error
    return isinstance(cause, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable)


@contextlib.contextmanager
def translate_database_errors(alias: str = "bot") -> Iterator[None]:
    """
    Turn driver and pool errors raised inside the block into the project's vocabulary.

    Args:
        alias: the database alias the block talks to, named in the message.

    Raises:
        QueryTimedOut: the server cancelled a statement (statement or lock timeout).
        BotDatabaseUnavailable: the connection failed, was lost, or the pool timed out.

    """
    import psycopg
    import psycopg_pool

    try:
        yield
    except ObservabilityError:
        raise
    except (
        db_utils.OperationalError,
        db_utils.InterfaceError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
        psycopg_pool.PoolTimeout,
    ) as error:
        if _is_timeout(error):
            raise QueryTimedOut() from error
        raise BotDatabaseUnavailable(
            f"The {alias!r} database is unavailable. Check that it is running and reachable, "
            "then retry."
        ) from error
