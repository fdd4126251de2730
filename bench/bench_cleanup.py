"""
Benchmark: the batched expired-key cleanup against one bare DELETE, with a concurrent writer.

Runs on the embedded PostgreSQL only, in a database of its own (``bench_cleanup``), never on a
configured one. It loads N keys of which half expired long ago, runs the batched cleanup while
a "bot" thread keeps rewriting random keys (an upsert, as the bot does), then reloads the
identical data and runs one bare ``DELETE ... WHERE expires_at < ...`` with the same writer.
It prints both times, their ratio, and the writer's worst and p99 latency during each.

    OBSERVABILITY_DATA_DIR=/tmp/pg-bench .venv/bin/python bench/bench_cleanup.py --keys 2000000
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
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


class Writer(threading.Thread):
    """The bot: rewrites random keys (upsert, new expiry) every ~2 ms and times each write."""

    def __init__(self, total: int) -> None:
        super().__init__(daemon=True)
        self.total = total
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(1)  # noqa: S311 (which keys to rewrite, not a secret)
        with _connect() as conn:
            while not self.stop.is_set():
                g = rng.randint(1, self.total)
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
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.002)


def timed(action, total: int) -> tuple[float, list[float]]:
    """Run ``action`` with the writer going; return its time and the writer's latencies."""
    writer = Writer(total)
    writer.start()
    time.sleep(0.5)
    before = len(writer.latencies)
    started = time.monotonic()
    action()
    elapsed = time.monotonic() - started
    writer.stop.set()
    writer.join()  # a write blocked by the action ends after it: count it too
    return elapsed, writer.latencies[before:]


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
    """Load, run both, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--keys", type=int, default=2_000_000, help="total keys (half expired)")
    parser.add_argument("--batch-size", type=int, default=5000, help="cleanup batch size")
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

    print(f"loading {args.keys:,} keys ({args.keys // 2:,} expired)...", flush=True)
    load(args.keys)

    def batched_cleanup() -> None:
        report = cleanup.cleanup_expired_keys(apply=True, batch_size=args.batch_size)
        print(
            f"batched: deleted {report.total_deleted} in {report.batches} batches, "
            f"slowest {report.slowest_batch_seconds * 1000:.0f} ms"
        )

    batched, batched_writes = timed(batched_cleanup, args.keys)
    print("reloading the identical data...", flush=True)
    load(args.keys)

    def bare_delete() -> None:
        with _connect() as conn:
            deleted = conn.execute(
                f"DELETE FROM whatsapp_keys WHERE expires_at < {CUTOFF_SQL}"  # noqa: S608
            ).rowcount
        print("bare DELETE: deleted", deleted)

    bare, bare_writes = timed(bare_delete, args.keys)
    print(f"batched cleanup: {batched:.2f} s; writer: {describe(batched_writes)}")
    print(f"bare DELETE:     {bare:.2f} s; writer: {describe(bare_writes)}")
    print(f"ratio batched / bare: {batched / bare:.2f}")


if __name__ == "__main__":
    main()
