"""Which differences between two snapshots of a session are worth a row of history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from observability import phones
from observability.models import SessionChange

Kind = SessionChange.Kind


#: A rise of ``nextPreKeyId`` (or of stored pre-keys) below this is pre-keys created one at a
#: time: Baileys creates exactly one for each retry receipt of a message it failed to decrypt
#: (``getNextPreKeys(authState, 1)``, src/Socket/messages-recv.ts); uploads come in batches
#: of ``MIN_PREKEY_COUNT`` (5) or more (src/Socket/socket.ts, src/Defaults/index.ts).
TOP_UP_MIN = 5


@dataclass(frozen=True)
class Change:
    """
    One change to record: its kind, a description, and the numbers before and after.

    The description holds no secret and masked phones only; ``data`` holds the fact's numbers
    (``old``, ``new``) for the history detectors.
    """

    kind: str
    detail: str = ""
    data: dict = field(default_factory=dict)


def change_row(
    session_id: str,
    at: datetime,
    kind: str,
    old_status: str,
    new_status: str,
    *,
    reasons: Iterable[str] = (),
    detail: str = "",
    data: dict | None = None,
) -> SessionChange:
    """
    One row of a session's history, as the refresh records it (not saved).

    A status change has the two statuses and the new status's reasons (``data["rules"]``
    names its rules: the alert's cause); a fact change has the session's status on both sides,
    its ``detail`` and the fact's numbers in ``data``.
    """
    return SessionChange(
        session_id=session_id,
        at=at,
        kind=kind,
        old_status=old_status,
        new_status=new_status,
        reasons=list(reasons) or None,
        detail=detail,
        data=data or {},
    )


def creds_detail(count: int, last: str) -> str:
    """The detail of a day's ``creds_rewritten`` row: how many rewrites, the last one's HH:MM."""
    return f"{count} rewrite{'s' if count != 1 else ''}, last at {last} UTC"


def creds_count(detail: str) -> int:
    """The count of a ``creds_rewritten`` row's detail (1 when it cannot be read)."""
    head = detail.split(" ", 1)[0]
    return int(head) if head.isdigit() else 1


def _rule_facts(facts: dict) -> dict:
    """The rules' facts (``SessionHealth.facts``, ``observability.rules.SessionFacts``)."""
    return facts.get("facts") or {}


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
    old_rules, new_rules = _rule_facts(old_facts), _rule_facts(new_facts)
    if not old_facts.get("has_auth") and new_facts.get("has_auth"):
        changes.append(Change(Kind.PAIRED_AGAIN, "an auth row (creds) was written again"))
    elif not old_rules.get("me_id_present") and new_rules.get("me_id_present"):
        # Pairing writes creds.me (src/Utils/validate-connection.ts, configureSuccessfulPairing).
        changes.append(Change(Kind.PAIRED_AGAIN, "the creds name a paired device again"))
    elif _new_pairing(old_rules, new_rules):
        changes.append(Change(Kind.PAIRED_AGAIN, _new_pairing(old_rules, new_rules)))
    if old_phone and new_phone and old_phone != new_phone:
        changes.append(
            Change(Kind.PHONE_CHANGED, f"{phones.mask(old_phone)} → {phones.mask(new_phone)}")
        )
    old_next = old_rules.get("next_pre_key_id")
    new_next = new_rules.get("next_pre_key_id")
    if old_next is not None and new_next is not None:
        rise, what = int(new_next) - int(old_next), f"nextPreKeyId {old_next} → {new_next}"
    else:
        old_pre, new_pre = _count(old_facts, "pre-key"), _count(new_facts, "pre-key")
        rise, what = new_pre - old_pre, f"stored pre-keys {old_pre} → {new_pre}"
    numbers = (
        {"old": int(old_next), "new": int(new_next)}
        if old_next is not None and new_next is not None
        else {}
    )
    if rise >= TOP_UP_MIN:
        changes.append(Change(Kind.PREKEYS_TOPPED_UP, what, numbers))
    elif rise > 0:
        changes.append(Change(Kind.PREKEY_ONE_BY_ONE, what, numbers))
    old_creds, new_creds = old_facts.get("auth_updated_at"), new_facts.get("auth_updated_at")
    if old_creds and new_creds and old_creds != new_creds:
        changes.append(
            Change(
                Kind.CREDS_REWRITTEN,
                creds_detail(1, new_creds[11:16]),
                _connected_again(old_rules, new_rules),
            )
        )
    old_sessions, new_sessions = _count(old_facts, "session"), _count(new_facts, "session")
    if new_sessions < old_sessions:
        changes.append(
            Change(
                Kind.SESSION_ROWS_LOST,
                f"'session' rows {old_sessions} → {new_sessions}",
                {"old": old_sessions, "new": new_sessions},
            )
        )
    return changes


def _connected_again(old_rules: dict, new_rules: dict) -> dict:
    """
    ``{"after": seconds}`` when the bot recorded a new connection since its previous one.

    Baileys rewrites the creds at every login (``CB:success``, src/Socket/socket.ts) and the
    bot records the ``connection.update`` open in ``companies.whatsapp_connected_at``; a creds
    rewrite with that moment moved is a login, ``after`` seconds after the one before.
    """
    old, new = old_rules.get("bot_connected_at"), new_rules.get("bot_connected_at")
    if not old or not new or old == new:
        return {}
    seconds = (datetime.fromisoformat(new) - datetime.fromisoformat(old)).total_seconds()
    return {"after": round(seconds)} if seconds > 0 else {}


def _new_pairing(old_rules: dict, new_rules: dict) -> str:
    """
    What says the device was paired anew (empty when nothing does).

    ``configureSuccessfulPairing`` (src/Utils/validate-connection.ts) writes ``me.id`` with
    the new device number, and a new login starts from ``initAuthCreds()`` with a new
    ``signedIdentityKey`` (src/Utils/auth-utils.ts). Compared only when both are known.
    """
    old_device, new_device = old_rules.get("device"), new_rules.get("device")
    if old_device is not None and new_device is not None and old_device != new_device:
        return f"a new device number in creds.me.id ({old_device} → {new_device})"
    old_key, new_key = old_rules.get("identity_hash"), new_rules.get("identity_hash")
    if old_key and new_key and old_key != new_key:
        return "a new identity key in the creds"
    return ""
