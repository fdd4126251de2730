"""The one way this project writes a moment for people: ``2026-11-30 19:40 UTC · 3 hours ago``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone
from django.utils.timesince import timesince, timeuntil

#: Date, minutes and the time zone's abbreviation, in the project's time zone.
MOMENT_FORMAT = "%Y-%m-%d %H:%M %Z"
#: Between the absolute moment and its relative age.
SEPARATOR = " · "


@dataclass(frozen=True)
class Moment:
    """
    A moment split the way pages show it.

    Attributes:
        local: the moment in the project's time zone (aware).
        absolute: ``2026-11-30 19:40 UTC``.
        relative: ``3 hours ago`` or ``in 2 days`` (Django's ``timesince`` / ``timeuntil``,
            largest unit only).

    """

    local: datetime
    absolute: str
    relative: str

    def __str__(self) -> str:
        """``2026-11-30 19:40 UTC · 3 hours ago``."""
        return f"{self.absolute}{SEPARATOR}{self.relative}"


def split(moment: datetime, now: datetime | None = None) -> Moment:
    """
    ``moment`` as :class:`Moment`, relative to ``now`` (default: now).

    A naive moment is UTC: the bot's ``timestamp without time zone`` columns hold UTC
    (observability.fields.NaiveDateTimeField).
    """
    now = now or timezone.now()
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    local = timezone.localtime(moment)
    if moment <= now:
        relative = f"{timesince(moment, now, depth=1)} ago"
    else:
        relative = f"in {timeuntil(moment, now, depth=1)}"
    return Moment(local, local.strftime(MOMENT_FORMAT), relative.replace("\xa0", " "))


def text(moment: datetime | None, now: datetime | None = None, *, never: str = "never") -> str:
    """A moment as plain text (messages, tooltips): ``2026-11-30 19:40 UTC · 3 hours ago``."""
    if moment is None:
        return never
    return str(split(moment, now))
