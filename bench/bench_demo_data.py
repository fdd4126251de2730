"""
Time the large demo data set (1,000 sessions / 1,000,000 keys / 100,000 clients): budget 120 s.

Starts an embedded PostgreSQL in a fresh temporary data folder, creates the bot tables, writes
``seed_demo_data --size large`` through COPY and prints the seconds; then stops the server and
removes the folder (unless ``--keep``).

Usage::

    .venv/bin/python bench/bench_demo_data.py [--seed 1] [--keep] [--check]

``--check`` exits 1 when the generation takes longer than the budget.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 120.0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="Seed of the data set.")
    parser.add_argument("--keep", action="store_true", help="Keep the server and its folder.")
    parser.add_argument("--check", action="store_true", help="Exit 1 over the budget.")
    return parser.parse_args()


def _stop_server(data_dir: Path) -> None:
    from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None  # pgserver's system user under root
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)


def main() -> int:
    """Start a fresh embedded server, time the large data set, print the result."""
    args = _arguments()
    data_dir = Path(tempfile.mkdtemp(prefix="observability-bench-demo-")) / "pgdata"
    os.environ["OBSERVABILITY_DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("BOT_DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

    started = time.monotonic()
    import django

    django.setup()  # starts the embedded server (initdb on this fresh folder)
    from observability import schema
    from observability_demo import demo_data

    try:
        schema.create_bot_tables("bot")
        ready = time.monotonic()
        summary = demo_data.seed_demo_data(demo_data.SIZES["large"], alias="bot", seed=args.seed)
        done = time.monotonic()
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _stop_server(data_dir)
            shutil.rmtree(data_dir.parent, ignore_errors=True)

    generation = done - ready
    print(
        f"large demo data set: {summary.sessions:,} sessions, {summary.keys:,} keys, "
        f"{summary.clients:,} clients, {summary.companies:,} salons"
    )
    print(f"generation (COPY into the bot tables): {generation:.1f} s")
    print(f"budget: {BUDGET_SECONDS:.0f} s")
    print(f"total with a fresh embedded server and the bot tables: {done - started:.1f} s")
    if args.keep:
        print(f"data kept in {data_dir}")
    return 1 if args.check and generation > BUDGET_SECONDS else 0


if __name__ == "__main__":
    sys.exit(main())
