"""
The snapshot refresh alone (issue 13): full recount, bare aggregate and incremental refreshes.

``run_all.py --large`` measures the same rows among everything else and takes half an hour; this
script seeds one scale once and can measure it again and again on the kept server::

    .venv/bin/python bench/bench_refresh.py --keys 10000000 --sessions 10000 \
        --data-dir var/bench-refresh/pgdata --keep
    .venv/bin/python bench/bench_refresh.py --keys 10000000 --sessions 10000 \
        --data-dir var/bench-refresh/pgdata --keep --reuse

``--reuse`` skips the seeding when the folder already holds that many keys (each run rewrites
1 % of them, as the bot does, so the data stays realistic). Prints the figures and the load
average; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_health  # noqa: E402 - the sibling scripts are modules of this folder
import bench_snapshot  # noqa: E402
import run_all  # noqa: E402


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT / "var" / "bench-refresh" / "pgdata"))
    parser.add_argument("--keys", type=int, default=1_000_000, help="Keys seeded.")
    parser.add_argument("--sessions", type=int, default=10_000, help="Sessions seeded.")
    parser.add_argument("--runs", type=int, default=3, help="Timed runs of each refresh.")
    parser.add_argument("--share", type=float, default=0.01, help="Keys changed before each.")
    parser.add_argument(
        "--storage-sessions", type=int, default=0, help="Also the 90-day storage simulation."
    )
    parser.add_argument("--skip-refresh", action="store_true", help="Only the storage.")
    parser.add_argument("--reuse", action="store_true", help="Keep the seeded data if it fits.")
    parser.add_argument("--keep", action="store_true", help="Leave the server and its folder.")
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    return parser.parse_args()


def _seeded_keys() -> int:
    """Keys in the bot's table (the planner's estimate: exact enough to tell the scale)."""
    from django.db import connections

    with connections["bot"].cursor() as cursor:
        cursor.execute("SELECT to_regclass('whatsapp_keys') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'whatsapp_keys'")
        return max(0, cursor.fetchone()[0])


def main() -> int:
    """Seed (or reuse) one scale, measure the refreshes, print them."""
    args = _arguments()
    data_dir = Path(args.data_dir).resolve()
    reuse = args.reuse and (data_dir / "PG_VERSION").exists()
    if not reuse:
        run_all._fresh_data_dir(data_dir)
    env = bench_health._env(str(data_dir))
    os.environ.update(env)
    for name in ("DATABASE_URL", "BOT_DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ["DB_APPLICATION_NAME"] = "observability-bench-client"
    run_all.SESSIONS_WANTED[0] = args.sessions

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from observability import schema

    call_command("migrate", verbosity=0)
    results: dict = {"keys": args.keys, "sessions": args.sessions, "load_start": os.getloadavg()}
    floor = None
    try:
        seeded = _seeded_keys() if reuse else 0
        if abs(seeded - args.keys) > args.keys * 0.05:
            if not reuse:
                schema.create_bot_tables("bot")
            print(f"seeding {args.keys:,} keys, {args.sessions:,} sessions ...", flush=True)
            results["seed_s"] = run_all._seed(args.keys)
            print(f"  seeded in {results['seed_s']:.0f} s", flush=True)
        else:
            print(f"reusing {seeded:,} keys in {data_dir}", flush=True)
        floor = run_all.Floor(list(connections))
        if not args.skip_refresh:
            results["snapshot"] = bench_snapshot.measure_refresh(
                floor, runs=args.runs, share=args.share
            )
        if args.storage_sessions:
            results["storage"] = bench_snapshot.measure_storage(sessions=args.storage_sessions)
    finally:
        if floor is not None:
            floor.close()
        connections.close_all()
        if not args.keep:
            run_all._stop_embedded(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)
    results["load_end"] = os.getloadavg()
    print(
        "load average at start {:.2f} {:.2f} {:.2f}, at end {:.2f} {:.2f} {:.2f}".format(
            *results["load_start"], *results["load_end"]
        )
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
