"""The bot alias's circuit breaker and backend (observability.circuit_breaker, .db_backend)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connections

from observability import circuit_breaker
from observability.circuit_breaker import CircuitBreaker, CircuitOpen
from tests.fault_support import HungServer
from tests.health_support import closed_port, extra_alias


@pytest.fixture
def short_cooloff(settings, django_db_blocker):
    """A 0.3 s cool-off; connections to the test's own dead servers allowed; breakers reset."""
    settings.OBSERVABILITY_BOT_BREAKER_COOLOFF = timedelta(milliseconds=300)
    with django_db_blocker.unblock():
        yield
    circuit_breaker.reset_all()


def test_circuit_breaker__open_then_one_probe_then_closed(short_cooloff):
    """After a failure callers are refused; after the cool-off one probes; success closes."""
    breaker = CircuitBreaker("test")
    breaker.admit()  # closed
    breaker.failed(OSError("refused"))
    with pytest.raises(CircuitOpen, match="refused"):
        breaker.admit()
    time.sleep(0.35)
    breaker.admit()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.admit()  # the others, while the probe tries
    breaker.succeeded()
    breaker.admit()
    assert not breaker.is_open


def test_circuit_breaker__a_busy_pool_closes_it(short_cooloff):
    """An error that proves the server is up (every connection busy) does not open it."""
    breaker = CircuitBreaker("test")
    with pytest.raises(TimeoutError), breaker.attempt(reachable=lambda error: True):
        raise TimeoutError
    assert not breaker.is_open
    with pytest.raises(TimeoutError), breaker.attempt():
        raise TimeoutError
    assert breaker.is_open


def _pooled(timeout: float) -> dict:
    options = dict(connections.settings["bot"]["OPTIONS"])
    options["pool"] = {"min_size": 0, "max_size": 2, "timeout": timeout}
    return options


def test_bot_backend__hung_server_is_asked_once_per_cooloff(short_cooloff):
    """A server that never answers: the next connection fails at once, without connecting."""
    with (
        HungServer() as hung,
        extra_alias("hungbot", HOST="127.0.0.1", PORT=str(hung.port), OPTIONS=_pooled(0.3)),
    ):
        started = time.monotonic()
        with pytest.raises(OperationalError):
            connections["hungbot"].ensure_connection()  # waits the pool timeout
        first = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(OperationalError, match="not trying again"):
            connections["hungbot"].ensure_connection()
        assert time.monotonic() - started < 0.1 < first
        assert hung.accepted == 1
        time.sleep(0.35)
        with pytest.raises(OperationalError):
            connections["hungbot"].ensure_connection()  # the probe: a fresh pool connects
        assert hung.accepted == 2


def test_bot_backend__refused_connection_fails_the_waiting_request_at_once(short_cooloff):
    """Through a pool whose timeout is 30 s, a refused connection fails in well under 1 s."""
    port = str(closed_port())
    with extra_alias("refusedbot", HOST="127.0.0.1", PORT=port, OPTIONS=_pooled(30)):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="refused"):
            connections["refusedbot"].ensure_connection()
        assert time.monotonic() - started < 1


@pytest.mark.django_db(databases=["default", "bot"], transaction=True)
def test_bot_backend__connecting_gives_back_the_idle_default_connection():
    """A request about to wait for the bot database holds no default connection meanwhile."""
    from django.db import transaction

    connections["bot"].close()
    connections["default"].ensure_connection()
    connections["bot"].ensure_connection()
    assert connections["default"].connection is None  # back in its pool
    connections["bot"].close()
    with transaction.atomic(using="default"):
        connections["bot"].ensure_connection()
        assert connections["default"].connection is not None  # never inside a transaction
