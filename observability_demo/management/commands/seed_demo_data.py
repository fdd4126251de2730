"""Fill the bot tables of a database of our own with deterministic, realistic demo data."""

from __future__ import annotations

from django.conf import settings

from observability import config
from observability.exceptions import BadInput
from observability.management.base import ObservabilityCommand
from observability_demo import demo_data


class Command(ObservabilityCommand):
    """``manage.py seed_demo_data [--size small|large] [--sessions N] ... [--replace]``."""

    help = (
        "Write deterministic demo data (salons, clients, WhatsApp sessions in every state ops "
        "must recognise) into the bot tables of the embedded database."
    )

    def add_arguments(self, parser):
        """Declare the options."""
        parser.add_argument(
            "--size",
            choices=sorted(demo_data.SIZES),
            default="small",
            help="small: 40 sessions, 40,000 keys, 1,500 clients (default); "
            "large: 1,000 sessions, 1,000,000 keys, 100,000 clients.",
        )
        parser.add_argument(
            "--sessions", type=int, default=None, help="Number of WhatsApp sessions."
        )
        parser.add_argument("--keys", type=int, default=None, help="Number of whatsapp_keys rows.")
        parser.add_argument("--clients", type=int, default=None, help="Number of clients rows.")
        parser.add_argument(
            "--seed",
            type=int,
            default=1,
            help="Seed of every random choice: the same seed gives the same rows (default 1).",
        )
        exclusive = parser.add_mutually_exclusive_group()
        exclusive.add_argument(
            "--replace",
            action="store_true",
            help="Empty the four bot tables first (their data is lost).",
        )
        exclusive.add_argument(
            "--if-empty",
            action="store_true",
            help="Write only when the bot tables are empty; otherwise do nothing and succeed.",
        )
        parser.add_argument(
            "--database", default=None, help="Database alias (default: the bot alias)."
        )
        parser.add_argument(
            "--allow-external-database",
            action="store_true",
            help="Allow writing into a configured (not embedded) database, such as a staging "
            "copy. Never point this at production.",
        )

    def handle(self, *args, **options):
        """Validate the size, write the rows, and report what was written."""
        alias = config.bot_database_alias() if options["database"] is None else options["database"]
        if alias not in settings.DATABASES:
            raise BadInput(
                f"Unknown database alias {alias!r}: use one of {', '.join(settings.DATABASES)}."
            )
        if not settings.EMBEDDED_DATABASE and not options["allow_external_database"]:
            raise BadInput(
                "Refusing to write demo data into a configured database (DATABASE_URL / "
                "BOT_DATABASE_URL are set): demo data belongs in the embedded database. Pass "
                "--allow-external-database for a staging copy; never use it on production."
            )
        named = demo_data.SIZES[options["size"]]
        size = demo_data.DemoSize(
            sessions=_pick(options["sessions"], named.sessions),
            keys=_pick(options["keys"], named.keys),
            clients=_pick(options["clients"], named.clients),
        )
        try:
            summary = demo_data.seed_demo_data(
                size,
                alias=alias,
                seed=options["seed"],
                replace=options["replace"],
                if_empty=options["if_empty"],
            )
        except FileNotFoundError as error:
            raise BadInput(
                f"{error} Create them first: python manage.py create_bot_schema"
            ) from error
        except FileExistsError as error:
            raise BadInput(
                f"{error} Refusing to add demo rows to them: pass --replace to empty the four "
                "tables first (their data is lost), or --if-empty to skip quietly."
            ) from error

        if summary.skipped:
            self.stdout.write(f"The bot tables in {alias!r} already hold data: nothing written.")
            return
        self.stdout.write(
            f"Wrote {summary.companies:,} salons, {summary.clients:,} clients, "
            f"{summary.sessions:,} WhatsApp sessions and {summary.keys:,} keys into "
            f"{alias!r} in {summary.seconds:.1f} s (seed {options['seed']}).",
            self.style.SUCCESS,
        )


def _pick(given: int | None, default: int) -> int:
    return default if given is None else given
