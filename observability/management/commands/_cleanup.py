"""Shared parsing, rendering and error mapping of the cleanup commands (not a command)."""

from __future__ import annotations

import getpass
import json
import sys

from observability.cleanup import CleanupReport
from observability.management.base import ObservabilityCommand


def started_by() -> str:
    """``command (<os user>)``: who ran the command, for the run record."""
    try:
        return f"command ({getpass.getuser()})"
    except Exception:  # no passwd entry (some containers)
        return "command"


class TqdmProgress:
    """A tqdm progress bar on the terminal's stderr; nothing when stderr is not a terminal."""

    def __init__(self) -> None:
        self.bar = None

    def start(self, total: int | None) -> None:
        """Open the bar for ``total`` rows."""
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="rows", file=sys.stderr, leave=False)

    def advance(self, rows: int) -> None:
        """One batch committed."""
        if self.bar is not None:
            self.bar.update(rows)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def human_bytes(size: int | None) -> str:
    """``1.2 MB``-style sizes."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class CleanupCommand(ObservabilityCommand):
    """Base of the cleanup commands: the common options, progress, JSON (errors: the base)."""

    json_option = "json"

    #: Options this command accepts beyond --apply/--salon/--json.
    key_options = True

    def add_arguments(self, parser):
        """The options every cleanup command shares."""
        parser.add_argument(
            "--apply",
            action="store_true",
            help="Delete. Without it the command is a dry run: it only counts and reports.",
        )
        parser.add_argument(
            "--salon",
            action="append",
            dest="salons",
            metavar="SALON_ID",
            help="Only this salon (962302 or company_962302; both spellings are cleaned). "
            "Repeat for several salons. Default: every session.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the report (or the error) as JSON."
        )
        if self.key_options:
            parser.add_argument(
                "--key-type",
                action="append",
                dest="key_types",
                metavar="TYPE",
                help="Only keys of this type (pre-key, session, ...). Repeatable.",
            )
            parser.add_argument(
                "--batch-size",
                type=int,
                help="Rows per batch, each its own transaction (default 5,000).",
            )

    def handle(self, *args, **options):
        """Run the operation and render its report (failures leave through the base)."""
        as_json = options["json"]
        progress = TqdmProgress() if not as_json and sys.stderr.isatty() else None
        report = self.run(options, progress)
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), default=str, ensure_ascii=False))
        else:
            self.render(report)

    def run(self, options: dict, progress) -> CleanupReport:
        """Call the service (subclasses)."""
        raise NotImplementedError

    def render(self, report: CleanupReport) -> None:
        """Print the counts by session and key type (deleted and kept), and what happened."""
        counts = report.rows_seen if report.dry_run else report.rows_deleted
        kept = report.rows_kept
        pairs = sorted(
            {
                (s, t)
                for mapping in (counts, kept)
                for s, by_type in mapping.items()
                for t in by_type
            }
        )
        if pairs:
            width = max(len("session"), *(len(s) for s, _ in pairs)) + 2
            heading = "to delete" if report.dry_run else "deleted"
            header = f"{'session'.ljust(width)}{'key type'.ljust(24)}{heading:>10}"
            self.stdout.write(header + (f"{'kept':>10}" if kept else ""))
            for session_id, key_type in pairs:
                n = counts.get(session_id, {}).get(key_type, 0)
                line = f"{session_id.ljust(width)}{key_type.ljust(24)}{n:>10,}"
                if kept:
                    line += f"{kept.get(session_id, {}).get(key_type, 0):>10,}"
                self.stdout.write(line)
        if report.kept_reasons:
            self.stdout.write("Kept, and why:")
            for key_type, reason in report.kept_reasons.items():
                self.stdout.write(f"  {key_type}: {reason}")
        if report.dry_run:
            self.stdout.write(
                f"Dry run: {report.total_seen:,} rows would be deleted"
                f"{f' and {report.total_kept:,} kept' if report.rows_kept else ''}; "
                "nothing was. Add --apply to delete them.",
                self.style.WARNING,
            )
        else:
            self.stdout.write(
                f"Deleted {report.total_deleted:,} of {report.total_seen:,} rows in "
                f"{report.batches} batches (slowest {report.slowest_batch_seconds:.2f} s)"
                f"{f'; kept {report.total_kept:,}' if report.rows_kept else ''}.",
                self.style.SUCCESS,
            )
            self.stdout.write(
                f"Table size {human_bytes(report.bytes_before)} -> "
                f"{human_bytes(report.bytes_after)}; {human_bytes(report.row_bytes_deleted)} "
                "of rows freed for reuse once autovacuum has passed."
            )
        self.stdout.write(f"Recorded as cleanup run #{report.run_id}.")
