"""
Benchmark /health/ and /health/db/ with wrk against a real WSGI server on the embedded database.

Run from the project root (Debian: ``apt-get install -y wrk``)::

    OBSERVABILITY_DATA_DIR=/tmp/pg-bench .venv/bin/python bench/bench_health.py

It seeds 1,000 sessions / 1,000,000 keys when the bot tables are empty
(``manage.py seed_demo_data --size large --if-empty``), starts gunicorn (one process, threads,
so "this project's connections" is one pool per alias), then:

1. measures latency (p50/p95/p99) of ``/health/db/`` and ``/health/`` at low concurrency;
2. runs 50 concurrent connections against ``/health/`` while sampling ``pg_stat_activity``
   every 20 ms, and reports the peak number of server connections held by this project's
   application names, against the pool maximum.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
TOKEN = "bench-health-token"  # noqa: S105 - a local, throwaway token

WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT p50=%.3f p95=%.3f p99=%.3f max=%.3f\\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def _env(data_dir: str) -> dict:
    env = dict(os.environ)
    env.update(
        OBSERVABILITY_DATA_DIR=data_dir,
        HEALTH_TOKEN=TOKEN,
        DEBUG="0",
        LOG_LEVEL="ERROR",
        DJANGO_SETTINGS_MODULE="project.settings",
    )
    return env


def _manage(env: dict, *args: str, check: bool = True) -> str:
    result = subprocess.run(  # noqa: S603
        [str(PYTHON), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )
    return result.stdout


def _wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - localhost
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server did not answer {url} within {timeout} s")


def _wrk(url: str, connections: int, duration: int, threads: int = 2) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        output = subprocess.run(  # noqa: S603
            [
                shutil.which("wrk") or "wrk",
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                "-H",
                "Accept: application/json",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    found = re.search(r"RESULT p50=(\S+) p95=(\S+) p99=(\S+) max=(\S+)", output)
    rps = re.search(r"Requests/sec:\s+(\S+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "url": url,
        "connections": connections,
        "duration_s": duration,
        "requests": int(total.group(1)) if total else 0,
        "requests_per_s": float(rps.group(1)) if rps else 0.0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "p50_ms": float(found.group(1)),
        "p95_ms": float(found.group(2)),
        "p99_ms": float(found.group(3)),
        "max_ms": float(found.group(4)),
    }


class ActivitySampler(threading.Thread):
    """Samples pg_stat_activity and keeps the peak connections per application_name."""

    def __init__(self, conninfo: dict, names: list[str], interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.names = names
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(names, 0)
        self.peak_total = 0
        self.samples = 0
        self.limit: int | None = None
        self.over: list = []  # the rows of samples that exceeded ``limit`` (at most 3)
        self._halt = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(**self.conninfo, autocommit=True) as connection:
            while not self._halt.is_set():
                rows = connection.execute(
                    "SELECT application_name, pid, state, backend_start, left(query, 60) "
                    "FROM pg_stat_activity WHERE application_name = ANY(%s) "
                    # Parallel query workers inherit the leader's application_name but use no
                    # connection slot (max_worker_processes, not max_connections).
                    "AND backend_type = 'client backend'",
                    [self.names],
                ).fetchall()
                counts: dict[str, int] = {}
                for row in rows:
                    counts[row[0]] = counts.get(row[0], 0) + 1
                if (
                    self.limit
                    and len(self.over) < 3
                    and max(counts.values(), default=0) > self.limit
                ):
                    self.over.append([[str(v) for v in row] for row in rows])
                for name in self.names:
                    self.peak[name] = max(self.peak[name], counts.get(name, 0))
                self.peak_total = max(self.peak_total, sum(counts.values()))
                self.samples += 1
                time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="Port for the server.")
    parser.add_argument("--duration", type=int, default=15, help="Seconds per wrk run.")
    parser.add_argument(
        "--latency-connections",
        type=int,
        nargs="+",
        default=[1, 4],
        help="wrk -c values for the latency runs (a monitor polls one request at a time).",
    )
    parser.add_argument("--concurrency", type=int, default=50, help="wrk -c for the peak run.")
    parser.add_argument("--threads", type=int, default=16, help="gunicorn threads.")
    parser.add_argument("--only-concurrency", action="store_true", help="Skip the latency runs.")
    parser.add_argument("--skip-seed", action="store_true", help="Do not seed demo data.")
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = parser.parse_args()

    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    data_dir = os.environ.get("OBSERVABILITY_DATA_DIR", str(ROOT / "var" / "pgdata"))
    env = _env(data_dir)
    _manage(env, "migrate", "--no-input", "-v", "0")
    _manage(env, "create_bot_schema", check=False)  # refuses (harmlessly) when they exist
    if not args.skip_seed:
        print("seeding (1,000 sessions / 1,000,000 keys, once)...", flush=True)
        _manage(env, "seed_demo_data", "--size", "large", "--if-empty")

    # The server's settings: pool size and the socket of the embedded server.
    probe = subprocess.run(  # noqa: S603
        [
            str(PYTHON),
            "-c",
            "import django, json; django.setup(); from django.conf import settings; "
            "from django.db import connections; from observability import sessions; "
            "import time; d = settings.DATABASES['bot']; t = time.perf_counter(); "
            "s = sessions.store_health(); e = time.perf_counter() - t; "
            "print(json.dumps({'host': d['HOST'], 'user': d['USER'], 'name': d['NAME'], "
            "'pool_max': d['OPTIONS'].get('pool', {}).get('max_size'), "
            "'app': d['OPTIONS']['application_name'], "
            "'default_app': settings.DATABASES['default']['OPTIONS']['application_name'], "
            "'sessions': s.total_sessions, 'keys': s.total_keys, 'store_health_s': e}))",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    print(
        f"data: {info['sessions']} sessions, {info['keys']} keys; one uncached store_health() "
        f"took {info['store_health_s'] * 1000:.0f} ms; pool max {info['pool_max']} per alias"
    )

    # A django-q2 worker (pooling off: it forks) so the queue check sees a live cluster.
    worker = subprocess.Popen(  # noqa: S603
        [str(PYTHON), "manage.py", "qcluster"],
        cwd=ROOT,
        env={**env, "DB_POOL": "0", "DB_APPLICATION_NAME": "observability-worker"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = subprocess.Popen(  # noqa: S603
        [
            str(GUNICORN),
            "project.wsgi:application",
            "--bind",
            f"127.0.0.1:{args.port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            str(args.threads),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{args.port}"
    results: dict = {"data": info, "server": f"gunicorn gthread 1 worker x {args.threads}"}
    try:
        _wait_ready(f"{base}/health/db/?format=json")
        time.sleep(3)  # the worker's first heartbeat
        for _ in range(20):  # warm the pools and the store verdict
            for path in ("/health/db/", "/health/"):
                # /health/ answers 500 while a check fails (the demo store has failing sessions).
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{base}{path}?format=json", timeout=10)  # noqa: S310
        for c in [] if args.only_concurrency else args.latency_connections:
            results[f"db_c{c}"] = _wrk(f"{base}/health/db/", c, args.duration)
            results[f"all_c{c}"] = _wrk(f"{base}/health/", c, args.duration)
        conninfo = {"host": info["host"], "user": info["user"], "dbname": info["name"]}
        sampler = ActivitySampler(
            {**conninfo, "application_name": "bench-observer"},
            [info["app"], info["default_app"]],
        )
        sampler.limit = info["pool_max"]
        sampler.start()
        results["all_concurrent"] = _wrk(f"{base}/health/", args.concurrency, args.duration)
        sampler.stop()
        results["peak_connections"] = {
            "by_application_name": sampler.peak,
            "samples": sampler.samples,
            "pool_max_per_alias": info["pool_max"],
            "samples_over_the_pool_max": sampler.over,
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        os.killpg(worker.pid, signal.SIGINT)  # qcluster stops cleanly on SIGINT
        server.wait(10)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)

    runs = [k for k in results if re.fullmatch(r"(db|all)_c\d+", k)] + ["all_concurrent"]
    for key in runs:
        r = results[key]
        print(
            f"{r['url']:<38} c={r['connections']:<3} {r['requests']:>6} req "
            f"{r['requests_per_s']:>7.0f}/s  p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  "
            f"p99 {r['p99_ms']:.1f} ms  non-2xx {r['non_2xx']}"
        )
    peak = results["peak_connections"]
    print(
        f"peak server connections during c={args.concurrency}: {peak['by_application_name']} "
        f"(pool max {peak['pool_max_per_alias']} per alias, {peak['samples']} samples)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    over = any(v > (info["pool_max"] or 0) for v in peak["by_application_name"].values())
    return 1 if over else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
