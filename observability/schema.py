"""
The bot's schema in databases of our own: create it exactly as production has it.

Production tables belong to the Node.js bot and are never created or altered here. The demo
and the test suite need the same tables, with the same types, defaults, indexes (the partial and
the duplicate ones included) and ``updated_at`` triggers; ``sql/bot_schema.sql`` holds them.
"""

from __future__ import annotations

from importlib import resources

from django.db import connections, transaction

from observability import config

#: The bot's tables, in the order they are created.
BOT_TABLES = ("whatsapp_auth", "whatsapp_keys", "companies", "clients")


def bot_schema_sql() -> str:
    """The DDL that creates the bot's tables, read from the package."""
    return resources.files("observability").joinpath("sql/bot_schema.sql").read_text()


def existing_bot_tables(alias: str | None = None) -> list[str]:
    """The bot tables that already exist in the alias's database (current schema)."""
    alias = alias or config.bot_database_alias()
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            [list(BOT_TABLES)],
        )
        found = {row[0] for row in cursor.fetchall()}
    return [name for name in BOT_TABLES if name in found]


def create_bot_tables(alias: str | None = None, *, replace: bool = False) -> None:
    """
    Create the bot's tables in one transaction.

    Args:
        alias: the database alias; defaults to the bot alias.
        replace: drop the bot's tables first (their data is lost). Without it, tables that
            exist already are an error.

    Raises:
        FileExistsError: some bot tables exist and ``replace`` is False.

    """
    alias = alias or config.bot_database_alias()
    present = existing_bot_tables(alias)
    if present and not replace:
        raise FileExistsError(
            f"The bot tables {', '.join(present)} already exist in database alias {alias!r}."
        )
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        if present:
            cursor.execute("DROP TABLE IF EXISTS " + ", ".join(BOT_TABLES) + " CASCADE")
        cursor.execute(bot_schema_sql())
