"""What a cleanup run returns to its caller (plain data), and how it reports progress."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Protocol


class Progress(Protocol):
    """Receives progress; the command renders it with tqdm on a terminal."""

    def start(self, total: int | None) -> None:
        """The run found ``total`` rows to delete."""

    def advance(self, rows: int) -> None:
        """One batch committed ``rows`` deletes."""

    def close(self) -> None:
        """The run ended (successfully or not)."""


class NoProgress:
    """Progress that goes nowhere (tasks, the admin, ``--json``)."""

    def start(self, total: int | None) -> None:
        """Ignore."""

    def advance(self, rows: int) -> None:
        """Ignore."""

    def close(self) -> None:
        """Ignore."""


@dataclass
class CleanupReport:
    """
    The result of one cleanup run, dry or applied.

    Attributes:
        run_id: the ``CleanupRun`` record's id.
        operation: ``expired_keys``, ``orphan_keys``, ``duplicates`` or ``restore``.
        dry_run: True when nothing was deleted on purpose.
        parameters: the run's inputs as recorded.
        rows_seen: rows found to delete at the start, ``{session id: {key type: n}}``.
        rows_deleted: rows deleted and committed, same shape.
        total_seen, total_deleted: their sums.
        rows_kept: rows the retention policy protects (expired keys), same shape.
        total_kept: their sum.
        kept_reasons: why each key type of ``rows_kept`` is kept (the retention policy the
            run applied is in ``parameters["retention"]``).
        bytes_before, bytes_after: ``pg_total_relation_size`` of the tables touched.
        row_bytes_deleted: the size of the deleted rows: the space PostgreSQL can reuse
            once autovacuum has passed (the files do not shrink without VACUUM FULL).
        batches: committed batches.
        slowest_batch_seconds: the longest batch: the longest the bot may have waited on us.
        duration_seconds: the whole run.
        outcome: succeeded (a raised error means failed or refused).
        backup_paths: backup files written (duplicates).
        duplicates: per-salon duplicate reports (duplicates).
        grace: what the orphan cleanup's grace period holds back (orphan keys).

    """

    run_id: int
    operation: str
    dry_run: bool
    parameters: dict
    rows_seen: dict[str, dict[str, int]] = field(default_factory=dict)
    rows_deleted: dict[str, dict[str, int]] = field(default_factory=dict)
    total_seen: int = 0
    total_deleted: int = 0
    rows_kept: dict[str, dict[str, int]] = field(default_factory=dict)
    total_kept: int = 0
    kept_reasons: dict[str, str] = field(default_factory=dict)
    bytes_before: int | None = None
    bytes_after: int | None = None
    row_bytes_deleted: int = 0
    batches: int = 0
    slowest_batch_seconds: float = 0.0
    duration_seconds: float = 0.0
    outcome: str = "succeeded"
    backup_paths: list[str] = field(default_factory=list)
    duplicates: list[DuplicatePair] = field(default_factory=list)
    grace: GraceHold | None = None

    @property
    def bytes_freed(self) -> int | None:
        """How much the tables' on-disk size shrank (usually 0 until a vacuum)."""
        if self.bytes_before is None or self.bytes_after is None:
            return None
        return self.bytes_before - self.bytes_after

    def as_dict(self) -> dict:
        """The report as JSON-ready data (``--json``, task results)."""
        data = asdict(self)
        data["bytes_freed"] = self.bytes_freed
        data["duplicates"] = [pair.as_dict() for pair in self.duplicates]
        data["grace"] = self.grace.as_dict() if self.grace is not None else None
        return data


@dataclass
class GraceHold:
    """
    Orphan keys the grace period keeps now, and from when they become deletable.

    Ops saw "0 would be deleted" beside thousands of orphan keys: these are why.

    Attributes:
        grace: the minimum age (how long an orphan key must be unwritten).
        rows: orphan keys written within the grace period.
        first_deletable_at: when the earliest-written of them becomes deletable.
        last_deletable_at: when the last of them does (if nothing writes them again).
        undated: orphan keys without ``updated_at``: never deletable by this cleanup.

    """

    grace: timedelta
    rows: int = 0
    first_deletable_at: datetime | None = None
    last_deletable_at: datetime | None = None
    undated: int = 0

    def as_dict(self) -> dict:
        """JSON-ready data."""
        return {
            "grace_days": self.grace / timedelta(days=1),
            "rows": self.rows,
            "first_deletable_at": _iso(self.first_deletable_at),
            "last_deletable_at": _iso(self.last_deletable_at),
            "undated": self.undated,
        }


@dataclass
class SessionSide:
    """
    One spelling of a duplicated salon session.

    Attributes:
        session_id: the stored id (``962302`` or ``company_962302``).
        auth_created_at, auth_updated_at: its ``whatsapp_auth`` row's times (None: no row).
        keys: key counts by type.
        total_keys: their sum.
        newest_key_write: the latest ``updated_at`` among its keys.
        newest_write: the latest of ``auth_updated_at`` and ``newest_key_write``.

    """

    session_id: str
    auth_created_at: datetime | None = None
    auth_updated_at: datetime | None = None
    keys: dict[str, int] = field(default_factory=dict)
    total_keys: int = 0
    newest_key_write: datetime | None = None

    @property
    def has_auth(self) -> bool:
        """True when the side has a ``whatsapp_auth`` row."""
        return self.auth_created_at is not None or self.auth_updated_at is not None

    @property
    def newest_write(self) -> datetime | None:
        """The side's most recent write, auth row and keys together."""
        times = [t for t in (self.auth_updated_at, self.newest_key_write) if t is not None]
        return max(times) if times else None

    def as_dict(self) -> dict:
        """JSON-ready data."""
        return {
            "session_id": self.session_id,
            "has_auth": self.has_auth,
            "auth_created_at": _iso(self.auth_created_at),
            "auth_updated_at": _iso(self.auth_updated_at),
            "keys": self.keys,
            "total_keys": self.total_keys,
            "newest_key_write": _iso(self.newest_key_write),
            "newest_write": _iso(self.newest_write),
        }


@dataclass
class DuplicatePair:
    """
    A salon stored under both spellings, and what to do about it.

    Attributes:
        salon_id: the salon.
        bare, prefixed: the two sides.
        stale: the session id to remove (older newest write), None when undecidable.
        live: the session id to keep.
        verdict: ``remove-stale`` or ``refused``, and after an applied run ``removed``.
        rule: which rule decided (``duplicates.RULE_*``), for pages that explain it.
        reason: why (shown to the operator).
        backup_path: the backup written before removing the stale side.
        removed: rows removed by table and key type.
        row_bytes: the size of the removed rows.
        held_until: when refused only because the stale side was written too recently, the
            moment it will have been idle long enough (the advice says when to come back).

    """

    salon_id: int
    bare: SessionSide
    prefixed: SessionSide
    stale: str | None = None
    live: str | None = None
    verdict: str = "refused"
    rule: str = ""
    reason: str = ""
    backup_path: str = ""
    removed: dict[str, int] = field(default_factory=dict)
    row_bytes: int = 0
    held_until: datetime | None = None

    def as_dict(self) -> dict:
        """JSON-ready data."""
        return {
            "salon_id": self.salon_id,
            "bare": self.bare.as_dict(),
            "prefixed": self.prefixed.as_dict(),
            "stale": self.stale,
            "live": self.live,
            "verdict": self.verdict,
            "rule": self.rule,
            "reason": self.reason,
            "backup_path": self.backup_path,
            "removed": self.removed,
            "row_bytes": self.row_bytes,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
