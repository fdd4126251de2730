"""Insights into the bot's database, each panel driven from real server state."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connections, transaction
from django.urls import reverse
from django.utils import timezone

from observability import insights
from observability.models import TableSizeSample
from tests import factories
from tests.health_support import (
    committed_bot_sql,
    connection_params,
    idle_transaction,
)

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

READ_ONLY_ROLE = "observability_insights_ro"


def _panel(reader):
    with insights.bounded_cursor() as cursor:
        return reader(cursor)


@contextlib.contextmanager
def held_lock(table: str = "whatsapp_auth"):
    """
    A real lock conflict: one connection holds a table lock, another waits for it in a thread.

    Yields the holder's and the waiter's backend pids once the waiter is seen waiting.
    """
    holder = psycopg.connect(**{**connection_params("bot", "bot-writer"), "autocommit": False})
    waiter = psycopg.connect(**{**connection_params("bot", "bot-reader"), "autocommit": False})
    # The bot alias's options carry the web's lock_timeout; this waiter waits until released.
    waiter.execute("SET lock_timeout = 0")
    waiter.commit()
    holder.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    holder_pid, waiter_pid = holder.info.backend_pid, waiter.info.backend_pid

    def wait() -> None:
        with contextlib.suppress(psycopg.Error):
            waiter.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    try:
        with psycopg.connect(**connection_params("bot", "insights-test-observer")) as observer:
            for _ in range(200):
                (waiting,) = observer.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE pid = %s AND wait_event_type = 'Lock'",
                    [waiter_pid],
                ).fetchone()
                if waiting:
                    break
                time.sleep(0.02)
        time.sleep(0.2)  # a measurable wait
        yield holder_pid, waiter_pid
    finally:
        holder.rollback()
        thread.join(5)
        waiter.rollback()
        holder.close()
        waiter.close()


def test_sizes__every_bot_table_and_index_with_its_size():
    """The four tables and their indexes are listed; a table with rows takes space."""
    factories.make_keys("9100", "session", 50)
    sizes = _panel(insights.read_sizes)
    tables = {s.relation for s in sizes if s.kind == "table"}
    assert tables == {"whatsapp_auth", "whatsapp_keys", "companies", "clients"}
    indexes = {s.relation for s in sizes if s.kind == "index"}
    assert {"idx_whatsapp_keys_expires", "idx_whatsapp_keys_expires_cleanup"} <= indexes
    keys_table = next(s for s in sizes if s.relation == "whatsapp_keys")
    assert keys_table.bytes > 0 and keys_table.table == "whatsapp_keys"


def test_duplicates__the_cleanup_expiry_index_repeats_the_expiry_index():
    """The schema's duplicate index is found, with its size and the exact DROP statement."""
    duplicates = {d.index: d for d in _panel(insights.read_duplicates)}
    dup = duplicates["idx_whatsapp_keys_expires_cleanup"]
    assert dup.duplicate_of == "idx_whatsapp_keys_expires"
    assert dup.drop_statement == "DROP INDEX CONCURRENTLY idx_whatsapp_keys_expires_cleanup;"
    with connections["bot"].cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('idx_whatsapp_keys_expires_cleanup')")
        assert dup.bytes == cursor.fetchone()[0]
    # The primary key is never the one to drop; the plain index repeating it is.
    assert "whatsapp_auth_pkey" not in duplicates
    assert duplicates["idx_whatsapp_auth_company"].duplicate_of == "whatsapp_auth_pkey"
    # Different columns are no duplicate.
    assert "idx_whatsapp_keys_type_company" not in duplicates


def test_indexes__unused_excludes_constraint_indexes():
    """Never-scanned plain indexes are unused; unique and primary key indexes never are."""
    indexes = _panel(insights.read_indexes)
    by_name = {index.index: index for index in indexes}
    assert by_name["whatsapp_auth_pkey"].unique and not by_name["whatsapp_auth_pkey"].unused
    unused = [index for index in indexes if index.unused]
    assert all(index.scans == 0 and not index.unique for index in unused)
    assert by_name["idx_clients_phone"].definition.startswith("CREATE INDEX idx_clients_phone")


def test_blocking__a_real_held_lock_names_both_sides_without_query_text():
    """A connection waiting on another's table lock shows both pids, apps, the relation."""
    with held_lock() as (holder_pid, waiter_pid):
        found = _panel(insights.read_blocking)
    row = next(b for b in found if b.blocked_pid == waiter_pid)
    assert (row.blocking_pid, row.blocking_application) == (holder_pid, "bot-writer")
    assert row.blocked_application == "bot-reader" and row.blocked_command == "LOCK"
    assert row.relation == "whatsapp_auth" and row.lock_mode == "ShareRowExclusiveLock"
    assert row.waiting_seconds >= 0.1 and row.blocking_state == "idle in transaction"
    assert not hasattr(row, "query")


def test_long_transactions__an_open_transaction_past_the_threshold(settings):
    """A transaction left open shows with its application name, state and age."""
    settings.OBSERVABILITY_INSIGHTS_LONG_TRANSACTION_AFTER = timedelta(0)
    with idle_transaction("bot-forgotten-transaction"):
        time.sleep(0.05)
        found = _panel(insights.read_long_transactions)
    row = next(x for x in found if x.application == "bot-forgotten-transaction")
    assert row.state == "idle in transaction" and row.command == "SELECT"
    assert row.transaction_seconds > 0
    settings.OBSERVABILITY_INSIGHTS_LONG_TRANSACTION_AFTER = timedelta(hours=1)
    assert not [
        x for x in _panel(insights.read_long_transactions) if x.application.startswith("bot-")
    ]


def test_activity__dead_tuples_after_a_committed_delete():
    """Keys inserted then deleted (committed) show as dead tuples of whatsapp_keys."""
    before = {t.table: t for t in _panel(insights.read_activity)}["whatsapp_keys"].dead_tuples
    with psycopg.connect(**connection_params("bot", "insights-test-writer")) as writer:
        writer.execute(
            "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value) "
            "SELECT 'insights-dead', 'session', n::text, '{}' FROM generate_series(1, 300) n"
        )
        writer.execute("DELETE FROM whatsapp_keys WHERE company_id = 'insights-dead'")
        writer.execute("SELECT pg_stat_force_next_flush()")
    after = before
    for _ in range(100):  # the writer's backend flushes its counters as it goes idle
        after = {t.table: t for t in _panel(insights.read_activity)}["whatsapp_keys"]
        if after.dead_tuples >= before + 300:
            break
        time.sleep(0.05)
    assert after.dead_tuples >= before + 300
    assert 0 < after.dead_share <= 1


def test_top_queries__absent_extension_says_how_to_enable_it():
    """Without pg_stat_statements the panel explains how to enable it (no error)."""
    data = insights.read()
    assert not data.statements_installed
    assert data.top_queries.error == insights.STATEMENTS_HOWTO
    assert "shared_preload_libraries" in data.top_queries.error
    assert data.duplicates.rows and not data.sizes.error


def test_top_queries__normalised_text_scrubbed_of_any_literal():
    """Rows of the statements view come out slowest first, any quoted literal replaced."""
    with connections["bot"].cursor() as cursor:  # the extension's view, as the test DB lacks it
        cursor.execute(
            "CREATE TABLE pg_stat_statements (queryid bigint, calls bigint, "
            "total_exec_time float8, mean_exec_time float8, rows bigint, query text, dbid oid)"
        )
        cursor.execute(
            "INSERT INTO pg_stat_statements SELECT 1, 10, 500, 50, 10, "
            "'SELECT * FROM whatsapp_keys WHERE company_id = $1', oid "
            "FROM pg_database WHERE datname = current_database() UNION ALL "
            "SELECT 2, 1, 900, 900, 0, 'ALTER ROLE bot PASSWORD ''hunter2''', oid "
            "FROM pg_database WHERE datname = current_database()"
        )
    data = insights.read()
    assert data.statements_installed and not data.top_queries.error
    first, second = data.top_queries.rows
    assert (first.queryid, first.total_ms) == (2, 900.0)
    assert first.text == "ALTER ROLE bot PASSWORD '…'"
    assert second.text == "SELECT * FROM whatsapp_keys WHERE company_id = $1"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "INSERT INTO t VALUES ('{\"noiseKey\": 1}', E'x\\'y')",
            "INSERT INTO t VALUES ('…', '…')",
        ),
        ("SELECT $tag$secret$tag$, $$x$$, $1", "SELECT '…', '…', $1"),
        ("SELECT  1\n  FROM   t", "SELECT … FROM t"),
        (
            "SELECT * FROM clients WHERE phone = 79001234567 AND t2.x > 1.5e3 LIMIT $2",
            "SELECT * FROM clients WHERE phone = … AND t2.x > … LIMIT $2",
        ),
        (
            "SELECT 1 /* user=ops@x.ru id=42 */ FROM t -- don't 'show'\nWHERE a = 'it''s -- no'",
            "SELECT … FROM t WHERE a = '…'",
        ),
    ],
)
def test_scrub_query__literals_never_shown(text, shown):
    """Literals become '…' and bare numbers …, comments go; whitespace folds."""
    assert insights.scrub_query(text) == shown


def test_scrub_query__long_text_is_cut():
    """A long statement is cut to the page's limit with an ellipsis."""
    scrubbed = insights.scrub_query("SELECT " + "x, " * 500)
    assert len(scrubbed) == insights.QUERY_TEXT_LIMIT and scrubbed.endswith("…")


def test_read__a_panel_that_times_out_says_so_and_the_others_show(settings):
    """A table locked exclusively makes the sizes panel time out; the lock panels still work."""
    settings.OBSERVABILITY_INSIGHTS_STATEMENT_TIMEOUT = timedelta(milliseconds=300)
    holder = psycopg.connect(**{**connection_params("bot", "bot-migration"), "autocommit": False})
    try:
        holder.execute("LOCK TABLE companies IN ACCESS EXCLUSIVE MODE")
        data = insights.read()
    finally:
        holder.rollback()
        holder.close()
    assert "timed out" in data.sizes.error.lower() or "cancel" in data.sizes.error.lower()
    assert not data.sizes.rows
    assert not data.blocking.error and not data.long_transactions.error


@pytest.fixture
def read_only_role():
    """The bot connection acting as a role with SELECT on the four tables and pg_monitor only."""
    exists = f"SELECT 1 FROM pg_roles WHERE rolname = '{READ_ONLY_ROLE}'"  # noqa: S608
    committed_bot_sql(
        f"DO $$ BEGIN IF NOT EXISTS ({exists}) "
        f"THEN CREATE ROLE {READ_ONLY_ROLE} LOGIN; END IF; END $$"
    )
    committed_bot_sql(
        f"GRANT SELECT ON whatsapp_auth, whatsapp_keys, companies, clients TO {READ_ONLY_ROLE}"
    )
    committed_bot_sql(f"GRANT pg_monitor TO {READ_ONLY_ROLE}")
    with connections["bot"].cursor() as cursor:
        # SET ROLE drops the test user's superuser rights: every check is made as the role.
        cursor.execute(f"SET ROLE {READ_ONLY_ROLE}")
        try:
            yield READ_ONLY_ROLE
        finally:
            cursor.execute("RESET ROLE")


def test_read__every_panel_works_under_the_read_only_role(read_only_role):
    """SELECT on the bot tables and pg_monitor are enough for every panel, locks included."""
    with connections["bot"].cursor() as cursor:
        cursor.execute(
            "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        )
        assert cursor.fetchone() == (READ_ONLY_ROLE, False)
        with pytest.raises(Exception, match="permission denied"), transaction.atomic(using="bot"):
            cursor.execute("DELETE FROM whatsapp_keys")
    with held_lock() as (holder_pid, _waiter_pid):
        data = insights.read()
    for name in ("sizes", "activity", "indexes", "duplicates", "blocking", "long_transactions"):
        assert getattr(data, name).error == "", name
    assert any(d.index == "idx_whatsapp_keys_expires_cleanup" for d in data.duplicates.rows)
    assert any(b.blocking_pid == holder_pid for b in data.blocking.rows)
    assert {s.relation for s in data.sizes.rows} >= {"whatsapp_keys", "clients"}


def test_capture_sizes__stores_samples_and_forgets_old_ones(settings):
    """Each capture stores every relation; samples past retention go; history is per day."""
    now = timezone.now()
    old = now - timedelta(days=100)
    TableSizeSample.objects.create(
        taken_at=old, table="clients", relation="clients", kind="table", bytes=1
    )
    stored = insights.capture_sizes(now=now - timedelta(days=1))
    assert stored == TableSizeSample.objects.filter(taken_at=now - timedelta(days=1)).count()
    insights.capture_sizes(now=now)
    assert not TableSizeSample.objects.filter(taken_at=old).exists()
    history = insights.size_history(now=now)
    assert set(history) == {"whatsapp_auth", "whatsapp_keys", "companies", "clients"}
    assert len(history["whatsapp_keys"]) == 2
    total = sum(
        s.bytes for s in TableSizeSample.objects.filter(taken_at=now, table="whatsapp_keys")
    )
    assert history["whatsapp_keys"][-1].bytes == total


def test_capture_table_sizes_task__stores_the_sizes():
    """The hourly job stores one sample per relation."""
    from observability import tasks

    assert tasks.capture_table_sizes() == TableSizeSample.objects.count() > 0


def test_insights_page__shows_each_panel_and_is_linked(admin_client):
    """The page shows sizes, the duplicate's DROP statement, the how-to; index links to it."""
    insights.capture_sizes()
    url = reverse("admin:observability_insights")
    with held_lock():
        html = admin_client.get(url).content.decode()
    assert "DROP INDEX CONCURRENTLY idx_whatsapp_keys_expires_cleanup;" in html
    assert "bot-writer" in html and "bot-reader" in html and "ShareRowExclusiveLock" in html
    assert "CREATE EXTENSION pg_stat_statements" in html
    assert 'class="obs-size-chart"' in html and "whatsapp_keys" in html
    assert "style=" not in html.split('id="content-main"')[1]
    assert url in admin_client.get(reverse("admin:index")).content.decode()
    overview = admin_client.get(reverse("admin:observability_sessionstate_overview"))
    assert url in overview.content.decode()


def test_insights_page__needs_its_permission(client, django_user_model):
    """Staff without the view permission on size samples get 403."""
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:observability_insights")).status_code == 403


def test_insights_page__refuses_a_parameter_it_does_not_offer(admin_client):
    """Like every admin page, ``?anything=`` is a 400 naming the parameter, before any query."""
    url = reverse("admin:observability_insights")
    response = admin_client.get(url + "?table=whatsapp_auth")
    assert response.status_code == 400
    assert "table" in response.content.decode()
    assert admin_client.get(url).status_code == 200


def test_insights_page__growth_charts_label_their_days_and_scale():
    """Two weeks of samples: UTC days under the bars (first, last, some between), size on top."""
    from datetime import UTC, datetime

    from django.template.defaultfilters import filesizeformat

    from observability.admin.insights import _size_charts

    start = datetime(2026, 11, 17, 23, 30, tzinfo=UTC)
    points = [
        insights.SizePoint(start + timedelta(days=n), 1_000_000 + n * 50_000) for n in range(14)
    ]
    (chart,) = _size_charts({"whatsapp_keys": points})
    labels = [tick.label for tick in chart["ticks"]]
    assert labels[0] == "2026-11-17" and labels[-1] == "2026-11-30"
    assert len(labels) >= 3  # and a day between
    assert filesizeformat(chart["top"]) == "1.6\xa0MB"
    assert chart["top_y"] < min(bar["y"] for bar in chart["bars"]) + 1
