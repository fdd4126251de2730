"""
Real processes and sick servers for the fault tests and bench/bench_faults.py.

A gunicorn serving the project, a TCP server that accepts and never answers, a lock held on a
bot table, and the measurements both the tests and the benchmark take of them (one home: the
tests assert generous bounds, the benchmark prints the figures).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.health_support import closed_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "faults-health-token-0123456789"  # noqa: S105 (a test value)

#: A page over the bot's tables, and pages over the project's own database only.
# The key browser reads the bot's keys on every request (the session page's verdict comes from
# the stored snapshot and answers while the bot is down).
BOT_PAGE = "/admin/observability/sessionstate/962302/keys/?type=session"
KEYS_PAGE = "/admin/observability/sessionstate/962302/keys/"
OWN_PAGES = ("/admin/observability/cleanuprun/", "/admin/auth/user/")


def socket_url(host: str, name: str) -> str:
    """A database URL for a PostgreSQL Unix socket folder (TLS off: it is a local socket)."""
    return f"postgresql://postgres@{quote(host, safe='')}/{name}?sslmode=disable"


def tcp_url(port: int, name: str = "bot") -> str:
    """A database URL for a server on 127.0.0.1 (closed, hung: nothing real listens there)."""
    return f"postgresql://postgres@127.0.0.1:{port}/{name}?sslmode=disable"


def project_env(*, default_url: str, bot_url: str, secret_key: str, **extra: str) -> dict:
    """A production-shaped environment pointing at the given databases."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST", "COV_", "OBSERVABILITY_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DATABASE_URL=default_url,
        BOT_DATABASE_URL=bot_url,
        SECRET_KEY=secret_key,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        SECURE_HSTS_SECONDS="0",
        HEALTH_TOKEN=TOKEN,
        BOT_CONNECT_TIMEOUT="2",
        PYTHONWARNINGS="ignore",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen) -> None:
    """Stop a process group we started: SIGTERM, then SIGKILL after 5 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


class WebServer:
    """
    gunicorn serving the project in a real process, on a free port of 127.0.0.1.

    ``threads=1`` gives gunicorn's sync workers (the README's deployment: 2 of them).
    """

    def __init__(self, env: dict[str, str], threads: int = 8, workers: int = 1) -> None:
        self.port = closed_port()  # free until gunicorn binds it
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "gunicorn",
                "project.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--backlog",
                "64",
                "--timeout",
                "60",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, *, cookie: str | None = None, timeout: float = 20, **headers):
        """GET ``path``: (status, headers, body, seconds taken); never raises on 4xx/5xx."""
        request = urllib.request.Request(self.url(path), headers=headers)  # noqa: S310
        if cookie:
            request.add_header("Cookie", cookie)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                status, head, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, head, body = error.code, error.headers, error.read()
        return status, head, body.decode(errors="replace"), time.monotonic() - started

    def health(self, group: str = "db", timeout: float = 60) -> tuple[int, dict, float]:
        """``/health/<group>/`` as JSON, with the monitors' token: (status, body, seconds)."""
        import json

        path = f"/health/{group}/?format=json" if group else "/health/?format=json"
        status, _, body, seconds = self.get(path, timeout=timeout, Authorization=f"Bearer {TOKEN}")
        return status, json.loads(body), seconds

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            with contextlib.suppress(OSError):
                if self.get("/admin/login/", timeout=2)[0] == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"the web server did not start:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-20000:]

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


@contextlib.contextmanager
def web_server(env: dict[str, str], **options) -> Iterator[WebServer]:
    """A started :class:`WebServer`, stopped at the end (its log printed when the block fails)."""
    server = WebServer(env, **options)
    try:
        server.wait_ready()
        yield server
    except BaseException:
        print(server.output())  # shown by pytest with the failure
        raise
    finally:
        server.stop()


class HungServer:
    """
    A TCP server on 127.0.0.1 that accepts every connection and never sends a byte.

    What a PostgreSQL whose host is up but whose server is stuck looks like to a client: the
    connection opens, the startup packet goes out, no answer ever comes.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hung-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # a closed listener does not wake a blocked accept()
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self._listener.accept()
                self._accepted.append(connection)  # kept open, never read, never answered

    @property
    def accepted(self) -> int:
        """Connections accepted so far (each one a client that tried)."""
        return len(self._accepted)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(2)
        self._listener.close()
        for connection in self._accepted:
            connection.close()

    def __enter__(self) -> HungServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def table_locked(conninfo: dict, table: str = "whatsapp_keys") -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE on a bot table from a second connection for the block."""
    with psycopg.connect(**conninfo) as locker:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            locker.rollback()


# --- Measurements -------------------------------------------------------------------------


@dataclass
class FaultTimings:
    """What users of a web server saw while its bot database was sick (seconds, statuses)."""

    first_bot: tuple[int, float] = (0, 0.0)
    bot: list[tuple[int, float]] = field(default_factory=list)
    own: list[tuple[str, int, float]] = field(default_factory=list)
    health: tuple[int, str, float] = (0, "", 0.0)

    @property
    def worst_in_flight(self) -> float:
        return max(seconds for _, seconds in self.bot)

    @property
    def worst_own(self) -> float:
        return max(seconds for _, _, seconds in self.own)

    def lines(self, label: str) -> list[str]:
        bot = sorted(seconds for _, seconds in self.bot)
        first = f"{self.first_bot[0]} in {self.first_bot[1]:.3f} s" if self.first_bot[0] else "-"
        return [
            f"{label}: first bot page alone {first}",
            f"{label}: {len(bot)} bot pages in flight answered in "
            f"{bot[0]:.3f}..{bot[-1]:.3f} s (median {bot[len(bot) // 2]:.3f} s), statuses "
            f"{sorted({status for status, _ in self.bot})}",
            *(
                f"{label}: own page {path} {status} in {seconds:.3f} s meanwhile"
                for path, status, seconds in self.own
            ),
            f"{label}: /health/db/ {self.health[0]} in {self.health[2]:.3f} s meanwhile "
            f"(default: {self.health[1]})",
        ]


def measure_sick_bot(
    server: WebServer,
    cookie: str,
    *,
    in_flight: int = 20,
    bot_page: str = BOT_PAGE,
    first_alone: bool = True,
) -> FaultTimings:
    """
    One bot page alone, then ``in_flight`` bot pages at once with the own pages and health.

    The own pages and ``/health/db/`` are asked once the bot requests are in flight. Without
    ``first_alone`` the bot pages in flight are the first to meet the sick database.
    """
    timings = FaultTimings()
    if first_alone:
        status, _, _, seconds = server.get(bot_page, cookie=cookie)
        timings.first_bot = (status, seconds)
    with concurrent.futures.ThreadPoolExecutor(max_workers=in_flight + len(OWN_PAGES) + 1) as pool:
        bots = [
            pool.submit(server.get, bot_page, cookie=cookie, timeout=60) for _ in range(in_flight)
        ]
        time.sleep(0.05)  # the bot requests are sent and queued first
        own = {
            path: pool.submit(server.get, path, cookie=cookie, timeout=60) for path in OWN_PAGES
        }
        health = pool.submit(server.health)
        timings.bot = [(future.result()[0], future.result()[3]) for future in bots]
        timings.own = [
            (path, future.result()[0], future.result()[3]) for path, future in own.items()
        ]
        status, body, seconds = health.result()
        timings.health = (status, body.get("Database(alias='default')", "?"), seconds)
    return timings
