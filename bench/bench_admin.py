"""
Benchmark the ops admin's server time at production scale (a script, not a timed test).

Seeds 1,000 sessions / 1,000,000 keys / 100,000 clients (``seed_demo_data --size large``) into
an embedded PostgreSQL of its own, takes a full snapshot (every page reads the stored snapshot;
no page computes verdicts per request), then times the sessions changelist, the store overview,
a session page, its key browser and the clients search by phone with Django's test client, and
prints median and p95 per page against the budgets of issue 4.

Usage::

    .venv/bin/python bench/bench_admin.py [--runs 20] [--data-dir /tmp/pg-bench-admin]
                                          [--reseed] [--check]

The data directory is reused between runs (seeding takes a few minutes); ``--reseed`` writes
the data again. ``--check`` exits 1 when a page misses its budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BUDGETS_MS = {
    "sessions changelist": 300,
    "sessions changelist ?status=FAIL": 300,
    "sessions search by phone": 300,
    "store overview": 300,
    "session page (largest session)": 100,
    "session page (median session)": 100,
    "session page (failing session)": 100,
    "key browser (page 1)": 100,
    "clients search by phone": 50,
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="Timed requests per page.")
    parser.add_argument(
        "--data-dir",
        default="/tmp/pg-bench-admin",  # noqa: S108 - a throwaway benchmark database
        help="Embedded PostgreSQL data directory of the benchmark (reused between runs).",
    )
    parser.add_argument("--reseed", action="store_true", help="Write the large data set again.")
    parser.add_argument("--check", action="store_true", help="Exit 1 when a budget is missed.")
    return parser.parse_args()


def main() -> int:
    """Seed if needed, warm up, time each page, print the table."""
    args = _arguments()
    os.environ["OBSERVABILITY_DATA_DIR"] = args.data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()

    from django.contrib.admin.utils import quote
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections
    from django.test import Client
    from django.urls import reverse

    from observability import config, schema, sessions, snapshot
    from observability.models import Client as BotClient
    from observability_demo import demo_data

    alias = config.bot_database_alias()
    call_command("migrate", verbosity=0)
    if not set(schema.BOT_TABLES) <= set(schema.existing_bot_tables(alias)):
        schema.create_bot_tables(alias)
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM whatsapp_keys")
        keys = cursor.fetchone()[0]
    if args.reseed or keys < 1_000_000:
        print("Seeding 1,000 sessions / 1,000,000 keys / 100,000 clients ...", flush=True)
        started = time.monotonic()
        summary = demo_data.seed_demo_data(demo_data.SIZES["large"], replace=True)
        print(f"  seeded in {time.monotonic() - started:.0f} s: {summary}", flush=True)
        # A fresh COPY leaves the visibility map empty: vacuum so index-only scans work, as
        # they do on the production table that autovacuum keeps.
        connections[alias].close()
        with connections[alias].cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) whatsapp_keys, whatsapp_auth, companies, clients")

    # Every page reads the stored snapshot: take a full one now, as the worker would.
    started = time.monotonic()
    snapshot.refresh(full=True)
    print(f"Full snapshot taken in {time.monotonic() - started:.1f} s.", flush=True)

    user_model = get_user_model()
    user = user_model.objects.filter(
        username="bench"
    ).first() or user_model.objects.create_superuser("bench", "bench@example.invalid", "bench")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)

    listed = snapshot.all_health()  # the sessions the pages show, as of the snapshot
    largest = max(listed, key=lambda health: health.total_keys)
    failing = next(health for health in listed if health.status == sessions.Status.FAIL)
    with_phone = next(health for health in listed if health.phone_digits)
    phone = BotClient.objects.order_by("id").values_list("phone", flat=True)[5000]
    typed = f"+{phone[0]} ({phone[1:4]}) {phone[4:7]}-{phone[7:9]}-{phone[9:]}"
    digits = with_phone.phone_digits
    typed_session = f"8 {digits[1:4]} {digits[4:7]} {digits[7:9]} {digits[9:]}"

    changelist = reverse("admin:observability_sessionstate_changelist")

    def session_page(session_id: str) -> str:
        return reverse("admin:observability_sessionstate_change", args=[quote(session_id)])

    pages = {
        "sessions changelist": (changelist, {}),
        "sessions changelist ?status=FAIL": (changelist, {"status": "FAIL"}),
        "sessions search by phone": (changelist, {"q": typed_session}),
        "store overview": (reverse("admin:observability_sessionstate_overview"), {}),
        "session page (largest session)": (session_page(largest.session_id), {}),
        "session page (failing session)": (session_page(failing.session_id), {}),
        "key browser (page 1)": (
            reverse("admin:observability_sessionstate_keys", args=[quote(largest.session_id)]),
            {},
        ),
        "clients search by phone": (
            reverse("admin:observability_client_changelist"),
            {"q": typed},
        ),
    }
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\nData: {len(listed)} sessions; largest session {largest.total_keys} keys; "
        f"{args.runs} timed runs per page after 2 warm-up runs; load average {load} "
        f"on {os.cpu_count()} cores.\n"
    )
    print(f"{'page':36} {'median ms':>10} {'p95 ms':>8} {'budget':>7} {'queries':>8}  verdict")
    missed = 0
    for name, (url, params) in pages.items():
        missed += _time_page(client, connections, alias, name, url, params, args.runs)
    print("\nqueries = default alias + bot alias, per request")
    _explain(connections[alias], phone)
    return 1 if (missed and args.check) else 0


def _time_page(client, connections, alias, name, url, params, runs) -> int:
    """Warm up, time ``runs`` requests, count one request's queries; print; 1 if missed."""
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        response = client.get(url, params)
        if response.status_code != 200:
            raise SystemExit(f"{name}: HTTP {response.status_code}")
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url, params)
        timings.append((time.perf_counter() - started) * 1000)
    with (
        CaptureQueriesContext(connections["default"]) as default,
        CaptureQueriesContext(connections[alias]) as bot,
    ):
        client.get(url, params)
    timings.sort()
    median = statistics.median(timings)
    p95 = timings[max(0, round(0.95 * len(timings)) - 1)]
    budget = BUDGETS_MS[name]
    verdict = "ok" if median < budget else "MISSED"
    queries = f"{len(default.captured_queries)}+{len(bot.captured_queries)}"
    print(f"{name:36} {median:10.1f} {p95:8.1f} {budget:7} {queries:>8}  {verdict}")
    return int(verdict != "ok")


def _explain(connection, phone: str) -> None:
    """Show that the phone search is an exact match on ``idx_clients_phone``."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE SELECT id FROM clients WHERE phone = %s", [phone])
        plan = [row[0] for row in cursor.fetchall()]
    print("\nclients phone search plan: " + " / ".join(line.strip() for line in plan[:2]))


if __name__ == "__main__":
    sys.exit(main())
