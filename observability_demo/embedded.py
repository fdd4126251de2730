"""
The embedded PostgreSQL (pgserver) used when no database URL is configured.

The demo and the test suite need a real PostgreSQL without asking a newcomer to install one.
pgserver ships the server binaries in a wheel; this module starts it once per data folder and
makes sure the project's two databases exist. A second start (another ``manage.py`` process, the
worker beside the web server) reuses the running server, and the data survives restarts because
the server is left running and the folder is kept.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

#: Database names on the embedded server: one per Django alias.
DEFAULT_DATABASE_NAME = "observability"
BOT_DATABASE_NAME = "bot"


def start_server(data_dir: Path) -> str:
    """
    Start (or reuse) the embedded server under ``data_dir`` and return its socket folder.

    Args:
        data_dir: the PostgreSQL data folder; created on first use.

    Returns:
        The folder holding the server's Unix socket, usable as Django's ``HOST``.

    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns (at pgserver's import) when XDG_RUNTIME_DIR is unset, as under
        # cron or CI; the fallback it picks is fine for the server's lock file.
        warnings.simplefilter("ignore")
        import pgserver  # imported here: production never loads it

        # cleanup_mode=None leaves the server running when this process exits, so the web
        # server, the worker and every management command share one server and its data.
        server = pgserver.get_server(data_dir, cleanup_mode=None)
    return str(server.get_postmaster_info().socket_dir)


def ensure_databases(socket_dir: str, names: tuple[str, ...]) -> None:
    """Create each database in ``names`` on the embedded server unless it exists already."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=socket_dir, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        existing = {
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname = ANY(%s)", [list(names)]
            )
        }
        for name in names:
            if name not in existing:
                logger.info("creating embedded database %s", name)
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def start(data_dir: Path) -> str:
    """Start the embedded server and create both project databases; return the socket folder."""
    socket_dir = start_server(data_dir)
    ensure_databases(socket_dir, (DEFAULT_DATABASE_NAME, BOT_DATABASE_NAME))
    return socket_dir


def running_pid(data_dir: Path) -> int | None:
    """
    The postmaster's process id when a server is running on ``data_dir``, else None.

    PostgreSQL writes its pid on the first line of ``postmaster.pid`` and removes the file
    when it stops; a file left by a crash names a process that no longer exists.
    """
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by another user (pgserver's, when run as root)
        return pid
    return pid


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has reaped yet)."""
    import psutil  # pgserver's dependency: demo and tests only

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop(data_dir: Path, *, timeout: float = 30.0) -> int | None:
    """
    Stop the embedded server running on ``data_dir`` (a "fast" shutdown); return its pid.

    The server outlives the processes that started it on purpose (see :func:`start_server`),
    so Ctrl-C on the demo leaves it running; this is the way to stop it. A fast shutdown
    (SIGINT to the postmaster) rolls back open transactions, disconnects every client and
    writes a checkpoint: the data stays, and the next command starts the server again.

    Args:
        data_dir: the server's data folder.
        timeout: seconds to wait for it to exit.

    Returns:
        The pid of the stopped server, or None when none was running.

    Raises:
        TimeoutError: the server did not stop within ``timeout``.

    """
    pid = running_pid(data_dir)
    if pid is None:
        return None
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while running_pid(data_dir) == pid or _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"PostgreSQL (pid {pid}) did not stop within {timeout:.0f} s.")
        time.sleep(0.1)
    logger.info("stopped the embedded PostgreSQL (pid %d) in %s", pid, data_dir)
    return pid
