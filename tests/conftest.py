"""Shared fixtures: a real embedded PostgreSQL with the bot's tables in the test bot database."""

from __future__ import annotations

import pytest

from observability import schema


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """
    Create the bot's tables in the test bot database, exactly as production has them.

    ``migrate`` never touches the bot alias (observability.routers), so the tables are created
    here from the same DDL as the demo's.
    """
    with django_db_blocker.unblock():
        schema.create_bot_tables("bot", replace=True)


@pytest.fixture(autouse=True)
def _fresh_health_results():
    """Each test computes its own /health/ answers: none is shared from an earlier test."""
    from observability import health_views

    health_views.shared_results.clear()


@pytest.fixture
def bot_db(db, django_db_blocker, request):
    """Allow a test to use both the default and the bot databases (each test rolled back)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or "bot" not in (marker.kwargs.get("databases") or ()):
        pytest.fail('use @pytest.mark.django_db(databases=["default", "bot"]) with bot_db')
    return None


# --- The README's least-privilege roles (issue 15) -------------------------------------------


@pytest.fixture(scope="session")
def readme_roles(django_db_setup, django_db_blocker):
    """
    The README's two roles on the test bot database, granted by the README's own SQL.

    Yields the role names (``observability_ro``, ``observability_cleanup``); run code under
    one with ``tests.roles_support.bot_alias_as(role)``. Dropped at the end of the session.
    """
    from django.db import connections

    from tests import roles_support

    database = connections["bot"].settings_dict["NAME"]
    with django_db_blocker.unblock():
        roles_support.create_readme_roles(database)
    try:
        yield roles_support.ROLES
    finally:
        with django_db_blocker.unblock():
            roles_support.drop_readme_roles(database)


@pytest.fixture
def committed_bot_rows():
    """Empty the bot tables after a test that committed rows (transaction=True)."""
    from tests import roles_support

    yield
    roles_support.empty_bot_tables()


# --- Sentry (issue 7): a real ingestion endpoint on 127.0.0.1 ---------------------------------


@pytest.fixture
def sentry_server():
    """
    A running fake Sentry ingestion server, with the SDK initialised against it (project way).

    Yields the server (``.dsn``, ``.events()``, ``.check_ins()``, ``.raw``, ``.wait_for()``);
    the SDK is switched off and the server stopped afterwards.
    """
    from tests.sentry_server import SentryServer, sentry_initialised

    server = SentryServer().start()
    try:
        with sentry_initialised(server.dsn):
            yield server
    finally:
        server.stop()


@pytest.fixture
def bot_database_down():
    """
    The bot alias points at a closed port for this test's thread (see health_support).

    Use with ``@pytest.mark.django_db(databases=["default", "bot"])``.
    """
    from tests.health_support import database_down

    with database_down("bot") as down:
        yield down
