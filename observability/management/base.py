"""The base of this project's management commands: every failure takes the one path."""

from __future__ import annotations

from django.core.management.base import BaseCommand, OutputWrapper

from observability.exceptions import command_errors


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

    def execute(self, *args, **options):
        """Run the command inside the one error path."""
        if options.get("stdout"):
            self.stdout = OutputWrapper(options["stdout"])  # as BaseCommand.execute does
        as_json = bool(self.json_option and options.get(self.json_option))
        with command_errors(json_output=self.stdout if as_json else None):
            return super().execute(*args, **options)
