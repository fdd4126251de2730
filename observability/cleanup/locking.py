"""The run-level PostgreSQL advisory lock that keeps two cleanup runs from overlapping."""

from __future__ import annotations

import hashlib
import logging

from django.db import connections

from observability.exceptions import BotDatabaseUnavailable, CleanupAlreadyRunning

logger = logging.getLogger(__name__)

#: The advisory lock key every cleanup run takes (a signed 64-bit number derived from the
#: name, so it cannot collide by accident with a small hand-picked key of the bot's).
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"observability.cleanup").digest()[:8], "big", signed=True
)


class CleanupLock:
    """
    A session-level advisory lock held on a dedicated connection for the whole run.

    Why a dedicated connection: the batches run on Django's (pooled) connection and commit
    one by one; a session lock taken there could go back to the pool still held. A connection
    of its own is closed when the run ends, and PostgreSQL releases the lock by itself when
    the process dies (SIGKILL included), so a crash never leaves the lock behind.

    Args:
        alias: the bot database alias (the lock lives in that database).

    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._conn = None

    def _connect(self):
        import psycopg

        params = connections[self.alias].get_connection_params()
        for django_only in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(django_only, None)
        base_name = params.get("application_name") or "observability"
        params["application_name"] = f"{base_name}:cleanup-lock"[:63]
        return psycopg.connect(**params, autocommit=True)

    def acquire(self) -> None:
        """
        Take the lock without waiting.

        Raises:
            CleanupAlreadyRunning: another run holds it.

        """
        conn = self._connect()
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            raise CleanupAlreadyRunning()
        self._conn = conn
        logger.debug("cleanup lock acquired")

    def ensure_held(self) -> None:
        """
        Check, before each batch, that the lock's connection (and so the lock) is alive.

        Raises:
            BotDatabaseUnavailable: the connection was lost, so the lock may be gone and
                another run could start: this run must stop.

        """
        import psycopg

        try:
            self._conn.execute("SELECT 1")
        except (psycopg.Error, AttributeError) as error:
            raise BotDatabaseUnavailable(
                "The cleanup lost its lock connection to the bot database; stopped so two "
                "runs cannot overlap. Retry when the database is reachable."
            ) from error

    def release(self) -> None:
        """Release the lock and close its connection (closing alone would release it too)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        except Exception:  # the connection is gone: so is the lock
            logger.warning("cleanup lock connection was already lost at release")
        finally:
            conn.close()

    def __enter__(self) -> CleanupLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
