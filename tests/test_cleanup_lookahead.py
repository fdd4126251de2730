"""Batches are planned on a second connection while the first deletes, and it all stays exact."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from observability import cleanup
from observability.cleanup import lookahead
from observability.exceptions import BotDatabaseUnavailable
from observability.models import CleanupRun, WhatsAppKey
from tests import factories
from tests.test_cleanup import _raw_bot_connection, truncate_bot_tables  # noqa: F401

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


def _planner_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "cleanup-planner"]


def test_planned_ahead__yields_the_plan_in_order_from_a_thread_of_its_own():
    """The plan runs beside the consumer (another thread), and arrives whole and in order."""
    ran_on = set()

    def plan():
        for n in range(10):
            ran_on.add(threading.current_thread().name)
            yield n

    with lookahead.planned_ahead("bot", plan) as planned:
        assert list(planned) == list(range(10))
    assert ran_on == {"cleanup-planner"}
    assert _planner_threads() == []


def test_planned_ahead__a_slow_consumer_still_gets_every_item_and_the_planner_waits():
    """The planner runs at most a queue's worth ahead of a slow consumer, and loses nothing."""
    produced = []

    def plan():
        for n in range(lookahead.DEPTH + 3):
            produced.append(n)
            yield n

    received = []
    with lookahead.planned_ahead("bot", plan) as planned:
        for item in planned:
            time.sleep(0.12)  # longer than the planner's wait for room in the queue
            # Ahead of the consumer by at most the queue, plus the item in the planner's hand.
            assert len(produced) <= len(received) + 1 + lookahead.DEPTH + 1
            received.append(item)
    assert received == list(range(lookahead.DEPTH + 3))


def test_planned_ahead__a_planner_error_reaches_the_consumer_at_its_place():
    """Items planned before a failure are delivered; then the planner's own error is raised."""

    def plan():
        yield "first"
        raise BotDatabaseUnavailable()

    received = []
    with pytest.raises(BotDatabaseUnavailable), lookahead.planned_ahead("bot", plan) as planned:
        received.extend(planned)
    assert received == ["first"]
    assert _planner_threads() == []


def test_planned_ahead__the_planner_stops_when_the_consumer_stops_early():
    """An endless plan stops, a few items ahead at most, once its consumer has left."""
    produced = itertools.count()

    def plan():
        while True:
            yield next(produced)

    with lookahead.planned_ahead("bot", plan) as planned:
        assert next(planned) == 0
    assert _planner_threads() == []
    # The one consumed, the queue's worth, and the one the planner held when told to stop.
    assert next(produced) <= 1 + lookahead.DEPTH + 1


@pytest.mark.django_db(databases=["default", "bot"])
def test_planned_ahead__inside_a_callers_transaction_the_plan_runs_inline():
    """Another connection could not see the caller's uncommitted rows: plan on the caller's."""

    def plan():
        yield threading.current_thread().name

    with lookahead.planned_ahead("bot", plan) as planned:
        assert list(planned) == [threading.current_thread().name]


@pytest.mark.django_db(databases=["default", "bot"], transaction=True)
def test_cleanup_expired_keys__counts_stay_exact_when_a_row_changes_after_it_was_planned(
    truncate_bot_tables,  # noqa: F811
):
    """
    A key that does not go after its range was counted is kept, and the record stays exact.

    The data is committed, so the batches are planned on a second connection; the key
    behaves as if the bot rewrote it after the count. The planner's connection goes back to
    the pool.
    """
    now = timezone.now()
    for minute in range(10):
        factories.make_keys(
            "962302", "session", 1, seed=minute, expires_at=now - 10 * DAY - minute * MINUTE
        )
    # The key that stays is the only one of its type: the record says nothing of that type.
    factories.make_keys("962302", "pre-key", 1, expires_at=now - 10 * DAY - 90 * MINUTE)
    kept = WhatsAppKey.objects.get(key_type="pre-key").key_id
    pool = connections["bot"].pool
    in_use_before = pool.get_stats()["pool_size"] - pool.get_stats()["pool_available"]
    with _raw_bot_connection() as conn:
        conn.execute(
            "CREATE FUNCTION test_keep_row() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NULL; END $$; "
            "CREATE TRIGGER test_keep_row BEFORE DELETE ON whatsapp_keys FOR EACH ROW "
            f"WHEN (OLD.key_id = '{kept}') EXECUTE FUNCTION test_keep_row()"
        )
    try:
        report = cleanup.cleanup_expired_keys(apply=True, batch_size=4)
    finally:
        with _raw_bot_connection() as conn:
            conn.execute("DROP TRIGGER test_keep_row ON whatsapp_keys")
            conn.execute("DROP FUNCTION test_keep_row()")
    assert report.total_deleted == 10
    assert report.rows_deleted == {"*": {"session": 10}}
    assert report.total_seen == 11  # the kept key was in its range when counted
    assert report.rows_seen == {"*": {"session": 10, "pre-key": 1}}
    assert list(WhatsAppKey.objects.values_list("key_id", flat=True)) == [kept]
    run = CleanupRun.objects.get()
    assert (run.outcome, run.total_deleted, run.rows_deleted) == (
        "succeeded",
        10,
        {"*": {"session": 10}},
    )
    stats = pool.get_stats()
    assert stats["pool_size"] - stats["pool_available"] == in_use_before
    assert _planner_threads() == []
