"""Delete keys of sessions that have no whatsapp_auth row (a dry run unless --apply)."""

from __future__ import annotations

from observability import cleanup
from observability.cleanup import selection
from observability.management.commands._cleanup import CleanupCommand, started_by


class Command(CleanupCommand):
    """Count, or with --apply delete, orphan keys unwritten for the minimum age."""

    help = (
        "Delete whatsapp_keys rows whose session has no whatsapp_auth row and that were not "
        "written for the minimum age (default 7 days); a dry run unless --apply."
    )

    def add_arguments(self, parser):
        """Add --grace-days (the minimum age) to the shared options."""
        super().add_arguments(parser)
        parser.add_argument(
            "--grace-days",
            type=float,
            help="Only keys not written for this many days (default 7).",
        )

    def run(self, options, progress):
        """Call the service."""
        return cleanup.cleanup_orphan_keys(
            salons=options["salons"],
            key_types=options["key_types"],
            min_age=selection.days(options["grace_days"]),
            batch_size=options["batch_size"],
            apply=options["apply"],
            started_by=started_by(),
            progress=progress,
        )

    def render(self, report):
        """Say which cut-off was used, then the counts."""
        self.stdout.write(f"Orphan keys: not written since {report.parameters['cutoff']}.")
        super().render(report)
