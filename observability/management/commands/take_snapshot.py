"""Take one snapshot of every session's health now (what the every-minute schedule does)."""

from __future__ import annotations

from observability import snapshot
from observability.management.base import ObservabilityCommand


class Command(ObservabilityCommand):
    """``manage.py take_snapshot [--full | --incremental]``."""

    help = (
        "Judge the WhatsApp sessions and store their latest state and changes (the snapshot "
        "every page reads); incremental unless the last full recount is over an hour old."
    )

    def add_arguments(self, parser):
        """Declare the options."""
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--full",
            action="store_const",
            const=True,
            dest="full",
            help="Recount every session (corrects rows the bot deleted since the last one).",
        )
        mode.add_argument(
            "--incremental",
            action="store_const",
            const=False,
            dest="full",
            help="Recompute only the sessions whose rows changed since the last snapshot.",
        )

    def handle(self, *args, full=None, **options):
        """Refresh once and say what was done; a held lock is not an error."""
        result = snapshot.refresh(full=full)
        if result.outcome == snapshot.SKIPPED:
            self.stdout.write(
                "Skipped: another snapshot refresh is running right now.", self.style.WARNING
            )
            return
        self.stdout.write(
            f"{result.kind.capitalize()} snapshot taken in {result.duration:.2f} s: "
            f"{result.sessions_refreshed} session(s) recomputed, {result.sessions_total} "
            f"stored, {result.changes} change(s) recorded, {result.pruned} old change(s) "
            "pruned.",
            self.style.SUCCESS,
        )
