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
