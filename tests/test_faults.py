"""Faults with real processes: bot database restarts, pool exhaustion, cleanup killed mid-run."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.test import Client as DjangoClient

from tests import factories

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "faults-health-token-0123456789"  # noqa: S105 (a test value)

committed = pytest.mark.django_db(databases=["default", "bot"], transaction=True)


# --- Real processes ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _url(host: str, name: str) -> str:
    """A database URL for a PostgreSQL Unix socket folder (TLS off: it is a local socket)."""
    return f"postgresql://postgres@{quote(host, safe='')}/{name}?sslmode=disable"


def _project_env(*, bot_host: str, bot_name: str, **extra: str) -> dict[str, str]:
    """A production-shaped environment pointing at the test's databases."""
    default = connections["default"].settings_dict
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST", "COV_", "OBSERVABILITY_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DATABASE_URL=_url(default["HOST"], default["NAME"]),
        BOT_DATABASE_URL=_url(bot_host, bot_name),
        SECRET_KEY=django_settings.SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        SECURE_HSTS_SECONDS="0",
        HEALTH_TOKEN=TOKEN,
        BOT_CONNECT_TIMEOUT="2",
        PYTHONWARNINGS="ignore",
        LOG_LEVEL="WARNING",
        **extra,
    )
    return env


class WebServer:
    """gunicorn serving the project in a real process, on a free port of 127.0.0.1."""

    def __init__(self, env: dict[str, str], threads: int = 8) -> None:
        self.port = _free_port()
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
                "1",
                "--threads",
                str(threads),
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
        _stop(self.process)
        self.log.close()


def _stop(process: subprocess.Popen) -> None:
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


def _staff_cookie(django_user_model) -> str:
    """A committed staff session usable by the server processes (same SECRET_KEY)."""
    user = django_user_model.objects.create_superuser("faults", "faults@example.com", "x")
    client = DjangoClient()
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def _raw(host: str, dbname: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(host=host, dbname=dbname, user="postgres", autocommit=autocommit)


@pytest.fixture
def truncate_bot_tables():
    """Committed rows of the unmanaged bot tables are not flushed by Django: remove them."""
    yield
    bot = connections["bot"].settings_dict
    with _raw(bot["HOST"], bot["NAME"]) as conn:
        conn.execute("TRUNCATE whatsapp_keys, whatsapp_auth, companies, clients")


# --- Pool exhaustion --------------------------------------------------------------------------


@pytest.mark.slow
@committed
def test_pool_exhausted__concurrent_requests_get_503_with_retry_after(
    django_user_model, truncate_bot_tables
):
    """One request holds the only bot connection; the others get 503 + Retry-After in ~1 s."""
    factories.make_auth("962302")
    factories.make_keys("962302", "session", 3)
    cookie = _staff_cookie(django_user_model)
    bot = connections["bot"].settings_dict
    server = WebServer(
        _project_env(
            bot_host=bot["HOST"],
            bot_name=bot["NAME"],
            DB_POOL_MAX_SIZE="1",
            DB_POOL_TIMEOUT="1",
        )
    )
    locker = _raw(bot["HOST"], bot["NAME"], autocommit=False)
    try:
        server.wait_ready()
        # The key browser reads whatsapp_keys on every request (the changelist's health is
        # cached in the process for a few seconds).
        page = "/admin/observability/whatsappauth/962302/keys/"
        assert server.get(page, cookie=cookie)[0] == 200
        # Hold the table: the next request's bot query blocks on it, keeping the pool's only
        # bot connection checked out.
        locker.execute("LOCK TABLE whatsapp_keys IN ACCESS EXCLUSIVE MODE")
        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
            holder = pool.submit(server.get, page, cookie=cookie, timeout=40)
            deadline = time.monotonic() + 10
            observer = _raw(bot["HOST"], bot["NAME"])
            try:
                while time.monotonic() < deadline:
                    waiting = observer.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    ).fetchone()[0]
                    if waiting:
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError(f"the first request never waited:\n{server.output()}")
            finally:
                observer.close()
            others = [
                pool.submit(server.get, url, cookie=cookie, timeout=15)
                for url in (page, page, "/admin/observability/whatsappauth/962302/change/", page)
            ]
            answers = [future.result() for future in others]
            locker.rollback()
            first = holder.result()
        for status, head, body, seconds in answers:
            assert status == 503, (status, body[:500])
            assert head["Retry-After"] and int(head["Retry-After"]) > 0
            assert "Traceback" not in body
            assert "Too many requests at once" in body, body[:500]
            assert "Retry in a few seconds" in body
            assert seconds < 1 + 3, seconds  # the pool timeout plus a margin: no hang
        assert first[0] == 200, first[2][:500]
        # The pool recovered: the same page answers again.
        assert server.get(page, cookie=cookie)[0] == 200
    finally:
        locker.close()
        print(server.output())  # shown by pytest when the test fails
        server.stop()


# --- The bot database stopped and restarted under a running web server and worker -------------


class ThrowawayPostgres:
    """A second embedded PostgreSQL in a folder of its own, stopped and started on demand."""

    def __init__(self) -> None:
        import pgserver

        # Not pytest's tmp_path: /tmp/pytest-of-root is 0700 and, as root, pgserver runs the
        # server as its own system user, who could not enter it.
        self.folder = Path(tempfile.mkdtemp(prefix="obs-faults-pg-"))
        server = pgserver.get_server(self.folder, cleanup_mode=None)
        self.user = server.system_user
        self.socket_dir = str(server.get_postmaster_info().socket_dir)
        self.log = self.folder / "log"

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.folder, user=self.user, timeout=30)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        # The same socket folder as before, so the clients' settings stay valid.
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.log), "start")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _seed_bot_database(host: str) -> None:
    """A bot database with the bot's tables and one healthy session."""
    from observability import schema

    with _raw(host, "postgres") as conn:
        conn.execute("CREATE DATABASE bot")
    with _raw(host, "bot") as conn:
        conn.execute(schema.bot_schema_sql())
        conn.execute(
            "INSERT INTO whatsapp_auth (company_id, creds, updated_at) VALUES "
            "('962302', '{\"registered\": true}', now())"
        )
        conn.execute(
            "INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, updated_at, "
            "expires_at) SELECT '962302', 'session', 'k' || g, '{}', now(), "
            "now() + interval '7 days' FROM generate_series(1, 20) g"
        )


def _health(server: WebServer, group: str = "db") -> tuple[int, dict, float]:
    status, _, body, seconds = server.get(
        f"/health/{group}/?format=json", timeout=20, Authorization=f"Bearer {TOKEN}"
    )
    import json

    return status, json.loads(body), seconds


@pytest.mark.slow
@committed
def test_bot_database_restart__health_fails_fast_then_recovers_without_restart(
    django_user_model,
):
    """Bot server stopped: /health/db/ FAIL in seconds, admin 503; restarted: OK again."""
    cookie = _staff_cookie(django_user_model)
    postgres = ThrowawayPostgres()
    web = worker = None
    try:
        _seed_bot_database(postgres.socket_dir)
        env = _project_env(bot_host=postgres.socket_dir, bot_name="bot", DB_POOL_TIMEOUT="2")
        web = WebServer(env)
        worker_log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
        worker = subprocess.Popen(  # noqa: S603
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env={**env, "DB_POOL": "0"},
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        web.wait_ready()
        status, body, _ = _health(web)
        assert status == 200, body
        assert not body["Database(alias='bot')"].startswith("Unavailable"), body
        sessions_page = "/admin/observability/whatsappauth/"
        session_page = "/admin/observability/whatsappauth/962302/change/"
        assert web.get(sessions_page, cookie=cookie)[0] == 200
        assert web.get(session_page, cookie=cookie)[0] == 200

        postgres.stop()
        status, body, seconds = _health(web)
        assert status == 500, body
        assert body["Database(alias='bot')"].startswith("Unavailable: Cannot connect"), body
        assert body["Database(alias='default')"] == "OK"
        assert seconds < 6, f"/health/db/ took {seconds:.1f} s with the bot database down"
        for page in (session_page, sessions_page):
            status, head, text, seconds = web.get(page, cookie=cookie)
            assert status == 503, (page, status, text[:300])
            assert "Bot database unavailable" in text
            assert "Traceback" not in text
            assert head["Retry-After"]
            assert seconds < 2 + 3, (page, seconds)  # the pool timeout and a margin
        assert worker.poll() is None, "the worker died while the bot database was down"

        postgres.start()
        deadline = time.monotonic() + 15
        while True:
            status, body, _ = _health(web)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, f"no recovery within 15 s: {body}"
        assert not body["Database(alias='bot')"].startswith("Unavailable"), body  # OK or slow
        assert web.get(session_page, cookie=cookie)[0] == 200
        assert web.get(sessions_page, cookie=cookie)[0] == 200
        # The pool healed itself too: no failure left to report once the next check has run.
        _health(web, "pool")
        status, body, _ = _health(web, "pool")
        assert status == 200, body
        assert web.process.poll() is None
        assert worker.poll() is None, "the worker died after the bot database came back"
    finally:
        if web is not None:
            print(web.output())  # shown by pytest when the test fails
            web.stop()
        if worker is not None:
            _stop(worker)
            worker_log.seek(0)
            print(worker_log.read()[-5000:])
            worker_log.close()
        postgres.destroy()
