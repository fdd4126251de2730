"""Backup files of removed rows (gzip JSON lines, mode 0600) and their exact restore."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from observability import config
from observability.exceptions import BadInput

FORMAT = "observability.cleanup.backup"
VERSION = 1
#: The tables a backup may hold, in restore order (a session's auth row before its keys).
TABLES = ("whatsapp_auth", "whatsapp_keys")


@dataclass
class Backup:
    """
    A backup file's content.

    Attributes:
        header: what was removed, when, by which run.
        rows: ``{table: [row JSON text, ...]}``; each row is ``row_to_json`` output kept as
            text, so numbers inside ``creds`` and ``value`` round-trip exactly.

    """

    header: dict
    rows: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in TABLES})

    @property
    def total(self) -> int:
        """Rows in the backup."""
        return sum(len(rows) for rows in self.rows.values())


def backup_folder() -> Path:
    """The backup folder (setting), created readable by its owner only."""
    folder = config.cleanup_backup_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def new_backup_path(label: str) -> Path:
    """A fresh file name in the backup folder, e.g. ``duplicates-962302-20261125T030000Z``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:80]
    return backup_folder() / f"{safe}-{stamp}.jsonl.gz"


def write(path: Path, header: dict, rows: Iterable[tuple[str, str]]) -> int:
    """
    Write a backup: a header line, one line per row, a footer with the row counts.

    The file is created with mode 0600 (it holds credentials and key material), never
    overwrites an existing file, and is flushed to disk before this returns, so the
    caller may delete the rows afterwards.

    Args:
        path: the new file.
        header: the header's fields (format and version are added).
        rows: ``(table, row JSON text)`` pairs.

    Returns:
        The number of rows written.

    """
    counts = dict.fromkeys(TABLES, 0)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    with os.fdopen(fd, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as stream:
            head = {"kind": "header", "format": FORMAT, "version": VERSION, **header}
            stream.write(_line(head))
            for table, row_json in rows:
                if table not in counts:
                    raise ValueError(f"unexpected table {table!r} in a backup")
                stream.write(_line({"kind": "row", "table": table, "row": row_json}))
                counts[table] += 1
            stream.write(_line({"kind": "footer", "rows": counts}))
        raw.flush()
        os.fsync(raw.fileno())
    return sum(counts.values())


def read(path: str | Path) -> Backup:
    """
    Read and check a backup file completely (a truncated file is refused, not half-restored).

    Raises:
        BadInput: missing, unreadable, not a backup, or incomplete.

    """
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            lines = [json.loads(line) for line in stream if line.strip()]
    except FileNotFoundError as error:
        raise BadInput(f"No backup file at {path}.") from error
    except (OSError, EOFError, ValueError) as error:
        raise BadInput(
            f"{path} is not a readable backup file ({type(error).__name__})."
        ) from error
    if not all(isinstance(line, dict) for line in lines):
        raise BadInput(f"{path} is not a cleanup backup file: a line is not a JSON object.")
    if not lines or lines[0].get("kind") != "header" or lines[0].get("format") != FORMAT:
        raise BadInput(f"{path} is not a cleanup backup file.")
    if lines[0].get("version") != VERSION:
        raise BadInput(f"{path} has backup version {lines[0].get('version')}; expected {VERSION}.")
    if lines[-1].get("kind") != "footer":
        raise BadInput(f"{path} is incomplete (no footer): it was not fully written.")
    backup = Backup(header=lines[0])
    for line in lines[1:-1]:
        if line.get("kind") != "row" or line.get("table") not in TABLES:
            raise BadInput(f"{path} holds an unexpected line; refusing to restore it.")
        if not _is_row_text(line.get("row")):
            raise BadInput(f"{path} holds a row that is not a table row; refusing to restore it.")
        backup.rows[line["table"]].append(line["row"])
    expected = lines[-1].get("rows") or {}
    if not isinstance(expected, dict):
        raise BadInput(f"{path} has a malformed footer; refusing to restore it.")
    if {t: len(r) for t, r in backup.rows.items()} != {t: expected.get(t, 0) for t in TABLES}:
        raise BadInput(f"{path} is incomplete: its row counts do not match its footer.")
    return backup


def _is_row_text(row) -> bool:
    """A row as :func:`write` stores it: ``row_to_json`` text holding one JSON object."""
    if not isinstance(row, str):
        return False
    try:
        return isinstance(json.loads(row), dict)
    except ValueError:
        return False


def _line(data: dict) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
