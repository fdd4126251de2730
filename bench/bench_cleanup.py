"""
Benchmark: the batched expired-key cleanup against one bare DELETE, with a concurrent writer.

Runs on the embedded PostgreSQL only, in a database of its own (``bench_cleanup``), never on a
configured one. It loads N keys of which half expired long ago, runs the batched cleanup while
a "bot" process keeps rewriting random keys (an upsert, as the bot does), then reloads the
identical data and runs one bare ``DELETE ... WHERE expires_at < ...`` with the same writer.
Each pair is run ``--repeat`` times (fresh data each time); it prints the median times, their
ratio, every run's ratio, and the writer's worst and p99 latency during each kind.

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

from observability import key_types  # noqa: E402 (plain module: no Django setup needed)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

BENCH_DATABASE = "bench_cleanup"
CUTOFF_SQL = "now() - interval '7 days'"


def _connect(autocommit: bool = True):
    import psycopg
    from django.conf import settings

    bot = settings.DATABASES["bot"]
    return psycopg.connect(
        dbname=bot["NAME"], host=bot["HOST"], user=bot["USER"], autocommit=autocommit
    )


def load(total: int) -> None:
    """Replace the keys with ``total`` rows, the first half expired 30 days ago."""
    with _connect() as conn:
        conn.execute("TRUNCATE whatsapp_keys, whatsapp_auth")
        conn.execute(
            "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, created_at, "
            "updated_at, expires_at) "
            "SELECT 'company_' || (100000 + g %% 200), "
            "(ARRAY['pre-key','session','sender-key','sender-key-memory','app-state-sync-key',"
            "'app-state-sync-version','lid-mapping','device-list','tctoken'])[1 + g %% 9], "
            "'k' || g, jsonb_build_object('type', 'Buffer', 'data', md5(g::text)), "
            "now() - interval '40 days', now() - interval '40 days', "
            # Distinct expiry times, as the bot writes them (each write sets its own).
            "CASE WHEN g <= %s THEN now() - interval '30 days' + g * interval '1 millisecond' "
            "ELSE now() + interval '7 days' + g * interval '1 millisecond' END "
            "FROM generate_series(1, %s) g",
            [total // 2, total],
        )
        conn.execute("VACUUM ANALYZE whatsapp_keys")
        conn.execute("CHECKPOINT")


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
                [
                    f"company_{100000 + g % 200}",
                    key_types.KEY_TYPES[g % len(key_types.KEY_TYPES)],
                    f"k{g}",
                ],
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
    parser.add_argument("--keys", type=int, default=2_000_000, help="total keys (half expired)")
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

    from observability import cleanup, schema

    call_command("migrate", verbosity=0)
    schema.create_bot_tables("bot", replace=True)

    def batched_cleanup() -> None:
        report = cleanup.cleanup_expired_keys(apply=True, batch_size=args.batch_size)
        print(
            f"batched: deleted {report.total_deleted} in {report.batches} batches, "
            f"slowest {report.slowest_batch_seconds * 1000:.0f} ms",
            flush=True,
        )

    def bare_delete() -> None:
        with _connect() as conn:
            deleted = conn.execute(
                f"DELETE FROM whatsapp_keys WHERE expires_at < {CUTOFF_SQL}"  # noqa: S608
            ).rowcount
        print("bare DELETE: deleted", deleted, flush=True)

    times: dict[str, list[float]] = {"batched": [], "bare": []}
    writes: dict[str, list[float]] = {"batched": [], "bare": []}
    for run in range(1, args.repeat + 1):
        for name, action in (("batched", batched_cleanup), ("bare", bare_delete)):
            print(
                f"run {run}/{args.repeat}, {name}: loading {args.keys:,} keys "
                f"({args.keys // 2:,} expired)...",
                flush=True,
            )
            load(args.keys)
            seconds, latencies = timed(action, args.keys)
            times[name].append(seconds)
            writes[name].extend(latencies)
    batched, bare = statistics.median(times["batched"]), statistics.median(times["bare"])
    print(f"batched cleanup: {batched:.2f} s; writer: {describe(writes['batched'])}")
    print(f"bare DELETE:     {bare:.2f} s; writer: {describe(writes['bare'])}")
    pairs = zip(times["batched"], times["bare"], strict=True)
    runs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in pairs)
    print(f"runs (batched/bare s): {runs}")
    print(f"ratio batched / bare: {batched / bare:.2f}")


if __name__ == "__main__":
    main()
