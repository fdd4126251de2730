"""Expected failures (a failing health check) log one line, not a traceback."""

from __future__ import annotations

import logging
import sys

from observability.log_filters import ExpectedFailureOneLine


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
