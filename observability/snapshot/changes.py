"""Which differences between two snapshots of a session are worth a row of history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from observability import phones
from observability.models import SessionChange

Kind = SessionChange.Kind

#: Facts that identify one pairing of a device; any of them changing means "paired again".
#: ``creds.me.id`` carries the device number and ``signedIdentityKey.public`` the identity:
#: Baileys writes both when a device is paired (src/Utils/validate-connection.ts,
#: configureSuccessfulPairing). The names are looked up in the session's facts when present.
PAIRING_FACTS = ("device", "me_device", "device_id", "identity_fingerprint", "pairing_id")

#: Facts holding ``creds.nextPreKeyId`` when the session's facts carry it.
NEXT_PREKEY_FACTS = ("next_pre_key_id", "next_prekey_id")

#: A rise of ``nextPreKeyId`` (or of stored pre-keys) below this is pre-keys created one at a
#: time: Baileys creates exactly one for each retry receipt of a message it failed to decrypt
#: (``getNextPreKeys(authState, 1)``, src/Socket/messages-recv.ts); uploads come in batches
#: of ``MIN_PREKEY_COUNT`` (5) or more (src/Socket/socket.ts, src/Defaults/index.ts).
TOP_UP_MIN = 5


@dataclass(frozen=True)
class Change:
    """One change to record: its kind and a short description (no secret, phones masked)."""

    kind: str
    detail: str = ""


def _first(facts: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        if facts.get(name) is not None:
            return facts[name]
    return None


def _count(facts: dict, key_type: str) -> int:
    return int((facts.get("key_counts") or {}).get(key_type, 0))


def fact_changes(
    old_facts: dict, new_facts: dict, *, old_phone: str, new_phone: str
) -> list[Change]:
    """
    The changes that matter between two snapshots of one session's facts.

    Args:
        old_facts: the stored facts (``codec.encode`` of ``SessionHealth``).
        new_facts: the fresh facts, same shape.
        old_phone: the session's own number before (digits, empty when unknown); compared
            only, shown masked.
        new_phone: the number now, likewise.

    """
    changes: list[Change] = []
    if not old_facts.get("has_auth") and new_facts.get("has_auth"):
        changes.append(Change(Kind.PAIRED_AGAIN, "an auth row (creds) was written again"))
    else:
        old_pairing = _first(old_facts, PAIRING_FACTS)
        new_pairing = _first(new_facts, PAIRING_FACTS)
        if old_pairing is not None and new_pairing is not None and old_pairing != new_pairing:
            changes.append(Change(Kind.PAIRED_AGAIN, "a new device identity in the creds"))
    if old_phone and new_phone and old_phone != new_phone:
        changes.append(
            Change(Kind.PHONE_CHANGED, f"{phones.mask(old_phone)} → {phones.mask(new_phone)}")
        )
    old_next = _first(old_facts, NEXT_PREKEY_FACTS)
    new_next = _first(new_facts, NEXT_PREKEY_FACTS)
    if old_next is not None and new_next is not None:
        rise, what = int(new_next) - int(old_next), f"nextPreKeyId {old_next} → {new_next}"
    else:
        old_pre, new_pre = _count(old_facts, "pre-key"), _count(new_facts, "pre-key")
        rise, what = new_pre - old_pre, f"stored pre-keys {old_pre} → {new_pre}"
    if rise >= TOP_UP_MIN:
        changes.append(Change(Kind.PREKEYS_TOPPED_UP, what))
    elif rise > 0:
        changes.append(Change(Kind.PREKEY_ONE_BY_ONE, what))
    old_creds, new_creds = old_facts.get("auth_updated_at"), new_facts.get("auth_updated_at")
    if old_creds and new_creds and old_creds != new_creds:
        changes.append(Change(Kind.CREDS_REWRITTEN, f"creds written at {new_creds[:19]}"))
    old_sessions, new_sessions = _count(old_facts, "session"), _count(new_facts, "session")
    if new_sessions < old_sessions:
        changes.append(
            Change(Kind.SESSION_ROWS_LOST, f"'session' rows {old_sessions} → {new_sessions}")
        )
    return changes
