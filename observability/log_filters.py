"""Logging filters: keep expected failures to one line in the logs."""

from __future__ import annotations

import logging


class ExpectedFailureOneLine(logging.Filter):
    """
    Turn a warning with a traceback into one line that names the error.

    django-health-check logs every failing check as a warning with its traceback. A failing
    check is an answer (the monitor pages on it), not a bug, and a monitor polling every few
    seconds would fill the logs with identical tracebacks. Unexpected errors are logged at
    ERROR by the library and keep their traceback. Check messages are written for operators
    and never carry secrets, so they may be logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Fold the exception's text into the message and drop the traceback."""
        if record.levelno == logging.WARNING and record.exc_info and record.exc_info[1]:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


#: What django-health-check logs for every failing check on every poll.
_CHECK_FAILED = "Health check %r failed"


class HealthPollOncePerChange(logging.Filter):
    """
    Keep health polls out of the logs: a check's change of state is logged once instead.

    A monitor polls every few seconds. django-health-check logs each failing check on each
    poll, and the development server logs each request: the same line every few seconds,
    burying everything else. :func:`observability.health_views.log_state_changes` logs
    each check's change (OK to WARN, WARN to FAIL, back to OK) once; this filter drops the
    per-poll lines (the library's "failed" warnings, and the development server's request
    lines for the health and metrics URLs). Unexpected errors (logged at ERROR) stay.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a per-poll line."""
        if record.name.split(".", 1)[0] == "health_check":
            return not (record.levelno == logging.WARNING and record.msg == _CHECK_FAILED)
        if record.name == "django.server" and record.args:
            request_line = str(record.args[0]) if isinstance(record.args, tuple) else ""
            parts = request_line.split()
            return not (len(parts) >= 2 and _is_poll_path(parts[1]))
        return True


def _is_poll_path(path: str) -> bool:
    from django.urls import NoReverseMatch, reverse

    try:
        health, metrics = reverse("observability:health"), reverse("observability:metrics")
    except NoReverseMatch:  # the host project did not include the app's URLs
        return False
    path = path.split("?", 1)[0]
    return path.startswith(health) or path == metrics
