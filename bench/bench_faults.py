"""
Measure what users see while the bot database is sick (issue 15, section 4), with real processes.

Run from the project root (gunicorn is in the ``dev`` extra)::

    .venv/bin/python bench/bench_faults.py [--rounds 3] [--json]

It starts an embedded PostgreSQL in a folder of its own (``--data-dir``, default
``/tmp/observability-bench-faults/pgdata``), creates the project's tables, the bot's tables and
one session, and a staff login. Then, for each fault and each gunicorn shape (2 sync workers,
the README's deployment; 1 worker with 8 threads), a fresh gunicorn whose bot database is:

- **refused**: a closed port on 127.0.0.1;
- **hung**: a TCP server on 127.0.0.1 that accepts and never answers;
- **locked**: the real bot database with ACCESS EXCLUSIVE held on ``whatsapp_keys`` (the key
  browser, which reads that table).

Each round asks one bot page alone (the first error: the goal is 1 s refused, 3 s hung, "not
the whole lock" locked), then 20 bot pages at once with, once they are in flight, the
project's own pages (cleanup runs, users) and ``/health/db/`` (goal: under 1 s). Last, a
cleanup run started behind the lock: how long until it gives up (its 1 s lock timeout).
Figures are medians over ``--rounds`` (each round a fresh server: the breaker starts closed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA_DIR = "/tmp/observability-bench-faults/pgdata"  # noqa: S108 - a throwaway server


def _setup(data_dir: Path) -> None:
    os.environ["OBSERVABILITY_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    import django

    django.setup()
    from django.core.management import call_command

    from observability import schema

    call_command("migrate", verbosity=0)
    schema.create_bot_tables("bot", replace=True)


def _seed_and_login() -> str:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.test import Client

    with connections["bot"].cursor() as cursor:
        cursor.execute(
            "INSERT INTO whatsapp_auth (company_id, creds, updated_at) VALUES "
            "('962302', '{\"registered\": true}', now())"
        )
        cursor.execute(
            "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, updated_at, "
            "expires_at) SELECT '962302', 'session', 'k' || g, '{}', now(), "
            "now() - interval '30 days' FROM generate_series(1, 50) g"
        )
    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-faults").first()
    if user is None:
        user = user_model.objects.create_superuser("bench-faults", "b@example.com", "x")
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def _env(bot_url: str) -> dict:
    from django.conf import settings
    from django.db import connections

    from tests.fault_support import project_env, socket_url

    default = connections["default"].settings_dict
    return project_env(
        default_url=socket_url(default["HOST"], default["NAME"]),
        bot_url=bot_url,
        secret_key=settings.SECRET_KEY,
        LOG_LEVEL="CRITICAL",
    )


def _round(bot_url: str, cookie: str, shape: dict, page: str, lock: dict | None) -> dict:
    import contextlib

    from tests.fault_support import OWN_PAGES, measure_sick_bot, table_locked, web_server

    with web_server(_env(bot_url), **shape) as server:
        # Warm the processes (imports, the default pool) without touching the bot database,
        # whose first failure is what is measured; the lock is taken after a healthy key page.
        for _ in range(shape.get("workers", 1) * 2):
            server.get(OWN_PAGES[1], cookie=cookie)
        if lock is not None:
            server.get(page, cookie=cookie)
        held = table_locked(lock) if lock is not None else contextlib.nullcontext()
        with contextlib.redirect_stdout(None), held:
            timings = measure_sick_bot(server, cookie, bot_page=page)
    return {
        "first_status": timings.first_bot[0],
        "first_s": timings.first_bot[1],
        "in_flight_worst_s": timings.worst_in_flight,
        "in_flight_median_s": statistics.median(s for _, s in timings.bot),
        "in_flight_statuses": sorted({status for status, _ in timings.bot}),
        "own_worst_s": timings.worst_own,
        "own_statuses": sorted({status for _, status, _ in timings.own}),
        "health_s": timings.health[2],
        "health_default": timings.health[1],
    }


def _cleanup_behind_lock(lock: dict) -> float:
    import contextlib

    from observability import cleanup
    from observability.exceptions import QueryTimedOut
    from tests.fault_support import table_locked

    with table_locked(lock):
        started = time.monotonic()
        with contextlib.suppress(QueryTimedOut):
            cleanup.cleanup_expired_keys(apply=True)
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    _setup(args.data_dir)
    try:
        return _run(args)
    finally:
        sys.path.insert(0, str(ROOT / "bench"))
        import bench_demo_data  # the sibling script that stops an embedded server

        bench_demo_data._stop_server(args.data_dir)


def _run(args: argparse.Namespace) -> int:
    cookie = _seed_and_login()

    from django.db import connections

    from tests.fault_support import BOT_PAGE, KEYS_PAGE, HungServer, socket_url, tcp_url
    from tests.health_support import closed_port

    bot = connections["bot"].settings_dict
    lock = {"host": bot["HOST"], "dbname": bot["NAME"], "user": bot["USER"] or "postgres"}
    shapes = {
        "2 sync workers": {"workers": 2, "threads": 1},
        "1x8 threads": {"threads": 8},
        "1x32 threads": {"threads": 32},
    }
    results: dict = {}
    with HungServer() as hung:
        faults = {
            "refused": (tcp_url(closed_port()), BOT_PAGE, None),
            "hung": (tcp_url(hung.port), BOT_PAGE, None),
            "locked": (socket_url(bot["HOST"], bot["NAME"]), KEYS_PAGE, lock),
        }
        for fault, (url, page, held) in faults.items():
            for shape_name, shape in shapes.items():
                rounds = [_round(url, cookie, shape, page, held) for _ in range(args.rounds)]
                results[f"{fault}, {shape_name}"] = {
                    key: (
                        statistics.median(r[key] for r in rounds)
                        if isinstance(rounds[0][key], float)
                        else rounds[0][key]
                    )
                    for key in rounds[0]
                }
    cleanup_s = statistics.median(_cleanup_behind_lock(lock) for _ in range(args.rounds))
    results["cleanup behind the lock"] = {"gave_up_after_s": cleanup_s}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Medians of {args.rounds} round(s); each round a fresh gunicorn, breaker closed.")
    print(
        f"{'fault, server':34} {'first error':>14} {'20 in flight':>22} "
        f"{'own pages':>12} {'/health/db/':>12}"
    )
    for name, r in results.items():
        if "first_s" not in r:
            continue
        print(
            f"{name:34} {r['first_status']:>4} {r['first_s']:>7.3f} s  "
            f"{str(r['in_flight_statuses']):>6} worst {r['in_flight_worst_s']:>6.3f} s  "
            f"{r['own_worst_s']:>8.3f} s  {r['health_s']:>8.3f} s"
        )
    print(f"cleanup behind the lock: gave up after {cleanup_s:.3f} s (lock timeout 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
