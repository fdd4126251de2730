"""Delete keys unwritten for longer than their type's retention (a dry run unless --apply)."""

from __future__ import annotations

from observability import cleanup
from observability.management.commands._cleanup import CleanupCommand, started_by


class Command(CleanupCommand):
    """Count, or with --apply delete, keys past their type's retention; show what is kept."""

    help = (
        "Delete whatsapp_keys rows unwritten for longer than their key type's retention "
        "(observability/cleanup/policy.py: pre-keys, app-state keys, LID mappings, identity "
        "keys and unknown types never), in batches under a lock; a dry run unless --apply."
    )

    def run(self, options, progress):
        """Call the service."""
        return cleanup.cleanup_expired_keys(
            salons=options["salons"],
            key_types=options["key_types"],
            batch_size=options["batch_size"],
            apply=options["apply"],
            started_by=started_by(),
            progress=progress,
        )

    def render(self, report):
        """The retention applied to each key type, then the counts and what is kept."""
        self.stdout.write("Retention by key type (time since the last write):")
        for rule in report.parameters["retention"]:
            days = rule["retention_days"]
            keep = f"{days:g} days" if days is not None else "never deleted for its age"
            self.stdout.write(f"  {rule['key_type']:<24}{keep}")
        super().render(report)
