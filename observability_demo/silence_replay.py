"""
The silence rule replayed over the simulator's traffic, without the database.

``bench/bench_detection.py`` runs every rule through the real refresh once a simulated minute,
a few hundred session-days in ten minutes. A false-alarm rate of 1 per 1,000 session-days
needs thousands of them, and every false alarm it measured was an unusual silence. This
replays only what the silence rule reads: the simulator's traffic (the same salons, days and
moods), the rhythm counted as the refresh counts it (``detect.count_write``, one minute with a
write per refresh), and the real ``detect.rates``, ``detect.pace`` and
``rules.silence_rhythm`` judging each silence at the last refresh before it ends (a silence only
grows more unlikely while it lasts). Meanwhile it pretends, at a random moment in the busy
hours of each busy salon, that the salon died, and measures how long the rule takes to WARN and
to FAIL from then (the salon goes on writing afterwards, so the false alarms are not affected).
Used by ``bench/bench_silence.py`` and the detectors' tests.
"""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime, timedelta

from observability import rules
from observability.rules import SessionFacts, SessionHistory, Status
from observability.snapshot import detect
from observability_demo import simulator as sim_module

MINUTE = timedelta(minutes=1)


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def run(salons: int, days: float, seed: int) -> dict:
    """Replay the traffic minute by minute; judge every silence; time the pretended deaths."""
    start = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, as the detection benchmark
    sim = sim_module.Simulator(salons, start, seed=seed)
    rhythms = {r.session_id: r for r in sim.learned_rhythms(timedelta(weeks=4))}
    end = start + timedelta(days=days)
    rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
    deaths: dict[str, datetime] = {}
    for salon in sim.salons:
        if salon.profile != "busy":
            continue
        for _attempt in range(1000):
            moment = start + timedelta(minutes=rng.randrange(60, int(days * 1440) - 360))
            if salon.busy_hours(moment):
                deaths[salon.session_id] = moment
                break

    def facts(last_write: datetime) -> SessionFacts:
        return SessionFacts(
            "s", has_auth=True, me_id_present=True, has_account=True, last_write=last_write
        )

    cache: dict[tuple[str, datetime], tuple] = {}

    def history(session_id: str, last_write: datetime, now: datetime) -> SessionHistory:
        rhythm = rhythms[session_id]
        hour = now.replace(minute=0, second=0, microsecond=0)
        key = (session_id, hour)
        if key not in cache:
            cache.clear() if len(cache) > 10000 else None
            cache[key] = detect.rates(rhythm, hour)
        learned = cache[key]
        if learned is None:
            return SessionHistory(rates=None)
        return SessionHistory(rates=learned, pace=detect.pace(rhythm, learned, last_write))

    def status(session_id: str, last_write: datetime, now: datetime) -> Status:
        seen = history(session_id, last_write, now)
        verdict = rules.silence_rhythm(facts(last_write), seen, now)
        return Status.OK if verdict is None else verdict.status

    last = {salon.session_id: start - MINUTE for salon in sim.salons}
    false_warn: list[tuple] = []
    false_fail: list[tuple] = []
    to_warn: list[float] = []
    to_fail: list[float] = []
    wall = time.perf_counter()
    now = start
    while now < end:
        for salon in sim.salons:
            sid = salon.session_id
            salon.new_day(now)
            if deaths.get(sid) == now:
                warned = failed = None
                moment = now
                while failed is None and moment < now + timedelta(hours=12):
                    moment += MINUTE
                    verdict = status(sid, last[sid], moment)
                    if verdict is not Status.OK and warned is None:
                        warned = moment
                    if verdict is Status.FAIL:
                        failed = moment
                to_warn.append(((warned or moment) - now) / MINUTE)
                to_fail.append(((failed or moment) - now) / MINUTE)
            messages = sim_module._poisson(salon.rng, salon.rate(now))
            login = salon.rng.random() < sim_module.LOGINS_PER_DAY / 1440
            if not (messages or login):
                continue
            written = now + timedelta(seconds=salon.rng.uniform(0, 59))
            seen = now + MINUTE  # the first refresh that sees it
            if now - last[sid] >= 5 * MINUTE:
                # The last refresh before this write is the silence's most unlikely moment.
                worst = status(sid, last[sid], now)
                quiet = (now - last[sid]) / MINUTE
                if worst is not Status.OK:
                    seen_by = history(sid, last[sid], now)
                    usual = rules.expected_writes(seen_by.rates, last[sid], now)
                    alarm = (sid, salon.profile, last[sid], quiet, usual, seen_by.pace)
                    false_warn.append(alarm)
                    if worst is Status.FAIL:
                        false_fail.append(alarm)
            detect.count_write(rhythms[sid], min(written, seen))
            last[sid] = written
        now += MINUTE
    session_days = salons * days
    return {
        "salons": salons,
        "days": days,
        "seed": seed,
        "session_days": session_days,
        "false_fail": false_fail,
        "false_warn": false_warn,
        "deaths": len(to_warn),
        "warn_p50": _percentile(to_warn, 0.5),
        "warn_p95": _percentile(to_warn, 0.95),
        "fail_p50": _percentile(to_fail, 0.5),
        "fail_p95": _percentile(to_fail, 0.95),
        "within_30_warn": sum(1 for v in to_warn if v <= 30),
        "within_30_fail": sum(1 for v in to_fail if v <= 30),
        "wall_seconds": time.perf_counter() - wall,
    }
