"""Phone numbers: one normal form to search by, and one mask to show them with."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NON_DIGITS = re.compile(r"\D+")
#: A WhatsApp JID's user part: the digits before ``:device`` or ``@server``.
_JID_USER = re.compile(r"^\+?(\d+)(?:[:@.]|$)")


def normalize(value: str | None) -> str:
    """
    Bring any spelling of a phone number to the bot's stored form (digits, Russian ``7...``).

    ``+7 (900) 123-45-67``, ``8 900 123 45 67``, ``9001234567`` and ``79001234567`` all give
    ``79001234567``, the form ``clients.phone`` holds, so a search can use an exact match on
    ``idx_clients_phone`` instead of a ``LIKE`` scan.

    Args:
        value: what a person typed (or None).

    Returns:
        The digits, with a leading trunk ``8`` of an 11-digit number turned into ``7`` and a
        10-digit mobile number given its ``7``; an empty string when there are no digits.

    """
    digits = _NON_DIGITS.sub("", value or "")
    if len(digits) == 11 and digits.startswith("8"):
        return "7" + digits[1:]
    if len(digits) == 10 and digits.startswith("9"):
        return "7" + digits
    return digits


def looks_like_phone(value: str | None) -> bool:
    """True when the text is a phone number in some spelling (at least 10 digits, no letters)."""
    text = (value or "").strip()
    if not text or re.search(r"[^\d\s()+\-.]", text):
        return False
    return len(normalize(text)) >= 10


#: The trailing digits a search looks for: the four a masked number shows, no fewer, no more.
MIN_SUFFIX_DIGITS = 4
#: Numbers this long or longer are masked showing both ends; shorter ones only their last two.
MASK_WHOLE_FROM = 9
#: The leading digits a masked number shows (and a pasted mask may give).
MASK_SHOWN_DIGITS = 4
_PHONE_CHARACTERS = re.compile(r"^[\d\s()+\-.]+$")
_MASKED = re.compile(r"^\+?(\d{1,4})\*{2,}(\d{2,4})$")


@dataclass(frozen=True)
class PartialPhone:
    """
    What a search knows of a number it cannot see whole: its last digits, perhaps its first.

    Attributes:
        suffix: the digits the number ends with (at least two, four when no prefix is known).
        prefix: the digits it starts with (from a pasted mask such as ``7900***4567``).

    """

    suffix: str
    prefix: str = ""


def partial(value: str | None) -> PartialPhone | None:
    """
    The part of a phone number a person typed to find it, when it is not a whole number.

    ``4567``, ``45-67`` or ``1234567`` (4 to 9 digits, phone characters only) are the end of
    the number; only its last four digits, which the masked phone shows, are kept: matching
    more would let a search test the digits the mask hides one at a time (``14567``,
    ``24567``, ...). A mask pasted back (``7900***4567``) gives both ends. A whole number
    (10 digits or more) is not partial: search it with :func:`normalize` and an exact match.

    Returns:
        The partial number, or None when the text is not one.

    """
    text = (value or "").strip()
    masked = _MASKED.match(text)
    if masked:
        return PartialPhone(suffix=masked.group(2), prefix=masked.group(1))
    if not text or not _PHONE_CHARACTERS.match(text):
        return None
    digits = _NON_DIGITS.sub("", text)
    if MIN_SUFFIX_DIGITS <= len(digits) < 10:
        return PartialPhone(suffix=digits[-MASK_SHOWN_DIGITS:])
    return None


def shown(value: str | None) -> PartialPhone | None:
    """
    The digits of a typed number that its mask shows: the only ones a search may match.

    A whole number (``+7 (900) 123-45-67``) gives the four digits its mask starts with and the
    four it ends with, exactly as :func:`mask` shows them (``7900***4567``); anything shorter
    is :func:`partial`. Matching a whole number exactly would answer, one request per guess,
    whether ``7900 000 4567``, ``7900 001 4567``, ... is the number behind a mask the page
    shows: a thousand searches would unmask it. So a whole number finds every number that
    looks the same masked, and a true and a false guess of the hidden digits get one answer.

    Returns:
        The shown digits, or None when the text is not a phone number, whole or partial.

    """
    if looks_like_phone(value):
        digits = normalize(value)
        return PartialPhone(suffix=digits[-MASK_SHOWN_DIGITS:], prefix=digits[:MASK_SHOWN_DIGITS])
    return partial(value)


def mask(value: str | None) -> str | None:
    """
    Show a phone number without revealing it: ``79001234567`` becomes ``7900***4567``.

    Any spelling is normalized first. Numbers too short to keep both ends hide all but the
    last two digits.
    """
    digits = normalize(value)
    if not digits:
        return None
    if len(digits) < MASK_WHOLE_FROM:
        return "***" + digits[-2:]
    return f"{digits[:4]}***{digits[-4:]}"


def from_jid(jid: str | None) -> str | None:
    """The phone digits of a WhatsApp JID such as ``79001234567:12@s.whatsapp.net``."""
    match = _JID_USER.match((jid or "").strip())
    return match.group(1) if match else None


def mask_jid(jid: str | None) -> str | None:
    """The masked phone of a WhatsApp JID (``creds.me.id``), or None when it holds none."""
    return mask(from_jid(jid))
