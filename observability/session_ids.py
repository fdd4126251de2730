"""
Session ids: the two spellings the bot uses for one salon, parsed in one place.

The bot stores a salon's WhatsApp session under either the bare salon id (``"962302"``) or a
prefixed one (``"company_962302"``). Both have been seen side by side for one salon, and that
duplicate caused outages, so every part of this project reads session ids through here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from observability.exceptions import MalformedSessionId

PREFIX = "company_"
_SESSION_ID = re.compile(r"^(?:company_)?([1-9][0-9]{0,9})$")
_MAX_SALON_ID = 2**31 - 1  # companies.company_id is a PostgreSQL integer


class Spelling(StrEnum):
    """How a session id spells its salon id."""

    BARE = "bare"
    PREFIXED = "prefixed"


@dataclass(frozen=True, slots=True)
class SessionId:
    """
    A parsed session id.

    Attributes:
        raw: the session id exactly as stored in ``company_id``.
        salon_id: the salon's number (``companies.company_id``), or None when the stored
            value follows neither spelling (such rows exist only through bot bugs).
        spelling: bare or prefixed, or None when unparseable.

    """

    raw: str
    salon_id: int | None
    spelling: Spelling | None

    @property
    def twin(self) -> str | None:
        """The other spelling of the same salon, or None when unparseable."""
        if self.salon_id is None:
            return None
        if self.spelling is Spelling.PREFIXED:
            return bare(self.salon_id)
        return prefixed(self.salon_id)


def bare(salon_id: int) -> str:
    """The bare spelling, e.g. ``"962302"``."""
    return str(salon_id)


def prefixed(salon_id: int) -> str:
    """The prefixed spelling, e.g. ``"company_962302"``."""
    return f"{PREFIX}{salon_id}"


def spellings(salon_id: int) -> tuple[str, str]:
    """Both spellings a salon's session may be stored under."""
    return bare(salon_id), prefixed(salon_id)


def describe(raw: str) -> SessionId:
    """Describe a stored session id without raising (for rows read from the database)."""
    match = _SESSION_ID.match(raw or "")
    if not match or int(match.group(1)) > _MAX_SALON_ID:
        return SessionId(raw=raw, salon_id=None, spelling=None)
    spelling = Spelling.PREFIXED if raw.startswith(PREFIX) else Spelling.BARE
    return SessionId(raw=raw, salon_id=int(match.group(1)), spelling=spelling)


def parse(value: str | int) -> SessionId:
    """
    Parse a salon or session id typed by a person (either spelling; spaces are trimmed).

    Raises:
        MalformedSessionId: the value is neither ``962302`` nor ``company_962302``.

    """
    text = str(value).strip()
    parsed = describe(text)
    if parsed.salon_id is None:
        shown = text if len(text) <= 40 else text[:40] + "…"
        # The error's what_to_do names both spellings: the message only says what was wrong.
        raise MalformedSessionId(f"{shown!r} is not a salon id.")
    return parsed


def parse_salon_id(value: str | int) -> int:
    """Parse a salon id in either spelling and return the number."""
    return parse(value).salon_id  # type: ignore[return-value]
