"""List every WhatsApp session with its status and reasons, worst first (table or JSON)."""

from __future__ import annotations

import json

from observability import sessions
from observability.admin import display
from observability.management.base import ObservabilityCommand, printable
from observability.rules import Status

_STATUSES = [str(status) for status in Status]


class Command(ObservabilityCommand):
    """``manage.py whatsapp_sessions [--status OK|WARN|FAIL] [--json]``."""

    json_option = "as_json"
    help = (
        "List every WhatsApp session with its status and the reasons behind it, worst first; "
        "each reason says what to do. Reads the bot database only."
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
                "reasons, facts) instead; since is when the status last changed, from the "
                "stored snapshot; since_or_earlier is true when the status was already so at "
                "the store's first snapshot (it began then or earlier: the moment is not known)."
            ),
        )

    def handle(self, *args, status=None, as_json=False, **options):
        """Judge every session and print them (errors: the base's one path, JSON with --json)."""
        listed = sessions.list_sessions()
        if status is not None:
            listed = [health for health in listed if health.status == status]
        if as_json:
            since = _status_since(listed)
            payload = [
                {
                    **health.as_dict(),
                    "since": since.get(health.session_id, (None, None))[0],
                    "since_or_earlier": since.get(health.session_id, (None, None))[1],
                }
                for health in listed
            ]
            self.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2))
            return
        self._table(listed)

    def _table(self, listed: list[sessions.SessionHealth]) -> None:
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
            )
            for health in listed
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
        )
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(cells) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

        self.stdout.write(line(header).rstrip())
        for health, row in zip(listed, rows, strict=True):
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
        for health in listed:
            counts[health.status] += 1
        summary = ", ".join(f"{counts[s]} {s}" for s in (Status.FAIL, Status.WARN, Status.OK))
        self.stdout.write(f"{len(listed)} session(s): {summary}.")


def _status_since(listed: list[sessions.SessionHealth]) -> dict[str, tuple[str, bool]]:
    """
    When each session's status last changed, from the stored snapshot (ISO 8601, UTC).

    Only when the snapshot holds the same status as this live judgement; a session whose
    status changed since the last snapshot, or that no snapshot saw yet, has no ``since``.
    Each ``since`` comes with whether it is only the store's first snapshot (the baseline,
    ``snapshot.baseline``): a status found so then began at that moment or earlier, as the
    admin's "since ≥" says. The project's database being unreachable leaves every ``since``
    out rather than failing.
    """
    from django.db import DatabaseError

    from observability import snapshot
    from observability.models import SessionState

    wanted = {health.session_id: str(health.status) for health in listed}
    try:
        first = snapshot.baseline()
        stored = SessionState.objects.filter(session_id__in=list(wanted)).values_list(
            "session_id", "status", "status_since"
        )
        return {
            sid: (since.isoformat(), since == first)
            for sid, status, since in stored
            if wanted.get(sid) == status
        }
    except DatabaseError:
        return {}
