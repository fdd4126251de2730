"""Report salons stored under both spellings; remove the stale side (--apply) or restore it."""

from __future__ import annotations

from observability import cleanup, moments
from observability.cleanup import selection
from observability.management.commands._cleanup import CleanupCommand, started_by


class Command(CleanupCommand):
    """Report duplicated sessions; with --apply back up and remove each stale side."""

    help = (
        "Report salons stored under both 962302 and company_962302 and, with --apply, remove "
        "the stale side after writing it to a backup file; --restore puts a backup back."
    )
    key_options = False

    def add_arguments(self, parser):
        """Add --min-idle-hours and --restore to the shared options."""
        super().add_arguments(parser)
        parser.add_argument(
            "--min-idle-hours",
            type=float,
            help="Only remove a side unwritten for this many hours (default 24).",
        )
        parser.add_argument(
            "--restore",
            metavar="BACKUP",
            help="Re-insert the rows of this backup file (.jsonl.gz) instead; needs --apply "
            "to write (and a role with INSERT), otherwise only checks the file.",
        )

    def run(self, options, progress):
        """Call the service."""
        from observability.exceptions import BadInput

        if options["restore"]:
            if options["salons"]:
                raise BadInput("--restore takes no --salon: the backup names its session.")
            return cleanup.restore_backup(
                options["restore"], apply=options["apply"], started_by=started_by()
            )
        hours = options["min_idle_hours"]
        if hours is not None and hours < 0:
            raise BadInput(f"--min-idle-hours cannot be negative (got {hours}).")
        return cleanup.cleanup_duplicates(
            salons=options["salons"],
            min_idle=selection.hours(hours),
            apply=options["apply"],
            started_by=started_by(),
        )

    def render(self, report):
        """Both sides of each pair, the verdict, the backups."""
        if report.operation == "restore":
            self._render_restore(report)
            return
        if not report.duplicates:
            self.stdout.write("No salon is stored under both spellings.")
        for pair in report.duplicates:
            self.stdout.write(f"Salon {pair.salon_id}", self.style.MIGRATE_HEADING)
            for side in (pair.bare, pair.prefixed):
                keys = ", ".join(f"{t} {n}" for t, n in sorted(side.keys.items())) or "none"
                auth = "no auth row"
                if side.has_auth:
                    auth = (
                        f"auth created {_at(side.auth_created_at)}, "
                        f"updated {_at(side.auth_updated_at)}"
                    )
                self.stdout.write(
                    f"  {side.session_id:<22} {auth}; {side.total_keys} keys ({keys}); "
                    f"newest write {_at(side.newest_write)}"
                )
            style = self.style.SUCCESS if pair.verdict != "refused" else self.style.WARNING
            action = {
                "remove-stale": f"would remove {pair.stale!r}, keep {pair.live!r}",
                "removed": f"removed {pair.stale!r}, kept {pair.live!r}",
                "refused": "left alone",
            }[pair.verdict]
            self.stdout.write(f"  -> {action}: {pair.reason}", style)
            if pair.backup_path:
                self.stdout.write(f"  backup: {pair.backup_path}")
        super().render(report)

    def _render_restore(self, report):
        rows = report.total_seen
        if report.dry_run:
            self.stdout.write(
                f"The backup is complete: {rows} rows of {report.parameters['session_id']!r}."
                " Add --apply to insert them.",
                self.style.WARNING,
            )
        else:
            self.stdout.write(
                f"Restored {report.parameters.get('restored', 0)} rows of "
                f"{report.parameters['session_id']!r}.",
                self.style.SUCCESS,
            )
        self.stdout.write(f"Recorded as cleanup run #{report.run_id}.")


def _at(value) -> str:
    return moments.text(value)
