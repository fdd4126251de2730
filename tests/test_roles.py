"""
The README's least-privilege roles, created from the README's own SQL, run everything they must.

The read-only role (the web process) opens every page and runs every health check; the cleanup
role (the worker, the cleanup commands) runs every cleanup, dry and applied. A privilege a role
lacks is a clear error naming the GRANT, with an exit code of its own, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import ProgrammingError, connections
from django.utils import timezone

from observability import cleanup
from observability.exceptions import MissingPrivilege
from observability.models import CleanupRun, WhatsAppAuth, WhatsAppKey
from tests import factories
from tests.health_support import idle_transaction
from tests.roles_support import (
    BOT_TABLES,
    CLEANUP,
    READ_ONLY,
    bot_alias_as,
    readme_roles_sql,
    readme_statements,
)

committed = pytest.mark.django_db(databases=["default", "bot"], transaction=True)

SALON = 962302


def _privileges(role: str) -> dict[str, set[str]]:
    """What ``role`` may do on each bot table, as PostgreSQL answers it."""
    found: dict[str, set[str]] = {}
    with connections["bot"].cursor() as cursor:
        for table in BOT_TABLES:
            cursor.execute(
                "SELECT p FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE']) p "
                "WHERE has_table_privilege(%s, %s, p)",
                [role, table],
            )
            found[table] = {row[0] for row in cursor.fetchall()}
    return found


def _seed_everything(now=None) -> None:
    """Expired keys, orphan keys, a salon under both spellings, a company and a client."""
    now = now or timezone.now()
    old = now - timedelta(days=20)
    factories.make_company(SALON, title="Salon")
    factories.make_client(SALON, 1)
    # The salon stored under both spellings: the bare side last written 5 days ago.
    factories.make_auth(str(SALON), written_at=now - timedelta(days=5), seed=1)
    factories.make_keys(str(SALON), "session", 3, written_at=now - timedelta(days=5), seed=1)
    factories.make_auth(f"company_{SALON}", written_at=now, seed=2)
    factories.make_keys(f"company_{SALON}", "session", 4, written_at=now, seed=2)
    # Sessions past their 90-day retention; pre-keys past expires_at, live, kept.
    past_retention = now - timedelta(days=100)
    factories.make_keys(f"company_{SALON}", "session", 5, written_at=past_retention, seed=3)
    factories.make_keys(f"company_{SALON}", "pre-key", 5, written_at=old, seed=3)
    factories.make_keys("company_777", "tctoken", 2, written_at=old, seed=4)  # orphaned


def _command(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- The roles are the README's ----------------------------------------------------------------


def test_readme_roles__statements_are_the_readme_block_with_the_test_database():
    """The statements run are the README's, only ``DATABASE bot`` renamed."""
    statements = readme_statements("test_bot")
    assert 'GRANT CONNECT ON DATABASE "test_bot" TO observability_ro' in statements
    assert len(statements) == readme_roles_sql().count(";")
    assert all(" bot " not in f" {s} " for s in statements)


@pytest.mark.django_db(databases=["default", "bot"])
def test_readme_roles__grant_exactly_the_documented_privileges(readme_roles):
    """Read-only: SELECT on the four tables; cleanup: plus DELETE on the two WhatsApp tables."""
    read_only = dict.fromkeys(BOT_TABLES, {"SELECT"})
    assert _privileges(READ_ONLY) == read_only
    assert _privileges(CLEANUP) == {
        **read_only,
        "whatsapp_auth": {"SELECT", "DELETE"},
        "whatsapp_keys": {"SELECT", "DELETE"},
    }
    with connections["bot"].cursor() as cursor:
        cursor.execute(
            "SELECT pg_has_role(%s, 'pg_monitor', 'USAGE'), "
            "pg_has_role(%s, 'pg_monitor', 'USAGE')",
            [READ_ONLY, CLEANUP],
        )
        assert cursor.fetchone() == (True, True)
        cursor.execute("SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = %s", [CLEANUP])
        assert cursor.fetchone() == (False, False)


# --- The cleanup role runs every cleanup -----------------------------------------------------


#: Each cleanup, the rows its dry run finds in ``_seed_everything`` and what its apply deletes.
CLEANUPS = {
    "expired_keys": (cleanup.cleanup_expired_keys, 5, {f"company_{SALON}": {"session": 5}}),
    "orphan_keys": (cleanup.cleanup_orphan_keys, 2, {"company_777": {"tctoken": 2}}),
    "duplicates": (
        cleanup.cleanup_duplicates,
        4,
        {str(SALON): {"session": 3, "whatsapp_auth": 1}},
    ),
}


@committed
@pytest.mark.parametrize("operation", list(CLEANUPS))
def test_cleanup_role__every_cleanup_runs_dry_then_applied(
    readme_roles, committed_bot_rows, tmp_path, settings, operation
):
    """Under the cleanup role each cleanup counts, then deletes exactly that; both recorded."""
    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    run, seen, deleted = CLEANUPS[operation]
    _seed_everything()
    keys_before = WhatsAppKey.objects.count()
    with bot_alias_as(CLEANUP):
        assert run().total_seen == seen
        applied = run(apply=True)
    assert applied.rows_deleted == deleted
    for pair in applied.duplicates:
        assert pair.verdict == "removed", pair.reason
    removed_keys = sum(
        n for by_type in deleted.values() for kind, n in by_type.items() if kind != "whatsapp_auth"
    )
    assert WhatsAppKey.objects.count() == keys_before - removed_keys
    assert list(CleanupRun.objects.values_list("dry_run", "outcome").order_by("id")) == [
        (True, "succeeded"),
        (False, "succeeded"),
    ]


@committed
@pytest.mark.parametrize("name", ["cleanup_duplicates", "cleanup_orphan_keys"])
def test_cleanup_role__apply_commands_with_nothing_to_delete(
    readme_roles, committed_bot_rows, name
):
    """The issue's reproduction: --apply under the cleanup role with nothing to delete works."""
    factories.make_auth(str(SALON))
    with bot_alias_as(CLEANUP):
        report = json.loads(_command(name, "--apply", "--json"))
    assert report["total_deleted"] == 0
    assert CleanupRun.objects.get().outcome == "succeeded"


# --- A missing privilege: a clear message naming the GRANT, exit code 7, JSON, the record ------


@committed
def test_read_only_role__applied_cleanup_names_the_grant(readme_roles, committed_bot_rows):
    """The web role asked to delete: exit 8, JSON naming the GRANT, the run recorded failed."""
    factories.make_keys("company_777", "tctoken", 2, written_at=timezone.now() - timedelta(20))
    out = StringIO()
    with bot_alias_as(READ_ONLY), pytest.raises(CommandError) as raised:
        call_command("cleanup_orphan_keys", "--apply", "--json", stdout=out, stderr=StringIO())
    assert raised.value.returncode == MissingPrivilege.exit_code == 8
    grant = "GRANT SELECT, DELETE ON whatsapp_keys TO observability_ro;"
    assert grant in str(raised.value)
    error = json.loads(out.getvalue())["error"]
    assert error["code"] == "missing_privilege"
    assert grant in error["message"]
    run = CleanupRun.objects.get()
    assert run.outcome == "failed"
    assert grant in run.error
    assert "Unexpected error" not in run.error
    assert WhatsAppKey.objects.count() == 2


@committed
def test_cleanup_role__restore_needs_insert_and_says_so(
    readme_roles, committed_bot_rows, tmp_path, settings
):
    """Restoring under the cleanup role (no INSERT) names the GRANT; nothing is inserted."""
    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    _seed_everything()
    path = cleanup.cleanup_duplicates(apply=True).backup_paths[0]
    with bot_alias_as(CLEANUP), pytest.raises(MissingPrivilege) as raised:
        cleanup.restore_backup(path, apply=True)
    assert raised.value.grant == "GRANT SELECT, INSERT ON whatsapp_auth TO observability_cleanup;"
    assert not WhatsAppAuth.objects.filter(company_id=str(SALON)).exists()
    restore = CleanupRun.objects.get(operation="restore")
    assert restore.outcome == "failed" and raised.value.grant in restore.error


# --- The read-only role opens every page and runs every check --------------------------------


def _answers(client, urls) -> dict[str, int]:
    return {url: client.get(url).status_code for url in urls}


@committed
def test_read_only_role__every_page_answers_as_for_the_owner(
    readme_roles, committed_bot_rows, admin_client, settings
):
    """Every URL (admin pages, health checks, metrics) answers the same as for the owner."""
    from observability import snapshot
    from tests.test_security import every_url

    _seed_everything()
    with bot_alias_as(READ_ONLY):  # the snapshot needs SELECT only, full or incremental
        snapshot.refresh(full=True)
        snapshot.refresh(full=False)
    admin_client.raise_request_exception = False
    urls = every_url()
    as_owner = _answers(admin_client, urls)
    assert sum(1 for status in as_owner.values() if status == 200) > 20
    with bot_alias_as(READ_ONLY):
        as_read_only = _answers(admin_client, urls)
        health = admin_client.get("/health/", {"format": "json"}).json()
        store = admin_client.get("/health/whatsapp/", {"format": "json"}).json()
    assert as_read_only == as_owner
    assert not [m for m in health.values() if "privilege" in m or "permission" in m], health
    assert store["WhatsAppStore()"] != "OK"  # the store was read: the twin salon is found


@pytest.mark.django_db(databases=["default", "bot"])
def test_read_only_role__sees_other_services_idle_in_transaction(readme_roles, settings):
    """pg_monitor lets the web role see another role's session idle in a transaction."""
    from observability import activity

    settings.OBSERVABILITY_IDLE_IN_TRANSACTION_WARNING = timedelta(0)
    with idle_transaction("bot-service-under-test"), bot_alias_as(READ_ONLY):
        services = activity.server_activity().by_service()
    assert services["bot-service-under-test"].idle_in_transaction == 1


@committed
def test_cleanup_role__stale_side_written_during_removal_is_kept(
    readme_roles, committed_bot_rows, tmp_path, settings, monkeypatch
):
    """The bot writes the stale side after the decision: the removal is rolled back, refused."""
    from observability.cleanup import duplicates
    from tests.roles_support import owner_connection

    settings.OBSERVABILITY_CLEANUP_BACKUP_DIR = tmp_path
    _seed_everything()
    decided = duplicates.find_duplicates

    def decide_then_bot_writes(*args, **kwargs):
        pairs = decided(*args, **kwargs)
        with owner_connection() as bot:  # the bot's own session, committed at once
            bot.execute(
                "UPDATE whatsapp_keys SET updated_at = now() "
                "WHERE company_id = %s AND key_id = (SELECT min(key_id) FROM whatsapp_keys "
                "WHERE company_id = %s)",
                [str(SALON), str(SALON)],
            )
        return pairs

    monkeypatch.setattr(duplicates, "find_duplicates", decide_then_bot_writes)
    with bot_alias_as(CLEANUP):
        report = cleanup.cleanup_duplicates(apply=True)
    (pair,) = report.duplicates
    assert pair.verdict == "refused"
    assert pair.reason.startswith("the sessions changed while the cleanup ran")
    assert WhatsAppKey.objects.filter(company_id=str(SALON)).count() == 3
    assert WhatsAppAuth.objects.filter(company_id=str(SALON)).exists()
    assert report.total_deleted == 0 and list(tmp_path.iterdir()) == []


@pytest.fixture
def role_without_grants():
    """A login role that may connect and nothing else (a forgotten GRANT), dropped afterwards."""
    from tests.roles_support import owner_connection

    with owner_connection() as owner:
        owner.execute("DROP ROLE IF EXISTS observability_nothing")
        owner.execute("CREATE ROLE observability_nothing LOGIN")
    yield "observability_nothing"
    with owner_connection() as owner:
        owner.execute("DROP ROLE observability_nothing")


@committed
def test_missing_grant__pages_and_checks_answer_503_naming_the_grant(
    committed_bot_rows, admin_client, role_without_grants, settings
):
    """A role lacking SELECT: the page is a 503 naming the GRANT; the failed snapshot says it."""
    from observability import snapshot

    admin_client.raise_request_exception = False
    grant = "GRANT SELECT ON companies TO observability_nothing;"
    with bot_alias_as(role_without_grants):
        page = admin_client.get("/admin/observability/company/")
        as_json = admin_client.get("/admin/observability/company/", HTTP_ACCEPT="application/json")
        with pytest.raises(MissingPrivilege):
            snapshot.refresh(full=True)
        check = admin_client.get("/health/snapshot/", {"format": "json"}).json()
    assert page.status_code == 503
    assert grant in page.content.decode()
    assert "Database privilege missing" in page.content.decode()
    assert as_json.status_code == 503
    assert as_json.json()["error"]["code"] == "missing_privilege"
    assert "GRANT SELECT ON whatsapp_" in check["SnapshotFreshness()"]


@contextlib.contextmanager
def _connect_revoked():
    """The test bot database refuses every role without its own CONNECT grant, for a while."""
    from tests.roles_support import owner_connection

    database = connections["bot"].settings_dict["NAME"]
    with owner_connection() as owner:
        owner.execute(f'REVOKE CONNECT ON DATABASE "{database}" FROM PUBLIC')
    try:
        yield database
    finally:
        with owner_connection() as owner:
            owner.execute(f'GRANT CONNECT ON DATABASE "{database}" TO PUBLIC')


@pytest.mark.django_db(databases=["default", "bot"])
def test_missing_grant__connect_refused_at_login_names_the_grant(role_without_grants):
    """A role the database refuses at login (no CONNECT): MissingPrivilege naming the GRANT."""
    import psycopg

    from observability.exceptions import translate_database_errors

    with (
        _connect_revoked() as database,
        bot_alias_as(role_without_grants) as wrapper,
        pytest.raises(MissingPrivilege) as raised,
    ):
        params = wrapper.get_connection_params()
        params.pop("pool", None)
        with translate_database_errors("bot"):
            psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"})
    assert raised.value.grant == f"GRANT CONNECT ON DATABASE {database} TO observability_nothing;"


@pytest.mark.django_db(databases=["default", "bot"])
def test_missing_grant__database_check_names_the_grant(role_without_grants):
    """The database health check of a role refused at login says which GRANT is missing."""
    from health_check.exceptions import ServiceUnavailable

    from observability.health_checks import Database
    from tests.health_support import extra_alias

    options = {k: v for k, v in connections.settings["bot"]["OPTIONS"].items() if k != "pool"}
    with (
        _connect_revoked() as database,
        extra_alias("no_connect", USER=role_without_grants, OPTIONS=options) as alias,
        pytest.raises(ServiceUnavailable) as raised,
    ):
        Database(alias=alias).run()
    assert f"GRANT CONNECT ON DATABASE {database} TO observability_nothing;" in str(raised.value)


@committed
@pytest.mark.parametrize(
    ("role", "argv"),
    [
        (READ_ONLY, ["check_bot_schema", "--json"]),
        (READ_ONLY, ["take_snapshot", "--full"]),
        (CLEANUP, ["take_snapshot", "--full"]),  # the worker's schedule
    ],
    ids=["check_bot_schema", "take_snapshot-ro", "take_snapshot-worker"],
)
def test_reading_commands__work_under_the_roles(readme_roles, committed_bot_rows, role, argv):
    """The drift check and the snapshot need no more than the roles grant."""
    # whatsapp_sessions reads no bot table: the SELECT-revoked test below runs it.
    _seed_everything()
    with bot_alias_as(role):
        out = _command(*argv)
    if "--json" in argv:
        assert "error" not in json.loads(out)
    if argv[0] == "check_bot_schema":
        assert json.loads(out)["clean"] is True


@committed
def test_missing_grant__refused_at_login_page_names_the_grant(
    committed_bot_rows, admin_client, role_without_grants
):
    """Through the pool and its breaker, a role without CONNECT still gets the GRANT named."""
    admin_client.raise_request_exception = False
    with _connect_revoked() as database, bot_alias_as(role_without_grants):
        pages = [admin_client.get("/admin/observability/company/") for _ in range(2)]
    grant = f"GRANT CONNECT ON DATABASE {database} TO observability_nothing;"
    for page in pages:  # the second one is refused by the open breaker: same answer
        assert page.status_code == 503
        assert grant in page.content.decode()


# --- The snapshot is the only source: SELECT revoked after a snapshot --------------------------


@pytest.fixture
def select_revoked(readme_roles):
    """
    The web role's SELECT on the four bot tables revoked (CONNECT and pg_monitor kept).

    Granted back afterwards, so the session's other tests keep the README's grants.
    """
    from psycopg import sql

    from tests.roles_support import owner_connection

    tables = sql.SQL(", ").join(map(sql.Identifier, BOT_TABLES))
    role = sql.Identifier(READ_ONLY)
    with owner_connection() as owner:
        owner.execute(sql.SQL("REVOKE SELECT ON {} FROM {}").format(tables, role))
    try:
        yield READ_ONLY
    finally:
        with owner_connection() as owner:
            owner.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(tables, role))


def _banner(page: str) -> str:
    """The freshness banner's text (``#health-freshness``), tags stripped."""
    import re

    found = re.search(r'<p [^>]*id="health-freshness"[^>]*>(.*?)</p>', page, re.DOTALL)
    assert found, "no freshness banner on the page"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


@committed
def test_read_only_role__select_revoked_after_a_snapshot_pages_answer_from_it(
    readme_roles, committed_bot_rows, admin_client, request
):
    """SELECT revoked after a snapshot: pages, store check and whatsapp_sessions still answer."""
    from observability import snapshot
    from observability.admin.sessions import changelist_url, overview_url, session_url

    _seed_everything()
    with bot_alias_as(READ_ONLY):
        snapshot.refresh(full=True, now=timezone.now() - timedelta(minutes=2))
    request.getfixturevalue("select_revoked")
    twin = f"company_{SALON}"
    admin_client.raise_request_exception = False
    with bot_alias_as(READ_ONLY):
        with pytest.raises(ProgrammingError, match="permission denied"):  # the revoke holds
            WhatsAppKey.objects.count()
        pages = {
            name: admin_client.get(url)
            for name, url in (
                ("changelist", changelist_url()),
                ("overview", overview_url()),
                ("session page", session_url(twin)),
            )
        }
        store = admin_client.get("/health/whatsapp/", {"format": "json"})
        listed = {
            item["session_id"]: item
            for item in json.loads(_command("whatsapp_sessions", "--json"))
        }
    assert listed[twin]["status"] == "FAIL"  # the operator's command agrees with the pages
    for name, response in pages.items():
        page = response.content.decode()
        assert response.status_code == 200, name
        assert _banner(page).endswith("2 minutes ago (full)."), (name, _banner(page))
        assert twin in page, name
    # The session page's keys and charts are read live: it says why they cannot be.
    assert "GRANT SELECT ON whatsapp_" in pages["session page"].content.decode()
    assert store.status_code == 500  # the salon under both spellings, as of the snapshot
    message = store.json()["WhatsAppStore()"]
    assert f"{SALON} + {twin}" in message
    assert "2 minutes ago" in message
    assert 120 <= int(store["X-Snapshot-Age"]) < 180
