"""
A per-process circuit breaker for one database server: after a failed connection, fail at once.

Without it every request to a bot database that is down waits on its own: the pool's timeout
for a refused connection, ``connect_timeout`` for a server that accepts and never answers.
With it the first failure opens the breaker for ``config.bot_breaker_cooloff()`` (a few
seconds): meanwhile every connection attempt raises :class:`CircuitOpen` at once, which the
project answers like any other unreachable bot database (503 "Bot database unavailable" with
``Retry-After``, a FAILed health check). When the cool-off has passed one caller is let through
to try again (half-open): its success closes the breaker, its failure opens it for another
cool-off, and the other callers keep failing fast while it tries.

State lives in this process only: gunicorn workers are processes, each learns on its own (one
slow answer per worker and cool-off at worst).

Why not pybreaker: its ``CircuitBreaker.call`` holds one lock for the whole call, so in a
threaded worker every connection attempt would queue behind one that hangs; and failures here
are also seen outside any call (the pool connects in its own threads,
``observability.db_backend``). What is needed is one timestamp under a lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator

import psycopg

from observability import config

logger = logging.getLogger(__name__)


class CircuitOpen(psycopg.OperationalError):
    """
    Raised instead of connecting while the breaker is open.

    An ``OperationalError``, so Django wraps it and the project translates it like any failed
    connection (``exceptions.from_database_error``: bot database unavailable).
    """


class CircuitBreaker:
    """
    Open after a failure, half-open after the cool-off (one caller tries), closed on success.

    The whole state is ``_open_until``: None when closed; otherwise no caller is let through
    before that monotonic time. Letting the probe through moves it one cool-off further, so the
    other callers keep failing fast while the probe tries, and a probe that never reports
    back frees the next one after a cool-off.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._last_error = ""

    @property
    def is_open(self) -> bool:
        """True while callers are refused (open, or half-open with a probe under way)."""
        with self._lock:
            return self._open_until is not None and time.monotonic() < self._open_until

    def admit(self) -> None:
        """
        Return when the caller may connect; raise :class:`CircuitOpen` while the breaker is open.

        Raises:
            CircuitOpen: a connection failed less than a cool-off ago (or another caller is
                trying again right now).

        """
        with self._lock:
            if self._open_until is None:
                return
            now = time.monotonic()
            if now < self._open_until:
                raise self._refusal(now)
            # Half-open: this caller tries; the others fail fast for one more cool-off.
            self._open_until = now + config.bot_breaker_cooloff().total_seconds()

    def refusal(self) -> CircuitOpen:
        """The error of a caller refused now (also for one whose wait another attempt ended)."""
        with self._lock:
            return self._refusal(time.monotonic())

    def _refusal(self, now: float) -> CircuitOpen:
        remaining = max(0.0, (self._open_until or now) - now)
        return CircuitOpen(
            f"{self.name}: a connection failed moments ago ({self._last_error}); "
            f"not trying again for {remaining:.1f} s"
        )

    def succeeded(self) -> None:
        """A connection was made: close the breaker."""
        with self._lock:
            was_open = self._open_until is not None
            self._open_until = None
        if was_open:
            logger.info("%s: connected again; connection attempts allowed", self.name)

    def failed(self, error: BaseException) -> None:
        """A connection attempt failed: refuse every caller for one cool-off."""
        cooloff = config.bot_breaker_cooloff().total_seconds()
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        with self._lock:
            was_closed = self._open_until is None
            self._open_until = time.monotonic() + cooloff
            self._last_error = reason
        if was_closed:
            logger.warning(
                "%s: connection failed (%s); failing fast for %g s", self.name, reason, cooloff
            )

    @contextlib.contextmanager
    def attempt(
        self, *, reachable: Callable[[BaseException], bool] = lambda error: False
    ) -> Iterator[None]:
        """
        Admit the caller, then record how its connection attempt (the block) ended.

        Args:
            reachable: True for an error that proves the server is up (every pooled connection
                busy): the breaker closes instead of opening.

        Raises:
            CircuitOpen: the breaker is open; the block does not run.

        """
        self.admit()
        try:
            yield
        except CircuitOpen:
            raise  # another caller's attempt failed and was recorded
        except Exception as error:
            if reachable(error):
                self.succeeded()
            else:
                self.failed(error)
            raise
        self.succeeded()


_breakers: dict[Hashable, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(key: Hashable, name: str) -> CircuitBreaker:
    """This process's breaker for ``key`` (one per database server and alias)."""
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = CircuitBreaker(name)
        return breaker


def reset_all() -> None:
    """Forget every breaker of this process: all closed (tests that stop a server on purpose)."""
    with _breakers_lock:
        _breakers.clear()
