"""List every WhatsApp session with its status and reasons, worst first (table or JSON)."""

from __future__ import annotations

import json
from datetime import datetime

from observability import snapshot
from observability.admin import display
from observability.exceptions import SnapshotMissing
from observability.management.base import ObservabilityCommand, printable
from observability.models import SessionState
from observability.rules import Status
from observability.sessions import SessionHealth

_STATUSES = [str(status) for status in Status]


class Command(ObservabilityCommand):
    """``manage.py whatsapp_sessions [--status OK|WARN|FAIL] [--json]``."""

    json_option = "as_json"
    help = (
        "List every WhatsApp session with its status and the reasons behind it, worst first; "
        "each reason says what to do. Reads the stored snapshot, as every admin page and "
        "/health/whatsapp/ do (history rules included), never the bot database: the table "
        "starts with the snapshot's age, and a snapshot older than the stale threshold is "
        "listed all the same with a warning on stderr (exit 0). Before the first snapshot it "
        "exits 7 (snapshot_missing): run take_snapshot, or start the worker."
    )

    def add_arguments(self, parser):
        """Declare the options."""
        parser.add_argument(
            "--status",
            type=str.upper,
            choices=_STATUSES,
            help="Only sessions with this status (OK, WARN or FAIL).",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help=(
                "Print a JSON list of objects (session_id, status, since, since_or_earlier, "
                "snapshot_taken_at, reasons, facts) instead; since is when the status last "
                "changed, from the stored snapshot; since_or_earlier is true when the status "
                "was already so at the store's first snapshot (it began then or earlier: the "
                "moment is not known); snapshot_taken_at is the snapshot's moment."
            ),
        )

    def handle(self, *args, status=None, as_json=False, **options):
        """Read the stored snapshot and print it (errors: the one path, JSON with --json)."""
        fresh = snapshot.freshness()
        if fresh.snapshot is None:
            raise SnapshotMissing(
                "No session health snapshot yet: this command lists the stored snapshot, "
                "as every page does."
            )
        if fresh.status is not Status.OK or fresh.failed_since is not None:
            self.stderr.write(f"Warning: {fresh.message}")
        states = SessionState.objects.all()
        if status is not None:
            states = states.filter(status=status)
        first = snapshot.baseline()
        listed = [
            (snapshot.state_health(state), state.status_since, state.status_since == first)
            for state in states
        ]
        if as_json:
            taken_at = fresh.snapshot.taken_at.isoformat()
            payload = [
                {
                    **health.as_dict(),
                    "since": since.isoformat(),
                    "since_or_earlier": at_baseline,
                    "snapshot_taken_at": taken_at,
                }
                for health, since, at_baseline in listed
            ]
            self.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2))
            return
        self.stdout.write(fresh.message)
        self._table(listed)

    def _table(self, listed: list[tuple[SessionHealth, datetime, bool]]) -> None:
        """One line per session, then its reasons (and notes) indented below it."""
        if not listed:
            self.stdout.write("No sessions.")
            return
        style = {
            Status.FAIL: self.style.ERROR,
            Status.WARN: self.style.WARNING,
            Status.OK: self.style.SUCCESS,
        }
        rows = [
            (
                str(health.status),
                health.session_id,
                str(health.salon_id or "—"),
                health.phone_masked or "—",
                health.pairing or "—",
                f"{health.key_counts.get('pre-key', 0):,}",
                f"{health.total_keys:,}",
                display.age(health.last_write),
                # "≥": found so by the first snapshot, it began then or earlier (as the pages).
                ("≥ " if at_baseline else "") + display.age(since),
            )
            for health, since, at_baseline in listed
        ]
        # Escaped before measuring, so the columns line up with what the terminal shows.
        rows = [tuple(printable(cell) for cell in row) for row in rows]
        header = (
            "status",
            "session",
            "salon",
            "phone",
            "paired by",
            "pre-keys",
            "keys",
            "last write",
            "status since",
        )
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(cells) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

        self.stdout.write(line(header).rstrip())
        for (health, _, _), row in zip(listed, rows, strict=True):
            status_style = style[health.status]
            self.stdout.write(
                line(row).rstrip(),
                # Only the status cell is coloured; the style runs after the escaping.
                lambda text, status_style=status_style: (
                    status_style(text[: widths[0]]) + text[widths[0] :]
                ),
            )
            for reason in health.reasons:
                self.stdout.write(f"    - {reason}")
            for note in health.notes:
                self.stdout.write(f"    · {note}")
        counts = dict.fromkeys(Status, 0)
        for health, _, _ in listed:
            counts[health.status] += 1
        summary = ", ".join(f"{counts[s]} {s}" for s in (Status.FAIL, Status.WARN, Status.OK))
        self.stdout.write(f"{len(listed)} session(s): {summary}.")
