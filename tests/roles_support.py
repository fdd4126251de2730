"""
The README's least-privilege roles, created on the test server exactly as the README grants them.

The SQL is read from README.md ("The bot database's roles"), so the documented grants and the
ones the suite runs under cannot drift apart: change the README and the tests run under the new
grants. Only the database name changes (``bot`` in the README, the test bot database here).

Use :func:`bot_alias_as` to run code under a role: the bot alias is swapped for a connection
that logs in as that role (a real login over the embedded server's socket, where ``pg_hba``
trusts local connections), not ``SET ROLE`` on the superuser's connection, which anything could
undo with ``RESET ROLE``. Rows must be committed to be seen by that connection: use
``@pytest.mark.django_db(databases=["default", "bot"], transaction=True)`` and the
``committed_bot_rows`` fixture, which empties the bot tables afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
from django.db import connections
from psycopg import sql

README = Path(__file__).resolve().parent.parent / "README.md"

#: The two roles the README creates, in the order they are created.
READ_ONLY = "observability_ro"
CLEANUP = "observability_cleanup"
ROLES = (READ_ONLY, CLEANUP)

#: The bot tables every role reads.
BOT_TABLES = ("whatsapp_auth", "whatsapp_keys", "companies", "clients")


def readme_roles_sql() -> str:
    """The ```sql block of the README's section "The bot database's roles", verbatim."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### The bot database's roles", 1)[1]
    found = re.search(r"```sql\n(.*?)```", section, re.DOTALL)
    assert found, 'README: no ```sql block under "The bot database\'s roles"'
    return found.group(1)


def readme_statements(database: str) -> list[str]:
    """
    The README's statements, one per item, with the database ``bot`` renamed to ``database``.

    Comments are dropped; every statement ends with ``;`` and holds no ``;`` of its own (the
    README's passwords are ``'...'``). The rename is checked to happen exactly where the README
    names the database, so a README naming it elsewhere fails here instead of granting on the
    wrong database.
    """
    lines = [line.split("--", 1)[0].rstrip() for line in readme_roles_sql().splitlines()]
    statements = [s.strip() for s in " ".join(lines).split(";") if s.strip()]
    renamed = []
    for statement in statements:
        new, count = re.subn(
            r"\bON DATABASE bot\b", f"ON DATABASE {_quote(database)}", statement, flags=re.I
        )
        assert count or not re.search(r"\bDATABASE\b", statement, re.I), statement
        renamed.append(new)
    assert any("ON DATABASE" in s for s in renamed), "README grants no CONNECT"
    return renamed


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _superuser_connection(database: str) -> psycopg.Connection:
    # The default alias: same server and owner in tests, and never swapped for a role.
    settings_dict = connections["default"].settings_dict
    return psycopg.connect(
        dbname=database,
        host=settings_dict["HOST"],
        port=settings_dict.get("PORT") or None,
        user=settings_dict["USER"],
        autocommit=True,
    )


def owner_connection() -> psycopg.Connection:
    """A connection to the test bot database as its owner (the bot's writes), autocommit."""
    return _superuser_connection(_bot_database())


def _bot_database() -> str:
    return connections["bot"].settings_dict["NAME"]


def drop_readme_roles(database: str) -> None:
    """Drop the README's roles (their grants in ``database`` first); nothing if absent."""
    with _superuser_connection(database) as conn:
        for role in reversed(ROLES):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            if exists:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def create_readme_roles(database: str) -> list[str]:
    """
    Create the README's roles on the test server, running the README's own statements.

    Roles belong to the whole server: any left by an earlier run are dropped first.

    Returns:
        The statements run.

    """
    drop_readme_roles(database)
    statements = readme_statements(database)
    with _superuser_connection(database) as conn:
        for statement in statements:
            conn.execute(statement)
    return statements


@contextlib.contextmanager
def bot_alias_as(role: str) -> Iterator[object]:
    """
    Within the block, the bot alias logs in as ``role``: its own wrapper and its own pool.

    The original connection wrapper and pool are put back afterwards.
    """
    from django.db.backends.postgresql.base import DatabaseWrapper

    original = connections["bot"]
    original_settings = connections.settings["bot"]
    saved_pool = DatabaseWrapper._connection_pools.pop("bot", None)
    settings_dict = copy.deepcopy(original.settings_dict)
    settings_dict.update(USER=role, PASSWORD="")
    wrapper = original.__class__(settings_dict, alias="bot")
    connections["bot"] = wrapper
    # Threads (the health checks' executor) build their own wrappers from the settings.
    connections.settings["bot"] = settings_dict
    try:
        yield wrapper
    finally:
        from observability import circuit_breaker

        wrapper.close()
        if wrapper.pool is not None:
            wrapper.close_pool()
        DatabaseWrapper._connection_pools.pop("bot", None)
        # A role refused at login opened the breaker of the bot's server: close it again.
        circuit_breaker.reset_all()
        connections.settings["bot"] = original_settings
        connections["bot"] = original
        if saved_pool is not None:
            DatabaseWrapper._connection_pools["bot"] = saved_pool


def empty_bot_tables() -> None:
    """Delete every committed row of the bot tables (Django's flush skips unmanaged tables)."""
    with owner_connection() as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, BOT_TABLES)))
        )
