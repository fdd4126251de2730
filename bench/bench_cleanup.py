"""
Benchmark: the batched cleanup of keys past their retention beside one bare DELETE of them.

Runs on the embedded PostgreSQL only, in a database of its own (``bench_cleanup``), never on a
configured one. It loads N keys shaped by the retention policy (``observability/cleanup/
policy.py``): half are per-contact records (sessions, sender keys, sender-key memory, device
lists, tctokens) last written 100 to 300 days ago, past their retention, which the cleanup
deletes; the other half it must keep: pre-keys, app-state sync keys, LID mappings and identity
keys written up to 300 days ago (most past ``expires_at``, all live) and sessions written in
the last 60 days, interleaved with the deletable rows on the ``expires_at`` index. It runs the
batched cleanup while a "bot" process keeps rewriting random keys (an upsert, as the bot
does), then reloads the identical data and runs one bare ``DELETE`` of the rows the policy
deletes, with the same writer. Each is run ``--repeat`` times (fresh data each time); it prints
the median times and the writer's median, p99 and worst latency during each. There is no goal
for the time: the cleanup is a nightly job; the goal is the writer's p99 (< 100 ms).

    OBSERVABILITY_DATA_DIR=/tmp/pg-bench .venv/bin/python bench/bench_cleanup.py --keys 2000000
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

BENCH_DATABASE = "bench_cleanup"

#: Key type of row g by g % 10: 0-4 are written 100-300 days ago (past their retention: the
#: cleanup deletes them), 5-9 are kept (7 and 9 never deleted for age, 8 written recently).
TYPES = (
    "session",
    "sender-key",
    "sender-key-memory",
    "device-list",
    "tctoken",
    "pre-key",
    "app-state-sync-key",
    "lid-mapping",
    "session",
    "identity-key",
)
#: Sessions the rows are spread over (each gets rows of every kind), as in the demo data.
SESSIONS = 1000


def _connect(autocommit: bool = True):
    import psycopg
    from django.conf import settings

    bot = settings.DATABASES["bot"]
    return psycopg.connect(
        dbname=bot["NAME"], host=bot["HOST"], user=bot["USER"], autocommit=autocommit
    )


def load(total: int) -> None:
    """Replace the keys with ``total`` rows: half past their retention, half to keep."""
    with _connect() as conn:
        conn.execute("TRUNCATE whatsapp_keys, whatsapp_auth")
        conn.execute(
            "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, created_at, "
            "updated_at, expires_at) "
            "SELECT company_id, key_type, key_id, value, written, written, written + "
            # The bot's TTL: 7 days for these types, 14 for the rest.
            "CASE WHEN key_type IN ('pre-key', 'session', 'sender-key') "
            "OR strpos(key_type, 'lid-mapping') > 0 THEN interval '7 days' "
            "ELSE interval '14 days' END "
            "FROM (SELECT 'company_' || (100000 + g / 10 %% %s) AS company_id, "
            "(%s::text[])[1 + g %% 10] AS key_type, 'k' || g AS key_id, "
            "jsonb_build_object('type', 'Buffer', 'data', md5(g::text)) AS value, "
            # Distinct write times, as the bot writes them, interleaved on the index.
            "now() - CASE "
            "WHEN g %% 10 < 5 THEN interval '100 days' + (g %% 200) * interval '1 day' "
            "WHEN g %% 10 = 8 THEN (g %% 60) * interval '1 day' "
            "ELSE (g %% 300) * interval '1 day' END + (g %% 86400000) * interval '1 millisecond' "
            " AS written FROM generate_series(1, %s) g) rows",
            [SESSIONS, list(TYPES), total],
        )
        conn.execute("VACUUM ANALYZE whatsapp_keys")
        conn.execute("CHECKPOINT")


def due_rows(total: int) -> int:
    """How many of the loaded rows the policy deletes (rows 0-4 of every 10)."""
    return sum(1 for g in range(1, total + 1) if g % 10 < 5)


def _write_like_the_bot(conninfo: dict, total: int, stop, results) -> None:
    """
    The bot: rewrite random keys (upsert, new expiry) every ~2 ms, timing each write.

    Runs in a process of its own, as the bot does: a writer thread inside the benchmark's
    process would compete with the cleanup for Python's interpreter lock, a contention the
    real bot (another program) never causes. Sends back (start, latency) pairs.
    """
    import psycopg

    rng = random.Random(1)  # noqa: S311 (which keys to rewrite, not a secret)
    writes: list[tuple[float, float]] = []
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        while not stop.is_set():
            g = rng.randint(1, total)
            started = time.monotonic()
            conn.execute(
                "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, expires_at) "
                "VALUES (%s, %s, %s, '{}', now() + interval '7 days') "
                "ON CONFLICT (company_id, key_type, key_id) DO UPDATE "
                "SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                [f"company_{100000 + g // 10 % SESSIONS}", TYPES[g % 10], f"k{g}"],
            )
            writes.append((started, time.monotonic() - started))
            time.sleep(0.002)
    results.send(writes)


def timed(action, total: int) -> tuple[float, list[float]]:
    """Run ``action`` with the writer going; return its time and the writer's latencies."""
    import multiprocessing

    from django.conf import settings

    bot = settings.DATABASES["bot"]
    conninfo = {"dbname": bot["NAME"], "host": bot["HOST"], "user": bot["USER"]}
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receiving, sending = context.Pipe(duplex=False)
    writer = context.Process(
        target=_write_like_the_bot, args=(conninfo, total, stop, sending), daemon=True
    )
    writer.start()
    time.sleep(1.0)  # the writer's interpreter starts and connects
    started = time.monotonic()
    action()
    ended = time.monotonic()
    stop.set()
    writes = receiving.recv()
    writer.join()
    # Every write that overlapped the action (one it blocked ends after it: count it too).
    return ended - started, [
        latency for start, latency in writes if start + latency >= started and start <= ended
    ]


def describe(latencies: list[float]) -> str:
    """Worst and p99 of a writer's latencies, in ms."""
    if not latencies:
        return "no writes"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(ordered)} writes, median {statistics.median(ordered) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, worst {ordered[-1] * 1000:.1f} ms"
    )


def main() -> None:
    """Load, run both (``--repeat`` times each, on fresh data), print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--keys", type=int, default=2_000_000, help="total keys (half due)")
    parser.add_argument("--batch-size", type=int, default=5000, help="cleanup batch size")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (median reported)")
    args = parser.parse_args()

    from django.conf import settings

    if not settings.EMBEDDED_DATABASE:
        sys.exit("The benchmark runs on the embedded PostgreSQL only (unset the database URLs).")
    import psycopg

    with psycopg.connect(
        dbname="postgres",
        host=settings.DATABASES["bot"]["HOST"],
        user=settings.DATABASES["bot"]["USER"],
        autocommit=True,
    ) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DATABASE]
        ).fetchone():
            conn.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    settings.DATABASES["bot"]["NAME"] = BENCH_DATABASE
    settings.DATABASES["bot"]["OPTIONS"]["options"] = "-c statement_timeout=0"
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from observability import cleanup, schema
    from observability.cleanup import policy

    call_command("migrate", verbosity=0)
    schema.create_bot_tables("bot", replace=True)
    due = due_rows(args.keys)

    def batched_cleanup() -> None:
        report = cleanup.cleanup_expired_keys(apply=True, batch_size=args.batch_size)
        print(
            f"batched: deleted {report.total_deleted} in {report.batches} batches, "
            f"slowest {report.slowest_batch_seconds * 1000:.0f} ms; kept {report.total_kept} "
            f"({', '.join(sorted({t for by in report.rows_kept.values() for t in by}))}); "
            f"{len(report.rows_deleted)} sessions counted",
            flush=True,
        )

    def bare_delete() -> None:
        where, params = policy.current(timezone.now()).due_sql("whatsapp_keys")
        with _connect() as conn:
            deleted = conn.execute(
                f"DELETE FROM whatsapp_keys WHERE {where}",  # noqa: S608
                params,
            ).rowcount
        print("bare DELETE: deleted", deleted, flush=True)

    times: dict[str, list[float]] = {"batched": [], "bare": []}
    writes: dict[str, list[float]] = {"batched": [], "bare": []}
    for run in range(1, args.repeat + 1):
        for name, action in (("batched", batched_cleanup), ("bare", bare_delete)):
            print(
                f"run {run}/{args.repeat}, {name}: loading {args.keys:,} keys "
                f"({due:,} past their retention)...",
                flush=True,
            )
            load(args.keys)
            seconds, latencies = timed(action, args.keys)
            times[name].append(seconds)
            writes[name].extend(latencies)
    batched, bare = statistics.median(times["batched"]), statistics.median(times["bare"])
    print(f"keys: {args.keys} loaded, {due} past their retention")
    print(f"batched cleanup: {batched:.2f} s; writer: {describe(writes['batched'])}")
    print(f"bare DELETE:     {bare:.2f} s; writer: {describe(writes['bare'])}")
    pairs = zip(times["batched"], times["bare"], strict=True)
    runs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in pairs)
    print(f"runs (batched/bare s): {runs}")


if __name__ == "__main__":
    main()
