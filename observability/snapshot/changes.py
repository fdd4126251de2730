"""Which differences between two snapshots of a session are worth a row of history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from observability import config, phones
from observability.models import SessionChange
from observability.rules import INITIAL_PREKEY_COUNT, MIN_PREKEY_COUNT

Kind = SessionChange.Kind


#: The sizes of Baileys' pre-key uploads, largest first: ``uploadPreKeys(count =
#: MIN_PREKEY_COUNT)`` (5) when the server runs low, ``INITIAL_PREKEY_COUNT`` (812) when it
#: holds none (``uploadPreKeysToServerIfRequired``, src/Socket/socket.ts; constants in
#: src/Defaults/index.ts). Each upload makes exactly that many (``generateOrGetPreKeys``,
#: src/Utils/signal.ts). Any other pre-key is made one at a time, for a retry receipt.
UPLOAD_SIZES = (INITIAL_PREKEY_COUNT, MIN_PREKEY_COUNT)


def split_pre_key_rise(rise: int) -> tuple[int, int]:
    """
    A rise of ``nextPreKeyId`` (or of stored pre-keys) as ``(uploaded, one_by_one)``.

    Follows Baileys: ``src/Socket/messages-recv.ts`` (``sendRetryRequest``) makes exactly one
    pre-key per retry receipt from the second retry on (``getNextPreKeys(authState, 1)``; up
    to ``maxMsgRetryCount`` 5, src/Defaults/index.ts, so a message failing every retry makes
    4 within seconds); ``src/Socket/socket.ts`` uploads 5 or 812 at once and
    ``src/Utils/signal.ts`` (``getNextPreKeys``) moves ``nextPreKeyId`` past them. So a rise
    of exactly an upload size is a top-up; an upload size plus fewer than that size again is
    a top-up plus that many made one at a time; any other rise is pre-keys made one at a time
    (a storm of 7 in a minute is 5 + 2 at most, 11 is all one by one).
    """
    if rise <= 0:
        return 0, 0
    for size in UPLOAD_SIZES:
        if size <= rise < 2 * size:
            return size, rise - size
    return 0, rise


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
    old_facts: dict,
    new_facts: dict,
    *,
    old_phone: str,
    new_phone: str,
    span: timedelta | None = None,
) -> list[Change]:
    """
    The changes that matter between two snapshots of one session's facts.

    Args:
        old_facts: the stored facts (``codec.encode`` of ``SessionHealth``).
        new_facts: the fresh facts, same shape.
        old_phone: the session's own number before (digits, empty when unknown); compared
            only, shown masked.
        new_phone: the number now, likewise.
        span: the time between the two snapshots (None: unknown). Pre-keys are read as made
            one at a time only when it is within ``decrypt_window``: a rise over a longer gap
            (the refresh was stopped) may be any number of uploads.

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
    new_login = any(change.kind in (Kind.PAIRED_AGAIN, Kind.PHONE_CHANGED) for change in changes)
    spread = span is not None and span > config.decrypt_window()
    changes += _pre_key_changes(old_facts, new_facts, new_login=new_login, spread=spread)
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


def _pre_key_changes(
    old_facts: dict, new_facts: dict, *, new_login: bool, spread: bool = False
) -> list[Change]:
    """
    The pre-keys uploaded and made one at a time between two snapshots (see split_pre_key_rise).

    Read from ``creds.nextPreKeyId`` when both snapshots have it, else from the stored
    ``pre-key`` rows. A one-by-one row's ``data`` spans only the pre-keys made one at a time
    (``new - old`` is their count: ``rules.decryption_failures`` adds them up). After a new
    login (paired again, another phone) Baileys starts again from ``initAuthCreds()``
    (``nextPreKeyId`` 1, src/Utils/auth-utils.ts) and uploads its first batch: a rise is then
    that upload, whatever the number it started from. A rise spread over more than
    ``decrypt_window`` between two snapshots (``spread``: the refresh did not run) may be
    any number of uploads, so it is recorded as uploaded, not as decryption failures.
    """
    old_rules, new_rules = _rule_facts(old_facts), _rule_facts(new_facts)
    old_next, new_next = old_rules.get("next_pre_key_id"), new_rules.get("next_pre_key_id")
    if old_next is not None and new_next is not None:
        old, new, what = int(old_next), int(new_next), f"nextPreKeyId {old_next} → {new_next}"
    else:
        old, new = _count(old_facts, "pre-key"), _count(new_facts, "pre-key")
        what = f"stored pre-keys {old} → {new}"
    if new <= old:
        return []
    if new_login or spread:
        detail = f"{what}, between two snapshots far apart" if spread and not new_login else what
        return [Change(Kind.PREKEYS_TOPPED_UP, detail, {"old": old, "new": new})]
    uploaded, one_by_one = split_pre_key_rise(new - old)
    changes = []
    if uploaded:
        detail = what if not one_by_one else f"{what}: an upload of {uploaded}"
        changes.append(Change(Kind.PREKEYS_TOPPED_UP, detail, {"old": old, "new": old + uploaded}))
    if one_by_one:
        detail = what if not uploaded else f"{what}: {one_by_one} beside an upload of {uploaded}"
        changes.append(
            Change(Kind.PREKEY_ONE_BY_ONE, detail, {"old": new - one_by_one, "new": new})
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
