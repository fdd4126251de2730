"""Delete expired WhatsApp keys (a dry run unless --apply)."""

from __future__ import annotations

from observability import cleanup
from observability.cleanup import selection
from observability.management.commands._cleanup import CleanupCommand, started_by


class Command(CleanupCommand):
    """Count, or with --apply delete, keys expired longer ago than the grace period."""

    help = (
        "Delete whatsapp_keys rows whose expires_at passed more than the grace period ago "
        "(default 7 days), in batches under a lock; a dry run unless --apply."
    )

    def add_arguments(self, parser):
        """Add --grace-days to the shared options."""
        super().add_arguments(parser)
        parser.add_argument(
            "--grace-days",
            type=float,
            help="Keep keys expired less than this many days ago (default 7).",
        )

    def run(self, options, progress):
        """Call the service."""
        return cleanup.cleanup_expired_keys(
            salons=options["salons"],
            key_types=options["key_types"],
            grace=selection.days(options["grace_days"]),
            batch_size=options["batch_size"],
            apply=options["apply"],
            started_by=started_by(),
            progress=progress,
        )

    def render(self, report):
        """Say which cut-off was used, then the counts."""
        self.stdout.write(f"Expired keys: expires_at before {report.parameters['cutoff']}.")
        super().render(report)
