"""Say whether the embedded PostgreSQL (demo, tests) runs, and stop it."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from observability_demo import embedded


class Command(BaseCommand):
    """``embedded_db status`` / ``embedded_db stop``: the demo's server outlives Ctrl-C."""

    help = (
        "Show whether the embedded PostgreSQL of the demo runs (status), or stop it (stop); "
        "its data stays in the data folder and the next command starts it again."
    )

    def add_arguments(self, parser):
        """The action, and the data folder (default: the project's)."""
        parser.add_argument("action", choices=("status", "stop"), help="status or stop.")
        parser.add_argument(
            "--data-dir",
            type=Path,
            help="The server's data folder (default: OBSERVABILITY_DATA_DIR, var/pgdata).",
        )

    def handle(self, *args, action, data_dir, **options):
        """Report or stop the server of the data folder."""
        if data_dir is None:
            if not getattr(settings, "EMBEDDED_DATABASE", False):
                raise CommandError(
                    "No embedded PostgreSQL: database URLs are configured, and this project "
                    "never stops a server it did not start."
                )
            data_dir = Path(settings.EMBEDDED_DATA_DIR)
        if action == "status":
            pid = embedded.running_pid(data_dir)
            if pid is None:
                self.stdout.write(f"Not running (data folder {data_dir}).")
            else:
                self.stdout.write(f"Running: pid {pid}, data folder {data_dir}.")
            return
        try:
            pid = embedded.stop(data_dir)
        except TimeoutError as error:
            raise CommandError(f"{error} Stop the demo's web server and worker first.") from error
        if pid is None:
            self.stdout.write(f"Not running (data folder {data_dir}); nothing to stop.")
        else:
            self.stdout.write(
                self.style.SUCCESS(f"Stopped the embedded PostgreSQL (pid {pid}) in {data_dir}.")
            )
