"""
The bot's schema: create it in databases of our own, and check a live one against the models.

Production tables belong to the Node.js bot and are never created or altered here. The demo
and the test suite need the same tables, with the same types, defaults, indexes (the partial and
the duplicate ones included) and ``updated_at`` triggers; ``sql/bot_schema.sql`` holds them.
The drift check (:func:`check_drift`) compares a live database's columns with the models, so
ops learn that the bot changed its tables before the admin shows wrong data.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources

from django.db import connections, transaction

from observability import config
from observability.exceptions import translate_database_errors

logger = logging.getLogger(__name__)

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


# --- Drift check: the live bot database against the models ------------------------------------
#
# Ops run this against production before trusting the admin: it reads only the catalogue
# (pg_catalog), so the least-privilege role (SELECT on the four tables) is enough.


class DriftKind(StrEnum):
    """What kind of difference the drift check found."""

    MISSING_TABLE = "missing_table"
    MISSING_COLUMN = "missing_column"
    EXTRA_COLUMN = "extra_column"
    RETYPED_COLUMN = "retyped_column"
    NULLABILITY = "nullability"


@dataclass(frozen=True, slots=True)
class ColumnShape:
    """
    One column as the models expect it or as the database has it.

    Attributes:
        table: the table name.
        column: the column name.
        type: the PostgreSQL type as ``format_type()`` spells it (``character varying(50)``).
        nullable: whether the column accepts NULL.

    """

    table: str
    column: str
    type: str
    nullable: bool


@dataclass(frozen=True, slots=True)
class SchemaDifference:
    """
    One way the live database differs from the models.

    Attributes:
        kind: what differs.
        table: the table concerned.
        column: the column concerned (None for a missing table).
        expected: what the models expect (a type, ``NULL``/``NOT NULL``), or None.
        found: what the database has, or None.

    """

    kind: DriftKind
    table: str
    column: str | None = None
    expected: str | None = None
    found: str | None = None

    def describe(self) -> str:
        """One line an operator can read, e.g. ``clients.phone: type text, expected ...``."""
        where = f"{self.table}.{self.column}" if self.column else self.table
        if self.kind is DriftKind.MISSING_TABLE:
            return f"{where}: table is missing"
        if self.kind is DriftKind.MISSING_COLUMN:
            return f"{where}: column is missing (expected {self.expected})"
        if self.kind is DriftKind.EXTRA_COLUMN:
            return f"{where}: column is not in the models (found {self.found})"
        if self.kind is DriftKind.RETYPED_COLUMN:
            return f"{where}: type is {self.found}, expected {self.expected}"
        return f"{where}: column is {self.found}, expected {self.expected}"

    def as_dict(self) -> dict:
        """A JSON-ready dict."""
        return {
            "kind": str(self.kind),
            "table": self.table,
            "column": self.column,
            "expected": self.expected,
            "found": self.found,
            "message": self.describe(),
        }


@dataclass(frozen=True, slots=True)
class DriftReport:
    """
    The result of comparing a live database with the models.

    Attributes:
        alias: the database alias that was inspected.
        schema: the PostgreSQL schema inspected, or None for the tables on the search path.
        differences: every difference found, in table then column order.

    """

    alias: str
    schema: str | None
    differences: tuple[SchemaDifference, ...] = field(default_factory=tuple)

    @property
    def clean(self) -> bool:
        """True when the database matches the models."""
        return not self.differences

    def as_dict(self) -> dict:
        """A JSON-ready dict."""
        return {
            "alias": self.alias,
            "schema": self.schema,
            "clean": self.clean,
            "differences": [difference.as_dict() for difference in self.differences],
        }


_ARRAY = re.compile(r"^(?P<base>.+?)(?P<dims>(\[\])+)$")
_PARAMETERS = re.compile(r"^(?P<name>[a-z ]+?)\s*\((?P<args>[^)]*)\)$")
_TYPE_ALIASES = {
    "varchar": "character varying",
    "char": "character",
    "bpchar": "character",
    "int": "integer",
    "int4": "integer",
    "int8": "bigint",
    "int2": "smallint",
    "serial": "integer",
    "serial4": "integer",
    "bigserial": "bigint",
    "serial8": "bigint",
    "smallserial": "smallint",
    "serial2": "smallint",
    "bool": "boolean",
    "float8": "double precision",
    "float4": "real",
    "decimal": "numeric",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "time": "time without time zone",
    "timetz": "time with time zone",
}


def normalise_type(db_type: str) -> str:
    """
    Spell a type the way PostgreSQL's ``format_type()`` does, so model and catalogue compare.

    ``varchar(50)`` becomes ``character varying(50)``, ``timestamp`` becomes
    ``timestamp without time zone``, ``serial`` becomes ``integer``, ``varchar(50)[]`` becomes
    ``character varying(50)[]``, and ``numeric(10, 2)`` becomes ``numeric(10,2)``.
    """
    text = " ".join(db_type.strip().lower().split())
    array = _ARRAY.match(text)
    if array:
        return normalise_type(array.group("base")) + array.group("dims")
    parameters = _PARAMETERS.match(text)
    if parameters:
        name = _TYPE_ALIASES.get(parameters.group("name"), parameters.group("name"))
        args = ",".join(part.strip() for part in parameters.group("args").split(","))
        return f"{name}({args})"
    return _TYPE_ALIASES.get(text, text)


def expected_columns(alias: str | None = None) -> dict[str, dict[str, ColumnShape]]:
    """
    The columns the bot models expect, by table then column, with normalised types.

    Args:
        alias: the alias whose connection renders each field's ``db_type``.

    """
    from observability.models import Client, Company, WhatsAppAuth, WhatsAppKey

    connection = connections[alias or config.bot_database_alias()]
    tables: dict[str, dict[str, ColumnShape]] = {}
    for model in (WhatsAppAuth, WhatsAppKey, Company, Client):
        table = model._meta.db_table
        columns: dict[str, ColumnShape] = {}
        for model_field in model._meta.concrete_fields:
            if not model_field.column:  # a CompositePrimaryKey has no column of its own
                continue
            columns[model_field.column] = ColumnShape(
                table=table,
                column=model_field.column,
                type=normalise_type(model_field.db_type(connection)),
                nullable=bool(model_field.null),
            )
        tables[table] = columns
    return tables


_LIVE_COLUMNS_SQL = """
SELECT c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND c.relname = ANY(%s)
  AND {where}
ORDER BY c.relname, a.attnum
"""


def live_columns(
    alias: str | None = None, *, schema_name: str | None = None
) -> dict[str, dict[str, ColumnShape]]:
    """
    The bot tables' columns as the live database has them (catalogue reads only).

    Args:
        alias: the database alias; defaults to the bot alias.
        schema_name: a PostgreSQL schema to inspect; by default the tables visible on the
            connection's search path, as the bot's queries see them.

    Returns:
        Columns by table then column; a table that does not exist is absent.

    """
    alias = alias or config.bot_database_alias()
    if schema_name is None:
        sql, params = _LIVE_COLUMNS_SQL.format(where="pg_catalog.pg_table_is_visible(c.oid)"), []
    else:
        sql, params = _LIVE_COLUMNS_SQL.format(where="n.nspname = %s"), [schema_name]
    tables: dict[str, dict[str, ColumnShape]] = {}
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [list(BOT_TABLES), *params])
        for table, column, db_type, nullable in cursor.fetchall():
            tables.setdefault(table, {})[column] = ColumnShape(
                table=table, column=column, type=db_type, nullable=nullable
            )
    return tables


def _null_label(nullable: bool) -> str:
    return "NULL" if nullable else "NOT NULL"


def compare_columns(
    expected: dict[str, dict[str, ColumnShape]], live: dict[str, dict[str, ColumnShape]]
) -> tuple[SchemaDifference, ...]:
    """Every difference between the expected and the live columns (pure: no database)."""
    differences: list[SchemaDifference] = []
    for table, want in expected.items():
        have = live.get(table)
        if have is None:
            differences.append(SchemaDifference(DriftKind.MISSING_TABLE, table))
            continue
        for column, shape in want.items():
            found = have.get(column)
            if found is None:
                differences.append(
                    SchemaDifference(DriftKind.MISSING_COLUMN, table, column, expected=shape.type)
                )
                continue
            if found.type != shape.type:
                differences.append(
                    SchemaDifference(
                        DriftKind.RETYPED_COLUMN,
                        table,
                        column,
                        expected=shape.type,
                        found=found.type,
                    )
                )
            if found.nullable != shape.nullable:
                differences.append(
                    SchemaDifference(
                        DriftKind.NULLABILITY,
                        table,
                        column,
                        expected=_null_label(shape.nullable),
                        found=_null_label(found.nullable),
                    )
                )
        for column, found in have.items():
            if column not in want:
                differences.append(
                    SchemaDifference(DriftKind.EXTRA_COLUMN, table, column, found=found.type)
                )
    return tuple(differences)


def check_drift(alias: str | None = None, *, schema_name: str | None = None) -> DriftReport:
    """
    Compare the live bot database's columns (types and nullability) with the models.

    Reads only the catalogue, so a read-only role can run it against production.

    Args:
        alias: the database alias; defaults to the bot alias.
        schema_name: a PostgreSQL schema to inspect instead of the search path's tables.

    Returns:
        A report naming each difference; ``report.clean`` when there is none.

    Raises:
        BotDatabaseUnavailable: the database cannot be reached.
        QueryTimedOut: the catalogue query was cancelled.

    """
    alias = alias or config.bot_database_alias()
    with translate_database_errors(alias):
        live = live_columns(alias, schema_name=schema_name)
    differences = compare_columns(expected_columns(alias), live)
    if differences:
        logger.warning("bot schema drift in %r: %d difference(s)", alias, len(differences))
    return DriftReport(alias=alias, schema=schema_name, differences=differences)
