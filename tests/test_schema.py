"""The bot schema we create matches production's, and the drift check names every difference."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from observability import schema
from observability.exceptions import SchemaDrift
from observability.schema import DriftKind

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

# Transcribed from shared/legacy-schema.md (production, December 2025):
# column | format_type() | nullable | column default.
_T, _TZ, _TS = "text", "timestamp with time zone", "timestamp without time zone"
_V = "character varying"
EXPECTED_COLUMNS = {
    "whatsapp_auth": [
        ("company_id", _T, False, None),
        ("creds", "jsonb", False, None),
        ("created_at", _TZ, True, "now()"),
        ("updated_at", _TZ, True, "now()"),
    ],
    "whatsapp_keys": [
        ("company_id", _T, False, None),
        ("key_type", _T, False, None),
        ("key_id", _T, False, None),
        ("value", "jsonb", False, None),
        ("created_at", _TZ, True, "now()"),
        ("updated_at", _TZ, True, "now()"),
        ("expires_at", _TZ, True, None),
    ],
    "companies": [
        ("id", "integer", False, "nextval('companies_id_seq'::regclass)"),
        ("company_id", "integer", False, None),
        ("yclients_id", "integer", True, None),
        ("title", f"{_V}(255)", True, None),
        ("address", f"{_V}(500)", True, None),
        ("phone", f"{_V}(50)", True, None),
        ("email", f"{_V}(255)", True, None),
        ("website", f"{_V}(255)", True, None),
        ("timezone", f"{_V}(100)", True, None),
        ("working_hours", f"{_V}(255)", True, None),
        ("coordinate_lat", "numeric", True, None),
        ("coordinate_lon", "numeric", True, None),
        ("currency", f"{_V}(10)", True, None),
        ("ai_enabled", "boolean", True, "false"),
        ("sync_enabled", "boolean", True, "true"),
        ("created_at", _TS, True, "CURRENT_TIMESTAMP"),
        ("updated_at", _TS, True, "CURRENT_TIMESTAMP"),
        ("last_sync_at", _TS, True, None),
        ("raw_data", "jsonb", True, None),
        ("whatsapp_enabled", "boolean", True, "false"),
        ("whatsapp_config", "jsonb", True, None),
        ("whatsapp_connected", "boolean", True, "false"),
        ("whatsapp_phone", f"{_V}(50)", True, None),
        ("whatsapp_connected_at", _TS, True, None),
        ("integration_status", f"{_V}(100)", True, None),
        ("connected_at", _TS, True, None),
        ("marketplace_user_id", f"{_V}(255)", True, None),
        ("marketplace_user_name", f"{_V}(255)", True, None),
        ("marketplace_user_email", f"{_V}(255)", True, None),
        ("marketplace_user_phone", f"{_V}(50)", True, None),
        ("whatsapp_session_data", "jsonb", True, None),
        ("api_key", f"{_V}(255)", True, None),
        ("webhook_secret", f"{_V}(255)", True, None),
        ("last_payment_date", _TS, True, None),
        ("subscription_expires_at", _TZ, True, None),
        ("whatsapp_channel_enabled", "boolean", True, "true"),
        ("sms_channel_enabled", "boolean", True, "false"),
        ("sms_short_names", "text[]", True, None),
        ("disconnected_at", _TZ, True, None),
        ("status", f"{_V}(50)", True, None),
        ("telegram_enabled", "boolean", True, "false"),
        ("telegram_premium_until", _TS, True, None),
    ],
    "clients": [
        ("id", "integer", False, "nextval('clients_id_seq'::regclass)"),
        ("yclients_id", "integer", False, None),
        ("name", f"{_V}(255)", True, None),
        ("phone", f"{_V}(50)", False, None),
        ("raw_phone", f"{_V}(50)", True, None),
        ("email", f"{_V}(255)", True, None),
        ("discount", "numeric", True, None),
        ("company_id", "integer", True, None),
        ("branch_ids", "integer[]", True, None),
        ("tags", "text[]", True, None),
        ("status", f"{_V}(50)", True, None),
        ("source", f"{_V}(100)", True, None),
        ("created_at", _TS, True, "CURRENT_TIMESTAMP"),
        ("updated_at", _TS, True, "CURRENT_TIMESTAMP"),
        ("visit_count", "integer", True, "0"),
        ("total_spent", "numeric", True, None),
        ("first_visit_date", "date", True, None),
        ("last_visit_date", "date", True, None),
        ("last_services", "text[]", True, None),
        ("visit_history", "jsonb", True, None),
        ("preferences", "jsonb", True, None),
        ("last_sync_at", _TS, True, None),
        ("loyalty_level", f"{_V}(50)", True, None),
        ("client_segment", f"{_V}(50)", True, None),
        ("average_bill", "numeric", True, None),
        ("last_service_ids", "integer[]", True, None),
        ("favorite_staff_ids", "integer[]", True, None),
        ("preferred_time_slots", f"{_V}(50)[]", True, None),
        ("blacklisted", "boolean", True, "false"),
        ("notes", "text", True, None),
        ("created_by_ai", "boolean", True, "false"),
        ("last_ai_interaction", _TS, True, None),
        ("ai_context", "jsonb", True, None),
        ("ai_messages_count", "integer", True, "0"),
        ("ai_satisfaction_score", "numeric", True, None),
        ("services_amount", "numeric", True, None),
        ("goods_amount", "numeric", True, None),
        ("goods_purchases", "jsonb", True, None),
        ("goods_count", "integer", True, "0"),
    ],
}

_BTREE = "CREATE {unique}INDEX {name} ON public.{table} USING btree ({columns}){where}"
_NOT_NULL_EXPIRY = " WHERE (expires_at IS NOT NULL)"
EXPECTED_INDEXES = {
    ("whatsapp_auth", "whatsapp_auth_pkey"): ("UNIQUE ", "company_id", ""),
    ("whatsapp_auth", "idx_whatsapp_auth_company"): ("", "company_id", ""),
    ("whatsapp_keys", "whatsapp_keys_pkey"): ("UNIQUE ", "company_id, key_type, key_id", ""),
    ("whatsapp_keys", "idx_whatsapp_keys_company"): ("", "company_id", ""),
    ("whatsapp_keys", "idx_whatsapp_keys_type"): ("", "key_type", ""),
    ("whatsapp_keys", "idx_whatsapp_keys_type_company"): ("", "key_type, company_id", ""),
    ("whatsapp_keys", "idx_whatsapp_keys_expires"): ("", "expires_at", _NOT_NULL_EXPIRY),
    ("whatsapp_keys", "idx_whatsapp_keys_expires_cleanup"): ("", "expires_at", _NOT_NULL_EXPIRY),
    ("companies", "companies_pkey"): ("UNIQUE ", "id", ""),
    ("companies", "idx_companies_company_id"): ("", "company_id", ""),
    ("companies", "idx_companies_status"): ("", "status", ""),
    ("companies", "idx_companies_subscription_expires"): ("", "subscription_expires_at", ""),
    ("companies", "idx_companies_yclients_id"): ("", "yclients_id", ""),
    ("clients", "clients_pkey"): ("UNIQUE ", "id", ""),
    ("clients", "clients_yclients_company_unique"): ("UNIQUE ", "yclients_id, company_id", ""),
    ("clients", "idx_clients_yclients_id"): ("UNIQUE ", "yclients_id", ""),
    ("clients", "idx_clients_company_id"): ("", "company_id", ""),
    ("clients", "idx_clients_last_visit_date"): ("", "last_visit_date", ""),
    ("clients", "idx_clients_phone"): ("", "phone", ""),
}


def _fetch(sql: str, params=None) -> list[tuple]:
    with connections["bot"].cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


@pytest.fixture
def scratch_schema():
    """A throwaway copy of the bot tables in schema ``drift_scratch`` (rolled back after)."""
    with connections["bot"].cursor() as cursor:
        cursor.execute("SHOW search_path")
        original = cursor.fetchone()[0]
        cursor.execute("CREATE SCHEMA drift_scratch")
        cursor.execute("SET LOCAL search_path TO drift_scratch")
        cursor.execute(schema.bot_schema_sql())
        cursor.execute(f"SET LOCAL search_path TO {original}")
    return "drift_scratch"


def test_create_bot_tables__columns_match_the_schema_file():
    """Every column has the schema file's type, nullability and default, in its order."""
    for table, columns in EXPECTED_COLUMNS.items():
        rows = _fetch(
            "SELECT column_name, pg_catalog.format_type(a.atttypid, a.atttypmod), "
            "c.is_nullable = 'YES', c.column_default "
            "FROM information_schema.columns c "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = %s::regclass "
            "AND a.attname = c.column_name "
            "WHERE c.table_schema = 'public' AND c.table_name = %s ORDER BY c.ordinal_position",
            [table, table],
        )
        assert rows == [tuple(column) for column in columns], table


def test_create_bot_tables__every_index_with_its_definition():
    """All 19 indexes exist as production has them, the partial and duplicate ones included."""
    rows = _fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public' AND tablename = ANY(%s)",
        [list(schema.BOT_TABLES)],
    )
    found = {(table, name): definition for table, name, definition in rows}
    expected = {
        (table, name): _BTREE.format(
            unique=unique, name=name, table=table, columns=columns, where=where
        )
        for (table, name), (unique, columns, where) in EXPECTED_INDEXES.items()
    }
    assert found == expected


def test_create_bot_tables__primary_keys_are_constraints():
    """The primary keys are real constraints, the keys table's one composite."""
    rows = _fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE contype = 'p' AND conrelid::regclass::text = ANY(%s) "
        "ORDER BY 1",
        [list(schema.BOT_TABLES)],
    )
    assert rows == [
        ("clients", "clients_pkey", "PRIMARY KEY (id)"),
        ("companies", "companies_pkey", "PRIMARY KEY (id)"),
        ("whatsapp_auth", "whatsapp_auth_pkey", "PRIMARY KEY (company_id)"),
        ("whatsapp_keys", "whatsapp_keys_pkey", "PRIMARY KEY (company_id, key_type, key_id)"),
    ]


def test_create_bot_tables__updated_at_triggers_fire_before_update():
    """Both WhatsApp tables carry a BEFORE UPDATE trigger, and it really moves updated_at."""
    rows = _fetch(
        "SELECT tgrelid::regclass::text, pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE NOT tgisinternal AND tgrelid::regclass::text = ANY(%s) ORDER BY 1",
        [list(schema.BOT_TABLES)],
    )
    assert rows == [
        (
            table,
            f"CREATE TRIGGER update_{table}_updated_at BEFORE UPDATE ON public.{table} "
            "FOR EACH ROW EXECUTE FUNCTION update_updated_at_column()",
        )
        for table in ("whatsapp_auth", "whatsapp_keys")
    ]
    with connections["bot"].cursor() as cursor:
        cursor.execute(
            "INSERT INTO whatsapp_auth (company_id, creds, updated_at) "
            "VALUES ('962302', '{}', now() - interval '3 days')"
        )
        cursor.execute("UPDATE whatsapp_auth SET creds = '{\"a\": 1}' WHERE company_id = '962302'")
        cursor.execute("SELECT now() - updated_at FROM whatsapp_auth WHERE company_id = '962302'")
        assert cursor.fetchone()[0].total_seconds() < 60


def test_create_bot_tables__refuses_existing_tables_without_replace():
    """A second create without --replace is refused and leaves the tables alone."""
    with pytest.raises(FileExistsError, match="already exist"):
        schema.create_bot_tables("bot")


def test_router__migrate_on_the_bot_alias_creates_no_table():
    """`migrate --database bot` only records migrations: no project or auth table appears."""
    call_command("migrate", database="bot", verbosity=0, interactive=False)
    tables = {
        row[0]
        for row in _fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema')"
        )
    }
    assert tables == {*schema.BOT_TABLES, "django_migrations"}


@pytest.mark.parametrize(
    ("model_type", "catalogue_type"),
    [
        ("varchar(50)", "character varying(50)"),
        ("varchar(50)[]", "character varying(50)[]"),
        ("timestamp", "timestamp without time zone"),
        ("timestamptz", "timestamp with time zone"),
        ("timestamp with time zone", "timestamp with time zone"),
        ("serial", "integer"),
        ("bigserial", "bigint"),
        ("integer[]", "integer[]"),
        ("numeric(10, 2)", "numeric(10,2)"),
        ("numeric", "numeric"),
        ("int4", "integer"),
        ("bool", "boolean"),
        ("JSONB", "jsonb"),
    ],
)
def test_normalise_type__spells_types_as_format_type_does(model_type, catalogue_type):
    """Model types are spelled as PostgreSQL's catalogue spells them."""
    assert schema.normalise_type(model_type) == catalogue_type


def test_check_drift__clean_on_the_created_schema():
    """The tables created from the schema file match the models exactly."""
    report = schema.check_drift("bot")
    assert report.clean, [d.describe() for d in report.differences]


def test_check_drift__names_added_missing_retyped_and_nullability(scratch_schema):
    """An added, a dropped, a retyped and a NOT NULL column are each named once."""
    with connections["bot"].cursor() as cursor:
        cursor.execute("ALTER TABLE drift_scratch.clients ADD COLUMN loyalty_card text")
        cursor.execute("ALTER TABLE drift_scratch.companies DROP COLUMN website")
        cursor.execute(
            "ALTER TABLE drift_scratch.whatsapp_keys ALTER COLUMN expires_at TYPE timestamp"
        )
        cursor.execute("ALTER TABLE drift_scratch.clients ALTER COLUMN name SET NOT NULL")

    report = schema.check_drift("bot", schema_name=scratch_schema)

    assert {(d.kind, d.table, d.column, d.expected, d.found) for d in report.differences} == {
        (DriftKind.EXTRA_COLUMN, "clients", "loyalty_card", None, "text"),
        (DriftKind.MISSING_COLUMN, "companies", "website", "character varying(255)", None),
        (
            DriftKind.RETYPED_COLUMN,
            "whatsapp_keys",
            "expires_at",
            "timestamp with time zone",
            "timestamp without time zone",
        ),
        (DriftKind.NULLABILITY, "clients", "name", "NULL", "NOT NULL"),
    }
    assert "whatsapp_keys.expires_at: type is timestamp without time zone" in (
        "\n".join(d.describe() for d in report.differences)
    )
    # The shared test tables on the search path are untouched.
    assert schema.check_drift("bot").clean


def test_check_drift__missing_tables(scratch_schema):
    """A schema without the bot's tables reports each table missing."""
    with connections["bot"].cursor() as cursor:
        cursor.execute("DROP TABLE drift_scratch.companies")
    report = schema.check_drift("bot", schema_name=scratch_schema)
    assert [(d.kind, d.table) for d in report.differences] == [
        (DriftKind.MISSING_TABLE, "companies")
    ]


def test_check_bot_schema_command__exits_0_when_clean():
    """The command says there is no drift and exits normally."""
    out = io.StringIO()
    call_command("check_bot_schema", stdout=out)
    assert "no drift" in out.getvalue()


def test_check_bot_schema_command__json_when_clean():
    """--json prints a machine-readable clean report."""
    out = io.StringIO()
    call_command("check_bot_schema", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {
        "alias": "bot",
        "schema": None,
        "clean": True,
        "differences": [],
    }


def test_check_bot_schema_command__fails_with_schema_drift_exit_code(scratch_schema):
    """On drift it prints each difference and fails with SchemaDrift's exit code."""
    with connections["bot"].cursor() as cursor:
        cursor.execute("ALTER TABLE drift_scratch.whatsapp_auth ADD COLUMN note text")
    out = io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("check_bot_schema", "--schema", scratch_schema, stdout=out)
    assert failure.value.returncode == SchemaDrift.exit_code
    assert "1 difference(s)" in str(failure.value)
    assert "whatsapp_auth.note: column is not in the models (found text)" in out.getvalue()


def test_check_bot_schema_command__json_on_drift(scratch_schema):
    """--json on drift names the difference and still fails."""
    with connections["bot"].cursor() as cursor:
        cursor.execute("ALTER TABLE drift_scratch.clients DROP COLUMN notes")
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("check_bot_schema", "--json", "--schema", scratch_schema, stdout=out)
    report = json.loads(out.getvalue())
    assert report["clean"] is False
    assert [(d["kind"], d["column"]) for d in report["differences"]] == [
        ("missing_column", "notes")
    ]


def test_check_bot_schema_command__unknown_alias_is_bad_input():
    """An unknown --database alias is a usage error naming the valid aliases."""
    with pytest.raises(CommandError, match="Unknown database alias 'nope'") as failure:
        call_command("check_bot_schema", "--database", "nope")
    assert failure.value.returncode == 2


def test_check_drift__needs_only_select_privileges():
    """The read-only production role (SELECT on the four tables) can run the drift check."""
    from django.db import ProgrammingError, transaction

    with connections["bot"].cursor() as cursor:
        cursor.execute("CREATE ROLE observability_test_ro NOLOGIN")  # rolled back with the test
        cursor.execute(
            "GRANT SELECT ON whatsapp_auth, whatsapp_keys, companies, clients "
            "TO observability_test_ro"
        )
        cursor.execute("SET LOCAL ROLE observability_test_ro")
        # The role really is read-only...
        with pytest.raises(ProgrammingError, match="permission denied"):  # noqa: SIM117
            with transaction.atomic(using="bot"):
                cursor.execute("DELETE FROM whatsapp_keys")
        # ...and the check still reads the catalogue.
        report = schema.check_drift("bot")
    assert report.clean
