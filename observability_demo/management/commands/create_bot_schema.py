"""Create the bot's tables in a database of this project's own (demo, tests)."""

from __future__ import annotations

from django.conf import settings

from observability import config, schema
from observability.exceptions import BadInput
from observability.management.base import ObservabilityCommand


class Command(ObservabilityCommand):
    """``manage.py create_bot_schema [--replace]``."""

    help = (
        "Create the bot's tables (whatsapp_auth, whatsapp_keys, companies, clients) exactly as "
        "production has them, in a database of our own. Never run this against production."
    )

    def add_arguments(self, parser):
        """Declare the options."""
        parser.add_argument(
            "--database",
            default=None,
            help="Database alias to create the tables in (default: the bot alias).",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Drop the bot tables first if they exist. Their data is lost.",
        )

    def handle(self, *args, database=None, replace=False, **options):
        """Create the tables, or refuse when they exist and --replace was not given."""
        alias = config.bot_database_alias() if database is None else database
        if alias not in settings.DATABASES:
            raise BadInput(
                f"Unknown database alias {alias!r}: use one of {', '.join(settings.DATABASES)}."
            )
        try:
            schema.create_bot_tables(alias, replace=replace)
        except FileExistsError as error:
            raise BadInput(
                f"{error} Refusing to touch them: pass --replace to drop and recreate them "
                "(their data is lost)."
            ) from error
        self.stdout.write(
            f"Created the bot tables {', '.join(schema.BOT_TABLES)} in {alias!r}.",
            self.style.SUCCESS,
        )
