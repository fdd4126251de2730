"""The base of this project's management commands: every failure takes the one path."""

from __future__ import annotations

import re

from django.core.management.base import BaseCommand, OutputWrapper

from observability.exceptions import command_errors

#: C0 and C1 control characters but tab and newline: what a terminal may act on.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    r"""
    The text with every control character shown as ``\uNNNN`` instead of acted on.

    Session ids, salon names and reasons come from the bot's tables: an ``ESC [2J`` or a
    carriage return in one of them would clear an operator's terminal, move the cursor over
    a FAIL line, or set its title, when a command prints it. Tabs and newlines stay. The
    escape is JSON's own, so a ``--json`` line stays valid JSON (``json.dumps`` has already
    escaped C0 characters; C1 ones such as the one-byte CSI ``U+009B`` it leaves raw).
    """
    return _CONTROL.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


class PrintableOutput(OutputWrapper):
    """
    Standard output that escapes control characters before the command's style colours it.

    Colour a line by passing the style as ``style_func`` (``write(text, self.style.SUCCESS)``):
    a line coloured before ``write`` would have its colour codes escaped too.
    """

    def write(self, msg="", style_func=None, ending=None):
        """Escape, then write as Django does."""
        super().write(printable(msg), style_func, ending)


class ObservabilityCommand(BaseCommand):
    """
    A command failing with the vocabulary (``observability.exceptions``), never a traceback.

    Whatever ``handle`` raises from the vocabulary, and any database error (translated, the
    alias read from the failing connection: the bot's, or this project's own for the run
    records), leaves through :func:`~observability.exceptions.command_errors`: one line with
    the message and what to do on stderr, the error's exit code, and with ``--json`` the JSON
    error object on stdout. Bad input is raised as ``BadInput`` (exit 2) like any other error.
    """

    #: The ``dest`` of the command's ``--json`` flag (None: the command has none).
    json_option: str | None = None

    def __init__(self, stdout=None, stderr=None, no_color=False, force_color=False):
        """Write through :class:`PrintableOutput`: nothing from the bot reaches a terminal raw."""
        super().__init__(stdout, stderr, no_color, force_color)
        self.stdout = PrintableOutput(self.stdout._out)

    def execute(self, *args, **options):
        """Run the command inside the one error path."""
        if options.get("stdout"):
            self.stdout = PrintableOutput(options["stdout"])  # as BaseCommand.execute does
        as_json = bool(self.json_option and options.get(self.json_option))
        with command_errors(json_output=self.stdout if as_json else None):
            return super().execute(*args, **options)
