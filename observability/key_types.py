"""The key types the bot writes to ``whatsapp_keys`` and the life it gives each (one place)."""

from __future__ import annotations

from datetime import datetime, timedelta

#: Every key type the bot writes (shared/legacy-schema.md); variants containing
#: ``lid-mapping`` exist too.
KEY_TYPES = (
    "pre-key",
    "session",
    "sender-key",
    "sender-key-memory",
    "app-state-sync-key",
    "app-state-sync-version",
    "lid-mapping",
    "device-list",
    "tctoken",
)
#: Key types the bot gives a 7-day life (and any type containing ``lid-mapping``).
SHORT_LIVED_KEY_TYPES = ("pre-key", "session", "sender-key")


def is_known(key_type: str) -> bool:
    """True for a type the bot writes, ``lid-mapping`` variants included."""
    return key_type in KEY_TYPES or "lid-mapping" in key_type


def bot_expires_at(key_type: str, written_at: datetime) -> datetime:
    """
    The ``expires_at`` the bot sets when it writes a key of ``key_type`` at ``written_at``.

    7 days for ``pre-key``, ``session``, ``sender-key`` and any type containing
    ``lid-mapping``; 14 days for every other type.
    """
    short = key_type in SHORT_LIVED_KEY_TYPES or "lid-mapping" in key_type
    return written_at + timedelta(days=7 if short else 14)
