"""Expected failures (a failing health check) log one line, not a traceback."""

from __future__ import annotations

import logging
import sys

import pytest

from observability.log_filters import ExpectedFailureOneLine, HealthPollOncePerChange


def _record(level: int) -> logging.LogRecord:
    try:
        raise RuntimeError("3 of 40 session(s) failing")
    except RuntimeError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "health_check.base",
        level,
        __file__,
        1,
        "Health check %r failed",
        ("WhatsAppStore()",),
        exc_info,
    )


def test_expected_failure_one_line__warning_loses_its_traceback_keeps_the_reason():
    """A failing check's warning becomes one line naming the check and why it failed."""
    record = _record(logging.WARNING)
    assert ExpectedFailureOneLine().filter(record) is True
    line = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert line == "WARNING Health check 'WhatsAppStore()' failed: 3 of 40 session(s) failing"
    assert "Traceback" not in line


def test_expected_failure_one_line__errors_keep_their_traceback():
    """An unexpected error (logged at ERROR) still shows its traceback."""
    record = _record(logging.ERROR)
    ExpectedFailureOneLine().filter(record)
    assert "Traceback" in logging.Formatter().format(record)


def test_logging_settings__console_handler_uses_the_filter(settings):
    """The project's console handler applies the filter to every record it writes."""
    handler = settings.LOGGING["handlers"]["console"]
    assert "expected_failure_one_line" in handler["filters"]


def _server_line(request_line: str) -> logging.LogRecord:
    return logging.LogRecord(
        "django.server", logging.INFO, __file__, 1, '"%s" %s %s', (request_line, "200", "99"), None
    )


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("GET /health/ HTTP/1.1", False),
        ("GET /health/db/?format=json HTTP/1.1", False),
        ("GET /metrics HTTP/1.1", False),
        ("GET /admin/ HTTP/1.1", True),
        ("GET /healthy-salons/ HTTP/1.1", True),
    ],
)
def test_health_poll_once__drops_the_dev_servers_poll_lines(line, kept):
    """The development server's lines for health and metrics polls go; other requests stay."""
    assert HealthPollOncePerChange().filter(_server_line(line)) is kept


def test_health_poll_once__drops_the_librarys_per_poll_warning_keeps_errors():
    """The library's 'Health check failed' warning goes (logged once per change instead)."""
    assert HealthPollOncePerChange().filter(_record(logging.WARNING)) is False
    error = _record(logging.ERROR)
    error.name = "health_check"
    assert HealthPollOncePerChange().filter(error) is True


def test_logging_settings__poll_loggers_use_the_filter(settings):
    """The library's logger and the development server's logger apply the poll filter."""
    for name in ("health_check", "django.server"):
        assert "health_poll_once" in settings.LOGGING["loggers"][name]["filters"]
