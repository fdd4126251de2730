"""Compare the live bot database's tables with the models and name every difference."""

from __future__ import annotations

import json

from observability import config, schema
from observability.exceptions import BadInput, SchemaDrift, command_error
from observability.management.base import ObservabilityCommand


class Command(ObservabilityCommand):
    """``manage.py check_bot_schema [--database ALIAS] [--schema NAME] [--json]``."""

    json_option = "as_json"
    help = (
        "Compare the bot database's columns (types and nullability) with this project's models "
        "and list every difference; exits non-zero on drift. Needs only read access."
    )

    def add_arguments(self, parser):
        """Declare the options."""
        parser.add_argument(
            "--database",
            default=None,
            help="Database alias to inspect (default: the bot alias).",
        )
        parser.add_argument(
            "--schema",
            default=None,
            dest="schema_name",
            help="PostgreSQL schema to inspect (default: the tables on the search path).",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="Print the report as JSON instead of text.",
        )

    def handle(self, *args, database=None, schema_name=None, as_json=False, **options):
        """Run the check, print the report, and fail with SchemaDrift's exit code on drift."""
        from django.conf import settings

        alias = config.bot_database_alias() if database is None else database
        if alias not in settings.DATABASES:
            raise BadInput(
                f"Unknown database alias {alias!r}: use one of {', '.join(settings.DATABASES)}."
            )
        if schema_name is not None and (not schema_name or "\x00" in schema_name):
            raise BadInput(
                f"{schema_name[:40]!r} is not a schema name: give the name of a PostgreSQL "
                "schema, e.g. --schema public."
            )
        report = schema.check_drift(alias, schema_name=schema_name)

        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        elif report.clean:
            self.stdout.write(
                f"The bot tables in {alias!r} match the models: no drift.", self.style.SUCCESS
            )
        else:
            for difference in report.differences:
                self.stdout.write(difference.describe(), self.style.ERROR)
        if not report.clean:
            drift = SchemaDrift(
                f"{len(report.differences)} difference(s) between the bot tables in {alias!r} "
                "and the models: update the models before trusting the admin."
            )
            # The report above is the output (JSON with --json): no error object after it.
            raise command_error(drift)
