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
                for url in (page, page, "/admin/observability/whatsappauth/962302/change/")
            ]
            as_json = pool.submit(
                server.get, page, cookie=cookie, timeout=15, Accept="application/json"
            )
            answers = [future.result() for future in others]
            json_answer = as_json.result()
            locker.rollback()
            first = holder.result()
        print(f"measured: 503 answers in {sorted(round(a[3], 2) for a in answers)} s")
        for status, head, body, seconds in answers:
            assert status == 503, (status, body[:500])
            assert head["Retry-After"] and int(head["Retry-After"]) > 0
            assert "Traceback" not in body
            assert "Too many requests at once" in body, body[:500]
            assert "Retry in a few seconds" in body
            assert seconds < 1 + 3, seconds  # the pool timeout plus a margin: no hang
        status, head, body, seconds = json_answer
        assert status == 503 and head["Content-Type"] == "application/json"
        assert head["Retry-After"] == "5" and seconds < 1 + 3
        assert '"code": "database_busy"' in body
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
        print(f"measured: /health/db/ FAIL answered in {seconds:.2f} s")
        for page in (session_page, sessions_page):
            status, head, text, seconds = web.get(page, cookie=cookie)
            assert status == 503, (page, status, text[:300])
            assert "Bot database unavailable" in text
            assert "Traceback" not in text
            assert head["Retry-After"]
            assert seconds < 2 + 3, (page, seconds)  # the pool timeout and a margin
            print(f"measured: {page} answered 503 in {seconds:.2f} s")
        assert worker.poll() is None, "the worker died while the bot database was down"

        postgres.start()
        restarted = time.monotonic()
        deadline = restarted + 15
        while True:
            status, body, _ = _health(web)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, f"no recovery within 15 s: {body}"
        print(f"measured: /health/db/ OK {time.monotonic() - restarted:.2f} s after the restart")
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


# --- Cleanup killed mid-run and rerun ---------------------------------------------------------

_SEED_SQL = """
INSERT INTO whatsapp_keys (company_id, key_type, key_id, value, created_at, updated_at,
                           expires_at)
SELECT s.session_id, t.key_type, t.key_type || '-' || g, jsonb_build_object('n', g),
       timestamptz '2020-01-01' + g * interval '1 minute',
       timestamptz '2020-01-01' + g * interval '1 minute',
       CASE
           WHEN g % 10 = 0 THEN NULL                                   -- never expires
           WHEN g % 10 = 1 THEN timestamptz '2999-01-01' + g * interval '1 second'  -- live
           ELSE timestamptz '2020-02-01' + (g * 7 + s.n) * interval '1 second'      -- expired
       END
  FROM (VALUES ('962302', 1), ('company_962302', 2), ('777001', 3)) AS s(session_id, n)
 CROSS JOIN (VALUES ('session'), ('pre-key'), ('sender-key'), ('app-state-sync-key'),
                    ('device-list'), ('tctoken')) AS t(key_type)
 CROSS JOIN generate_series(1, 150) AS g
"""
_SLOW_DELETES = """
CREATE OR REPLACE FUNCTION test_faults_slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.005); RETURN OLD; END $$;
CREATE TRIGGER test_faults_slow_delete BEFORE DELETE ON whatsapp_keys
    FOR EACH ROW EXECUTE FUNCTION test_faults_slow_delete();
"""


def _bot_rows(conn) -> list[tuple]:
    return conn.execute(
        "SELECT company_id, key_type, key_id, value::text, expires_at FROM whatsapp_keys "
        "ORDER BY 1, 2, 3"
    ).fetchall()


def _deleted_by_runs(runs) -> tuple[int, dict]:
    """Summed total and per-session, per-type counts over cleanup run records."""
    by_type: dict[tuple[str, str], int] = {}
    for run in runs:
        for session_id, counts in (run.rows_deleted or {}).items():
            for key_type, n in counts.items():
                by_type[(session_id, key_type)] = by_type.get((session_id, key_type), 0) + n
    return sum(run.total_deleted or 0 for run in runs), by_type


def _wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
@committed
def test_cleanup_killed_twice_and_rerun__totals_match_an_uninterrupted_run(truncate_bot_tables):
    """
    SIGKILL a real cleanup twice at different points, rerun: same rows, same summed totals.

    Each batch's total is recorded right after its commit, so every committed batch is
    counted in the record of the run that deleted it. The breakdown by key type is saved at
    most once a second (records.py), so a killed run's breakdown may lag its total: only the
    rerun's breakdown is compared, against what was left.
    """
    from observability import cleanup
    from observability.models import CleanupRun
    from tests.cleanup_support import start_manage

    bot = connections["bot"].settings_dict
    conn = _raw(bot["HOST"], bot["NAME"])
    try:
        # The run nobody killed.
        conn.execute(_SEED_SQL)
        seeded = len(_bot_rows(conn))
        clean = cleanup.cleanup_expired_keys(apply=True, batch_size=97)
        expected_rows = _bot_rows(conn)
        expected_total, expected_by_type = _deleted_by_runs(CleanupRun.objects.all())
        assert expected_total == clean.total_deleted == seeded - len(expected_rows) > 1000
        kept_types = [row[1] for row in expected_rows]
        assert kept_types.count("pre-key") == kept_types.count("app-state-sync-key") == 450
        CleanupRun.objects.all().delete()

        # The same data, a run killed twice (inside a batch, then between batches), rerun.
        conn.execute("TRUNCATE whatsapp_keys")
        conn.execute(_SEED_SQL)
        conn.execute(_SLOW_DELETES)  # ~0.5 s per batch of 97: time to kill one mid-way

        def remaining() -> int:
            return conn.execute("SELECT count(*) FROM whatsapp_keys").fetchone()[0]

        def no_cleanup_lock() -> bool:
            return not conn.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            ).fetchone()

        for kill_after in (0.15, 0.0):
            before = remaining()
            process = start_manage("cleanup_expired_keys", "--apply", "--batch-size", "97")
            try:
                assert _wait_until(lambda b=before: remaining() < b), process.stderr
                time.sleep(kill_after)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(5)
            assert process.returncode == -signal.SIGKILL
            assert _wait_until(no_cleanup_lock), "the killed run's lock outlived it"
        assert len(expected_rows) < remaining() < seeded, "the kills left nothing to finish"
        conn.execute("DROP TRIGGER test_faults_slow_delete ON whatsapp_keys")
        left = conn.execute(  # pre-keys and app-state keys are never deleted for their age
            "SELECT company_id, key_type, count(*) FROM whatsapp_keys WHERE expires_at < now() "
            "AND key_type NOT IN ('pre-key', 'app-state-sync-key') GROUP BY 1, 2"
        ).fetchall()
        rerun = cleanup.cleanup_expired_keys(apply=True, batch_size=97)

        assert _bot_rows(conn) == expected_rows
        runs = list(CleanupRun.objects.filter(dry_run=False).order_by("pk"))
        assert [run.outcome for run in runs] == ["failed", "failed", "succeeded"]
        assert all("Interrupted" in run.error for run in runs[:2])
        total, _ = _deleted_by_runs(runs)
        assert total == expected_total  # killed + killed + rerun == never killed
        assert {(s, t): n for s, t, n in left} == _deleted_by_runs([runs[2]])[1]
        assert rerun.total_deleted == sum(n for _, _, n in left)
        assert sum(expected_by_type.values()) == expected_total
    finally:
        conn.execute("DROP TRIGGER IF EXISTS test_faults_slow_delete ON whatsapp_keys")
        conn.execute("DROP FUNCTION IF EXISTS test_faults_slow_delete()")
        conn.close()
