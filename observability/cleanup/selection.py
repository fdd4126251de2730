"""Validate what a cleanup is asked to touch, before anything runs."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import connections

from observability import key_types as bot_key_types
from observability import session_ids
from observability.exceptions import BadInput, SessionNotFound

MAX_BATCH_SIZE = 100_000
#: The longest grace period or minimum age a person may type (100 years): beyond it the
#: cut-off date leaves Python's date range.
MAX_DAYS = 36_500


@dataclass(frozen=True)
class Selection:
    """
    The rows a cleanup may touch.

    Attributes:
        session_ids: exact stored session ids, or None for every session.
        key_types: key types, or None for every type.
        salon_ids: the salons asked for (for the record; their spellings are in session_ids).

    """

    session_ids: tuple[str, ...] | None = None
    key_types: tuple[str, ...] | None = None
    salon_ids: tuple[int, ...] = ()

    def as_parameters(self) -> dict:
        """The selection as JSON for the run record."""
        return {
            "salon_ids": list(self.salon_ids),
            "session_ids": list(self.session_ids) if self.session_ids is not None else None,
            "key_types": list(self.key_types) if self.key_types is not None else None,
        }


def batch_size(value: int | None, default: int) -> int:
    """
    A batch size from 1 to 100,000.

    Raises:
        BadInput: zero, negative, too large or not a number.

    """
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"The batch size must be a whole number, not {value!r}.")
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise BadInput(f"The batch size must be between 1 and {MAX_BATCH_SIZE:,}, not {value}.")
    return value


def period(value: timedelta | None, default: timedelta, what: str) -> timedelta:
    """
    A non-negative period (grace period, minimum age).

    Raises:
        BadInput: negative.

    """
    value = default if value is None else value
    if value < timedelta(0):
        raise BadInput(f"The {what} cannot be negative (got {value.days} days).")
    return value


def days(value: float | int | None) -> timedelta | None:
    """
    A number of days typed by a person, as a period (None stays None).

    Raises:
        BadInput: negative, not finite (``nan``, ``inf``) or more than ``MAX_DAYS``, which
            would overflow the date arithmetic of the cut-off.

    """
    if value is None:
        return None
    return timedelta(days=_typed_amount(value, "days", MAX_DAYS))


def hours(value: float | int | None) -> timedelta | None:
    """A number of hours typed by a person, as a period (None stays None); see :func:`days`."""
    if value is None:
        return None
    return timedelta(hours=_typed_amount(value, "hours", MAX_DAYS * 24))


def _typed_amount(value: float | int, unit: str, limit: int) -> float | int:
    if not math.isfinite(value):
        raise BadInput(f"A number of {unit} must be a finite number (got {value}).")
    if value < 0:
        raise BadInput(f"A number of {unit} cannot be negative (got {value}).")
    if value > limit:
        raise BadInput(f"A number of {unit} must be at most {limit:,} (got {value:g}).")
    return value


def key_types(values: Iterable[str] | None) -> tuple[str, ...] | None:
    """
    Key types the bot writes, deduplicated; None or empty means every type.

    Raises:
        BadInput: a type the bot never writes (most likely a typo that would match nothing).

    """
    cleaned: list[str] = []
    for raw in values or ():
        value = str(raw).strip()
        if not bot_key_types.is_known(value):
            raise BadInput(
                f"Unknown key type {value[:40]!r}: "
                f"use one of {', '.join(bot_key_types.KEY_TYPES)}."
            )
        if value not in cleaned:
            cleaned.append(value)
    return tuple(cleaned) or None


def build(
    *,
    salons: Iterable[str | int] | None = None,
    sessions: Iterable[str] | None = None,
    types: Iterable[str] | None = None,
    alias: str,
) -> Selection:
    """
    Parse salons (either spelling) and exact session ids, and check that each exists.

    Args:
        salons: salon ids typed by a person; both spellings of each are selected.
        sessions: exact stored session ids (from the admin's selection); an empty list is
            an error, never "every session".
        types: key types.
        alias: the bot database alias (to check the salons exist).

    Raises:
        MalformedSessionId: a salon id that is neither ``962302`` nor ``company_962302``.
        SessionNotFound: a salon or session with neither an auth row nor keys.
        BadInput: an unknown key type.

    """
    parsed_types = key_types(types)
    sessions = None if sessions is None else [str(value) for value in sessions]
    salon_ids: list[int] = []
    for raw in salons or ():
        salon_id = session_ids.parse(raw).salon_id
        if salon_id not in salon_ids:
            salon_ids.append(salon_id)
    exact: list[str] = []
    for salon_id in salon_ids:
        exact.extend(s for s in session_ids.spellings(salon_id) if s not in exact)
    for value in sessions or ():
        if not value or len(value) > 200:
            raise BadInput("A session id must be 1 to 200 characters long.")
        if value not in exact:
            exact.append(value)
    if sessions is not None and not sessions:
        # An empty selection from the admin must never widen into "every session".
        raise BadInput("No session was selected.")
    if not exact:
        return Selection(key_types=parsed_types)
    existing = _existing_session_ids(exact, alias)
    for salon_id in salon_ids:
        if not existing.intersection(session_ids.spellings(salon_id)):
            bare, prefixed = session_ids.spellings(salon_id)
            raise SessionNotFound(
                f"No WhatsApp session exists for salon {salon_id} "
                f"(looked for {bare!r} and {prefixed!r}). Check the salon id."
            )
    for value in sessions or ():
        if value not in existing:
            raise SessionNotFound(f"No WhatsApp session {value[:40]!r} exists.")
    return Selection(session_ids=tuple(exact), key_types=parsed_types, salon_ids=tuple(salon_ids))


def _existing_session_ids(candidates: list[str], alias: str) -> set[str]:
    """The candidate session ids that have an auth row or at least one key."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT company_id FROM whatsapp_auth WHERE company_id = ANY(%s) "
            "UNION SELECT DISTINCT company_id FROM whatsapp_keys WHERE company_id = ANY(%s)",
            [candidates, candidates],
        )
        return {row[0] for row in cursor.fetchall()}
