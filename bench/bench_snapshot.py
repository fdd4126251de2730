"""
The stored snapshot's costs (issue 13), measured by ``bench/run_all.py`` on its seeded server.

- ``measure_refresh``: a full recount, an incremental refresh after 1 % of the keys were
  rewritten, and the floor: the aggregate SQL of a full recount replayed bare;
- ``measure_storage``: the bytes of the snapshot tables for 1,000 sessions over 90 days of
  simulated changes (the retention period), against the 100 MB budget.

Both run inside ``run_all``'s Django set-up (``django.setup()`` done, the bot tables seeded).
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import timedelta

#: Budget for the snapshot tables of 1,000 sessions over 90 days.
STORAGE_BUDGET_MB = 100
#: An incremental refresh after 1 % of the keys changed must take less than this.
INCREMENTAL_GOAL_S = 1.0

#: A busy minute for the second incremental measurement: this share of the sessions each
#: rewrite this many contacts' ``session`` rows (the changes spread over whole sessions).
BUSY_SESSIONS_SHARE = 0.05
BUSY_ROWS_EACH = 10

#: Simulated change rows per session and day, from what Baileys writes (baileys-facts.md):
#: creds on every reconnect (stored as one row per session and day with the count, however
#: many), a pre-key for each message it failed to decrypt twice, a top-up when the server runs
#: low, per-contact session rows lost to cleanup, and a status change now and then. Generous on
#: purpose: the budget must hold for a troubled fleet, not a quiet one.
CHANGES_PER_DAY = {
    "creds_rewritten": 1.0,
    "prekey_one_by_one": 1.0,
    "prekeys_topped_up": 0.3,
    "session_rows_lost": 0.5,
    "status": 0.4,
}


#: A typical detail of each kind, as the refresh writes it.
DETAILS = {
    "creds_rewritten": "14 rewrites, last at 22:41 UTC",
    "prekey_one_by_one": "nextPreKeyId 1204 → 1205",
    "prekeys_topped_up": "nextPreKeyId 1205 → 1210",
    "session_rows_lost": "'session' rows 84 → 61",
    "status": "",
}


#: The data each kind carries for the history detectors and the alerts, as the refresh writes it.
DATA = {
    "creds_rewritten": {"was": "OK"},
    "prekey_one_by_one": {"old": 1204, "new": 1205, "was": "OK"},
    "prekeys_topped_up": {"old": 1205, "new": 1210, "was": "OK"},
    "session_rows_lost": {"was": "OK"},
    "status": {"rules": ["silence"]},
}


def _rewrite_share(share: float) -> tuple[int, int]:
    """
    Rewrite ``share`` of the keys as the bot does (``expires_at`` = now + life): counted rows.

    A ``TABLESAMPLE SYSTEM`` sample takes whole pages, so the changed keys cluster in the
    sessions whose rows sit together, as a minute of real traffic does (the salons that had
    messages); the number of sessions touched is returned with the rows.
    """
    from django.db import connections

    from observability import key_types

    short = [kind for kind in key_types.KEY_TYPES if kind in key_types.SHORT_LIVED_KEY_TYPES]
    with connections["bot"].cursor() as cursor:
        # The bot alias's statement timeout is for pages; this is the benchmark's own writer.
        cursor.execute("SET statement_timeout = 0")
        cursor.execute(
            """
            WITH picked AS (
                SELECT company_id, key_type, key_id
                  FROM whatsapp_keys TABLESAMPLE SYSTEM (%(percent)s)
            )
            UPDATE whatsapp_keys AS k
               SET expires_at = now() + CASE
                       WHEN k.key_type = ANY(%(short)s) OR k.key_type LIKE '%%lid-mapping%%'
                       THEN interval '7 days' ELSE interval '14 days' END
              FROM picked
             WHERE (k.company_id, k.key_type, k.key_id)
                 = (picked.company_id, picked.key_type, picked.key_id)
         RETURNING k.company_id
            """,
            {"percent": share * 100, "short": short},
        )
        touched = [row[0] for row in cursor.fetchall()]
        cursor.execute("RESET statement_timeout")
    return len(touched), len(set(touched))


def _rewrite_sessions(share: float, each: int) -> tuple[int, int]:
    """
    ``share`` of the sessions, chosen at random, each rewrite ``each`` of their contacts' rows.

    A minute of messages as Baileys stores them: every message encrypted or decrypted rewrites
    that contact's ``session`` row (``storeSession``), ``expires_at`` = now + 7 days.
    """
    from django.db import connections

    with connections["bot"].cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")  # the benchmark's own writer
        cursor.execute(
            """
            WITH chosen AS (
                SELECT company_id FROM whatsapp_auth
                 ORDER BY random() LIMIT greatest(1, round(%(share)s * (
                     SELECT count(*) FROM whatsapp_auth)))
            ), picked AS (
                SELECT k.company_id, k.key_type, k.key_id
                  FROM chosen, LATERAL (
                        SELECT company_id, key_type, key_id FROM whatsapp_keys
                         WHERE company_id = chosen.company_id AND key_type = 'session'
                         LIMIT %(each)s
                       ) AS k
            )
            UPDATE whatsapp_keys AS k
               SET updated_at = now(), expires_at = now() + interval '7 days'
              FROM picked
             WHERE (k.company_id, k.key_type, k.key_id)
                 = (picked.company_id, picked.key_type, picked.key_id)
         RETURNING k.company_id
            """,
            {"share": share, "each": each},
        )
        touched = [row[0] for row in cursor.fetchall()]
        cursor.execute("RESET statement_timeout")
    return len(touched), len(set(touched))


def _after_the_margin() -> None:
    """
    Wait out the refresh's clock margin between writing a batch and refreshing.

    An incremental refresh re-reads the rows stamped in the few seconds before the previous
    one's high-water mark (``CLOCK_MARGIN``, for the bot host's clock). Refreshed a minute
    apart that is the last seconds of the previous minute; back to back, as here, it would be
    the whole previous batch, so each refresh starts once its batch is older than the margin.
    """
    from observability.snapshot.refresh import CLOCK_MARGIN

    time.sleep(CLOCK_MARGIN.total_seconds())


def _refresh(full: bool):
    """One refresh that ran: the worker's every-minute one may hold the lock (then wait)."""
    from observability import snapshot

    while True:
        started = time.perf_counter()
        result = snapshot.refresh(full=full)
        if result.outcome != "skipped":
            return result, time.perf_counter() - started
        time.sleep(0.2)


def _refresh_with_sql_time(full: bool):
    """
    :func:`_refresh`, and the seconds it waited on each database (``bot``, ``project``).

    The split tells the recount the refresh cannot avoid (the bot's rows of every session
    written, read again whole) from this project's own work (judging, storing).
    """
    import threading

    import psycopg
    from django.conf import settings

    names = {settings.DATABASES[alias]["NAME"]: alias for alias in ("bot", "default")}
    waited = {"bot": 0.0, "project": 0.0}
    me = threading.get_ident()
    originals = {name: getattr(psycopg.Cursor, name) for name in ("execute", "executemany")}

    def timing(original):
        def timed(cursor, *args, **kwargs):
            if threading.get_ident() != me:
                return original(cursor, *args, **kwargs)
            started = time.perf_counter()
            try:
                return original(cursor, *args, **kwargs)
            finally:
                alias = names.get(cursor.connection.info.dbname)
                waited["bot" if alias == "bot" else "project"] += time.perf_counter() - started

        return timed

    for name, original in originals.items():
        setattr(psycopg.Cursor, name, timing(original))
    try:
        result, seconds = _refresh(full)
    finally:
        for name, original in originals.items():
            setattr(psycopg.Cursor, name, original)
    return result, seconds, waited


def measure_refresh(floor, *, runs: int = 3, share: float = 0.01) -> dict:
    """Full recount, incremental after ``share`` of the keys changed, and the bare aggregate."""
    from observability import sessions

    _refresh(full=True)  # warm, and the baseline the incremental runs start from
    full = []
    for _ in range(runs):
        result, seconds = _refresh(full=True)
        full.append(seconds)
    captured = floor.capture(lambda: sessions.list_sessions())
    bare = floor.time(captured, runs)
    incremental = []
    changed = []
    for _ in range(runs):
        changed.append(_rewrite_share(share))
        _after_the_margin()
        step, seconds, waited = _refresh_with_sql_time(full=False)
        incremental.append((seconds, step.sessions_refreshed, waited["bot"], waited["project"]))
    busy = []
    for _ in range(runs):
        rows, touched = _rewrite_sessions(BUSY_SESSIONS_SHARE, BUSY_ROWS_EACH)
        _after_the_margin()
        step, seconds, waited = _refresh_with_sql_time(full=False)
        busy.append(
            (seconds, step.sessions_refreshed, rows, touched, waited["bot"], waited["project"])
        )
    measured = {
        "busy_s": statistics.median(seconds for seconds, *_ in busy),
        "busy_runs": busy,
        "sessions": result.sessions_total,
        "full_s": statistics.median(full),
        "full_runs": full,
        "bare_aggregate_ms": bare["median"],
        "bare_queries": bare["queries"],
        "incremental_s": statistics.median(seconds for seconds, *_ in incremental),
        "incremental_runs": incremental,
        "changed_keys": statistics.median(rows for rows, _ in changed),
        "changed_sessions": statistics.median(touched for _, touched in changed),
        "share": share,
    }
    print(
        f"  snapshot: full {measured['full_s']:.2f} s, bare aggregate "
        f"{measured['bare_aggregate_ms']:.0f} ms, incremental {measured['incremental_s']:.3f} s "
        f"after {measured['changed_keys']:,} keys changed in {measured['changed_sessions']:,} "
        f"sessions ({[n for _, n, *_ in incremental]} recomputed, bot SQL "
        f"{[round(b, 2) for _, _, b, _ in incremental]} s); busy minute "
        f"{measured['busy_s']:.3f} s ({[n for _, n, *_ in busy]} recomputed, bot SQL "
        f"{[round(run[4], 2) for run in busy]} s, project SQL "
        f"{[round(run[5], 2) for run in busy]} s)",
        flush=True,
    )
    return measured


def measure_storage(*, sessions: int = 1_000, days: int = 90, seed: int = 13) -> dict:
    """
    Fill the snapshot tables with ``days`` of simulated history for ``sessions`` sessions.

    The states are copies of a real stored state, the median one by keys (the facts' size
    hardly depends on the keys: one count per key type); the changes follow
    :data:`CHANGES_PER_DAY`; the refresh log holds its two days of one-a-minute rows.
    Everything is written into the emptied tables in a transaction that is rolled back after
    the sizes are read: ``TRUNCATE`` (transactional in PostgreSQL), not ``DELETE``, whose dead
    rows would still weigh in the sizes (the bench's own 10,000 states did, 30 MB of them).
    """
    from django.db import connections, transaction
    from django.utils import timezone

    from observability import config
    from observability.models import SessionChange, SessionState, Snapshot

    rng = random.Random(seed)  # noqa: S311 - simulated data, not a secret
    now = timezone.now()
    stored = SessionState.objects.count()
    template = SessionState.objects.order_by("total_keys", "session_id")[stored // 2]
    tables = (
        "observability_sessionstate",
        "observability_sessionchange",
        "observability_snapshot",
    )
    reasons = list(template.reasons) or ["No key written for 30 hours: check the salon."]

    class _Rollback(Exception):
        pass

    sizes: dict[str, int] = {}
    indexes: dict[str, int] = {}
    rows = 0
    try:
        with transaction.atomic():
            with connections["default"].cursor() as cursor:
                cursor.execute(f"TRUNCATE {', '.join(tables)}")
            states = []
            for n in range(sessions):
                state = SessionState(
                    **{
                        field.attname: getattr(template, field.attname)
                        for field in SessionState._meta.concrete_fields
                    }
                )
                state.session_id = f"company_{900000 + n}"
                state.salon_id = 900000 + n
                states.append(state)
            SessionState.objects.bulk_create(states, batch_size=500)
            batch: list[SessionChange] = []
            for n in range(sessions):
                sid = f"company_{900000 + n}"
                for day in range(days):
                    for kind, rate in CHANGES_PER_DAY.items():
                        count = int(rate) + (1 if rng.random() < rate - int(rate) else 0)
                        for _ in range(count):
                            at = now - timedelta(days=day, seconds=rng.randrange(86400))
                            status = kind == "status"
                            batch.append(
                                SessionChange(
                                    session_id=sid,
                                    at=at,
                                    kind=kind,
                                    old_status="OK",
                                    new_status="WARN" if status else "OK",
                                    reasons=reasons if status else None,
                                    detail=DETAILS[kind],
                                    data=DATA[kind],
                                )
                            )
                if len(batch) > 20_000:
                    SessionChange.objects.bulk_create(batch)
                    rows += len(batch)
                    batch = []
            SessionChange.objects.bulk_create(batch)
            rows += len(batch)
            log_minutes = int(config.snapshot_log_retention().total_seconds() // 60)
            Snapshot.objects.bulk_create(
                Snapshot(
                    taken_at=now - timedelta(minutes=minute),
                    kind="incremental",
                    duration=0.2,
                    sessions_refreshed=12,
                    sessions_total=sessions,
                    changes=8,
                    outcome="succeeded",
                )
                for minute in range(log_minutes)
            )
            with connections["default"].cursor() as cursor:
                cursor.execute(f"ANALYZE {', '.join(tables)}")
                for table in tables:
                    cursor.execute(
                        "SELECT pg_total_relation_size(%s), pg_indexes_size(%s)", [table, table]
                    )
                    sizes[table], indexes[table] = cursor.fetchone()
            raise _Rollback
    except _Rollback:
        pass
    total = sum(sizes.values())
    measured = {
        "sessions": sessions,
        "days": days,
        "change_rows": rows,
        "changes_per_day": CHANGES_PER_DAY,
        "bytes": sizes,
        "index_bytes": indexes,
        "total_mb": total / 1024 / 1024,
        "budget_mb": STORAGE_BUDGET_MB,
    }
    print(
        f"  storage: {rows:,} change rows for {sessions} sessions over {days} days: "
        f"{measured['total_mb']:.1f} MB (budget {STORAGE_BUDGET_MB} MB)",
        flush=True,
    )
    return measured


def _seconds(value: float | None) -> str:
    """A split's seconds, or a dash for results recorded before the split was measured."""
    return "–" if value is None else f"{value:.3f}"


def report_lines(scales: dict, storage: dict | None) -> list[str]:
    """The RESULTS.md section of the snapshot's figures."""
    lines = [
        "## The stored snapshot (issue 13)",
        "",
        "Every page, `/health/whatsapp/`, `/metrics` and the alert read the stored snapshot; a "
        "django-q2 schedule refreshes it every minute. Full = every session recounted "
        "(`take_snapshot --full`, hourly); incremental = only the sessions whose rows changed "
        "since the previous refresh's high-water mark, found through the expiry index and each "
        "recounted whole, after 1 % of the keys were rewritten as the bot "
        "writes them (whole pages sampled, so the changes cluster in some sessions as a "
        "minute of traffic does); floor = the full recount's aggregate SQL replayed bare. "
        "Of which bot SQL = the time the incremental waited on the bot's database (finding "
        "the written sessions, then reading each one's rows again whole), project SQL = on "
        "this project's (reading and writing the stored state); the rest is Python. "
        "Median of 3 runs.",
        "",
        "| keys | sessions | full recount s | bare aggregate ms | keys changed | sessions "
        "touched | sessions recomputed | incremental s | of which bot SQL s | project SQL s "
        "| goal | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scale, data in scales.items():
        snap = data.get("snapshot")
        if not snap:
            continue
        runs = sorted(snap["incremental_runs"])
        _, recomputed, bot_s, project_s = (list(runs[len(runs) // 2]) + [None, None])[:4]
        ok = snap["incremental_s"] < INCREMENTAL_GOAL_S
        lines.append(
            f"| {int(scale):,} | {snap['sessions']:,} | {snap['full_s']:.2f} | "
            f"{snap['bare_aggregate_ms']:.0f} ({snap['bare_queries']} q) | "
            f"{int(snap['changed_keys']):,} | {int(snap['changed_sessions']):,} | "
            f"{recomputed:,} | {snap['incremental_s']:.3f} | {_seconds(bot_s)} | "
            f"{_seconds(project_s)} | < 1 s | {'met' if ok else '**missed**'} |"
        )
    busy = [(scale, data["snapshot"]) for scale, data in scales.items() if data.get("snapshot")]
    busy = [(scale, snap) for scale, snap in busy if "busy_s" in snap]
    if busy:
        lines += [
            "",
            f"A busy minute instead: {BUSY_SESSIONS_SHARE * 100:g} % of the sessions, chosen at "
            f"random, each rewrote {BUSY_ROWS_EACH} contacts' `session` rows (what Baileys "
            "stores per message); median of 3. The refresh's cost follows the sessions "
            "written (each recounted whole: a rewrite loses the old `expires_at` and a delete "
            "leaves nothing, so no count can be updated by difference), not the keys changed: "
            "this row's goal is the one proposed in place of the 1 % row's.",
            "",
            "| keys | sessions written | keys changed | sessions recomputed | incremental s "
            "| of which bot SQL s | project SQL s | proposed goal | result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for scale, snap in busy:
            runs = sorted(snap["busy_runs"])
            seconds, recomputed, rows, touched, bot_s, project_s = (
                list(runs[len(runs) // 2]) + [None, None]
            )[:6]
            ok = seconds < INCREMENTAL_GOAL_S
            lines.append(
                f"| {int(scale):,} | {touched:,} | {rows:,} | {recomputed:,} | {seconds:.3f} "
                f"| {_seconds(bot_s)} | {_seconds(project_s)} | < 1 s | "
                f"{'met' if ok else '**missed**'} |"
            )
    if storage:
        index_bytes = storage.get("index_bytes", {})
        table_mb = ", ".join(
            f"`{name.removeprefix('observability_')}` {size / 1024 / 1024:.1f} MB"
            + (f" (indexes {index_bytes[name] / 1024 / 1024:.1f})" if name in index_bytes else "")
            for name, size in storage["bytes"].items()
        )
        rates = ", ".join(f"{kind} {rate:g}" for kind, rate in storage["changes_per_day"].items())
        ok = storage["total_mb"] < storage["budget_mb"]
        lines += [
            "",
            f"**Storage**: {storage['sessions']:,} sessions over {storage['days']} days "
            f"(the retention): {storage['change_rows']:,} change rows simulated at {rates} per "
            f"session and day, plus the states (copies of the median stored one) and two days of "
            f"one-a-minute refresh records, written into emptied tables: "
            f"**{storage['total_mb']:.1f} MB** ({table_mb}, indexes included) against a "
            f"budget of {storage['budget_mb']} MB: {'met' if ok else '**missed**'}.",
        ]
    lines.append("")
    return lines
