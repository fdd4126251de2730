"""
Synthetic Baileys data in the real shapes, for the demo data set and the tests.

The shapes follow ``shared/samples/baileys-session.json`` (made by the Baileys library): binary
values are ``{"type": "Buffer", "data": <base64>}`` (or a byte list, as older rows have), and
secrets are random bytes from the given ``random.Random`` so a seed reproduces a data set.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from observability import key_types

# The bot's key types and expiry rule, re-exported for the demo data and the tests.
KEY_TYPES = key_types.KEY_TYPES
bot_expires_at = key_types.bot_expires_at


def buffer(rng: random.Random, size: int, *, as_list: bool = False) -> dict:
    """A Node.js Buffer as the bot stores it in jsonb."""
    data = rng.randbytes(size)
    if as_list:
        return {"type": "Buffer", "data": list(data)}
    return {"type": "Buffer", "data": base64.b64encode(data).decode()}


def key_pair(rng: random.Random) -> dict:
    """A Curve25519 key pair: ``{private, public}`` Buffers."""
    return {"private": buffer(rng, 32), "public": buffer(rng, 32)}


def app_state_key_id(rng: random.Random) -> str:
    """An app-state key id as Baileys stores it: the 6-byte key id in base64 (``AAAAAK6J``)."""
    return base64.b64encode(b"\x00\x00\x00\x00" + rng.randbytes(2)).decode()


def creds(
    rng: random.Random,
    *,
    phone: str,
    name: str,
    registered: bool = False,
    platform: str = "android",
    paired: bool = True,
    next_pre_key_id: int | None = None,
    my_app_state_key_id: str | None = None,
) -> dict:
    """
    A Baileys ``creds`` object, shaped as ``shared/samples/baileys-session.json``.

    Args:
        rng: the random stream for the secrets.
        phone: the number the session is logged in as (``creds.me.id``).
        name: ``creds.me.name``.
        registered: True for a pairing-code login (``pairingCode`` set); a QR-paired
            session keeps ``registered: false`` (``src/Socket/messages-recv.ts``).
        platform: ``creds.platform``.
        paired: False for creds whose pairing never finished: what ``initAuthCreds()`` makes
            (no ``me``, ``account``, ``signalIdentities`` or ``platform``, ``nextPreKeyId`` 1).
        next_pre_key_id: ``nextPreKeyId`` (and ``firstUnuploadedPreKeyId``): last uploaded
            pre-key id + 1. Default: 813, after v7's first upload of 812.
        my_app_state_key_id: ``myAppStateKeyId``; absent when None.

    """
    identity = key_pair(rng)
    value = {
        "noiseKey": key_pair(rng),
        "pairingEphemeralKeyPair": key_pair(rng),
        "signedIdentityKey": identity,
        "signedPreKey": {"keyPair": key_pair(rng), "signature": buffer(rng, 64), "keyId": 1},
        "registrationId": rng.randint(1, 16380),
        "advSecretKey": base64.b64encode(rng.randbytes(32)).decode(),
        "processedHistoryMessages": [],
        "nextPreKeyId": 1,
        "firstUnuploadedPreKeyId": 1,
        "accountSyncCounter": 0,
        "accountSettings": {"unarchiveChats": False},
        "registered": False,
    }
    if not paired:
        return value
    device = rng.randint(1, 40)
    jid = f"{phone}:{device}@s.whatsapp.net"
    next_id = 813 if next_pre_key_id is None else next_pre_key_id
    value.update(
        nextPreKeyId=next_id,
        firstUnuploadedPreKeyId=next_id,
        accountSyncCounter=rng.randint(0, 5),
        registered=registered,
        routingInfo=buffer(rng, 24),
        me={"id": jid, "name": name, "lid": f"{rng.randint(10**14, 10**15 - 1)}:{device}@lid"},
        platform=platform,
        account={
            "details": buffer(rng, 40),
            "accountSignatureKey": buffer(rng, 32),
            "accountSignature": buffer(rng, 64),
            "deviceSignature": buffer(rng, 64),
        },
        signalIdentities=[
            {"identifier": {"name": jid, "deviceId": 0}, "identifierKey": buffer(rng, 33)}
        ],
        lastAccountSyncTimestamp=rng.randint(1_730_000_000, 1_765_000_000),
    )
    if registered:
        value["pairingCode"] = "".join(rng.choices("ABCDEFGHJKLMNPQRSTVWXYZ0123456789", k=8))
    if my_app_state_key_id is not None:
        value["myAppStateKeyId"] = my_app_state_key_id
    return value


def contact_phone(rng: random.Random) -> str:
    """A Russian mobile number in the bot's normalized form (``79XXXXXXXXX``)."""
    return "79" + "".join(rng.choices("0123456789", k=9))


def key_id(rng: random.Random, key_type: str, index: int) -> str:
    """A ``key_id`` in the form the bot uses for ``key_type``."""
    if key_type == "pre-key":
        return str(index + 1)
    if key_type == "session":
        return f"{contact_phone(rng)}.{rng.choice((0, 0, 0, 1, 2))}"
    if key_type == "sender-key":
        return f"120363{rng.randint(10**11, 10**12 - 1)}@g.us::{contact_phone(rng)}::0"
    if key_type == "sender-key-memory":
        return f"120363{rng.randint(10**11, 10**12 - 1)}@g.us"
    if key_type == "app-state-sync-key":
        return "AAAA" + "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=4)) + str(index)
    if key_type == "app-state-sync-version":
        names = (
            "regular_high",
            "regular_low",
            "regular",
            "critical_block",
            "critical_unblock_low",
        )
        return names[index % len(names)] + ("" if index < len(names) else f"_{index}")
    if key_type in ("lid-mapping", "device-list", "tctoken"):
        suffix = "_reverse" if key_type == "lid-mapping" and index % 2 else ""
        return f"{contact_phone(rng)}{suffix}"
    return f"{key_type}-{index}"


def key_value(rng: random.Random, key_type: str) -> dict | str | list:
    """A key ``value`` in the shape Baileys stores for ``key_type``."""
    if key_type == "pre-key":
        return key_pair(rng)
    if key_type in ("session", "sender-key"):
        return buffer(rng, 48 if key_type == "session" else 48, as_list=rng.random() < 0.2)
    if key_type == "sender-key-memory":
        return {f"{contact_phone(rng)}:0@s.whatsapp.net": True}
    if key_type == "app-state-sync-key":
        return {
            "keyData": buffer(rng, 32),
            "fingerprint": {
                "rawId": rng.randint(1, 10**6),
                "currentIndex": rng.randint(0, 9),
                "deviceIndexes": [0, rng.randint(1, 5)],
            },
            "timestamp": str(rng.randint(1_730_000_000_000, 1_765_000_000_000)),
        }
    if key_type == "app-state-sync-version":
        return {"version": rng.randint(1, 500), "hash": buffer(rng, 16), "indexValueMap": {}}
    if "lid-mapping" in key_type:
        return str(rng.randint(10**14, 10**15 - 1))
    if key_type == "device-list":
        return [str(i) for i in range(rng.randint(1, 3))]
    if key_type == "tctoken":
        return {
            "token": buffer(rng, 24),
            "timestamp": str(rng.randint(1_730_000_000, 1_765_000_000)),
        }
    return {"data": buffer(rng, 16)}


# --- A session's life as Baileys writes it ----------------------------------------------------

#: Baileys' pre-key constants (``src/Defaults/index.ts``): v7 uploads 812 at pairing (v6: 30),
#: and tops up 5 when the server holds 5 or fewer.
INITIAL_PREKEYS = {7: 812, 6: 30}
PREKEY_TOP_UP = 5
MIN_PREKEY_COUNT = 5
#: The collections Baileys keeps one ``app-state-sync-version`` row for.
APP_STATE_COLLECTIONS = (
    "critical_block",
    "critical_unblock_low",
    "regular_high",
    "regular_low",
    "regular",
)


@dataclass(frozen=True)
class Lifecycle:
    """
    One session's life since pairing, in whole numbers so its row count is known up front.

    Attributes:
        paired_days_ago: when the phone confirmed the pairing (QR or pairing code).
        version: Baileys major version: 7 uploads 812 pre-keys at pairing and stores
            ``identity-key`` rows; 6 uploads 30.
        contacts: contacts the salon talked with (a ``session``, ``device-list`` and two
            ``lid-mapping`` rows each, and an ``identity-key`` on v7).
        new_contacts: contacts who wrote first: each used up one of our pre-keys, which Baileys
            then deleted (``removePreKey``); at 5 or fewer left, 5 more were uploaded.
        active_today: contacts with a message in the last hours (their ``session`` rewritten).
        groups: groups the salon is in (a ``sender-key-memory`` row each).
        group_members: ``sender-key`` rows per group.
        app_state_keys: keys the phone shared; ``myAppStateKeyId`` names the newest.
        extra_devices: further ``session`` rows (contacts' second devices).
        tctokens: ``tctoken`` rows.

    """

    paired_days_ago: float = 21
    version: int = 7
    contacts: int = 40
    new_contacts: int = 30
    active_today: int = 3
    groups: int = 1
    group_members: int = 3
    app_state_keys: int = 2
    extra_devices: int = 0
    tctokens: int = 0

    def pre_key_history(self) -> tuple[int, int, int]:
        """``(stored pre-keys, nextPreKeyId, top-ups)`` after ``new_contacts`` were used."""
        pool = INITIAL_PREKEYS[self.version]
        next_id = pool + 1
        top_ups = 0
        for _ in range(self.new_contacts):
            pool -= 1
            if pool <= MIN_PREKEY_COUNT:
                pool += PREKEY_TOP_UP
                next_id += PREKEY_TOP_UP
                top_ups += 1
        return pool, next_id, top_ups

    def key_counts(self) -> dict[str, int]:
        """How many rows of each key type :func:`lifecycle_keys` writes."""
        counts = {
            "pre-key": self.pre_key_history()[0],
            "session": self.contacts + self.extra_devices,
            "device-list": self.contacts,
            "lid-mapping": 2 * self.contacts,
            "sender-key": self.groups * self.group_members,
            "sender-key-memory": self.groups,
            "app-state-sync-key": self.app_state_keys,
            "app-state-sync-version": len(APP_STATE_COLLECTIONS),
            "tctoken": min(self.tctokens, self.contacts),
        }
        if self.version >= 7:
            counts["identity-key"] = self.contacts + self.extra_devices
        return {kind: count for kind, count in counts.items() if count}

    def key_count(self) -> int:
        """All rows :func:`lifecycle_keys` writes."""
        return sum(self.key_counts().values())


@dataclass
class LifecycleKeys:
    """
    The key rows of one session's life, and the creds fields that must agree with them.

    Attributes:
        rows: ``(key_type, key_id, value, created_at, updated_at)`` per key.
        next_pre_key_id: ``creds.nextPreKeyId``: last uploaded pre-key id + 1.
        app_state_key_ids: the stored app-state keys, oldest first; the last is
            ``creds.myAppStateKeyId``.
        paired_at: when the pairing happened.

    """

    rows: list[tuple]
    next_pre_key_id: int
    app_state_key_ids: list[str]
    paired_at: datetime


def _lid(rng: random.Random) -> str:
    return str(rng.randint(10**14, 10**15 - 1))


def lifecycle_keys(
    rng: random.Random,
    life: Lifecycle,
    now: datetime,
    *,
    app_state_key_ids: list[str] | None = None,
) -> LifecycleKeys:
    """
    Every key row of a session that lived ``life`` until ``now``, with Baileys' ids and values.

    Pre-keys ``1..812`` (or ``1..30``) are written at pairing and each new contact deletes one
    at random; top-ups of 5 follow at 5 or fewer. Per-contact rows are written when the contact
    first appears; ``session`` rows again at the contact's last message (today for
    ``active_today`` of them, days or weeks ago for the rest). ``app_state_key_ids`` gives the
    app-state keys' ids (the demo draws them apart, for the creds); else they are drawn here.
    """
    paired_at = now - timedelta(days=life.paired_days_ago)
    span = (now - paired_at).total_seconds()
    rows: list[tuple] = []

    # Pre-keys: uploaded at pairing, used up one per new contact, topped up at 5 or fewer.
    initial = INITIAL_PREKEYS[life.version]
    available = list(range(1, initial + 1))
    written = dict.fromkeys(available, paired_at)
    next_id = initial + 1
    uses = sorted(
        paired_at + timedelta(seconds=rng.uniform(0, span)) for _ in range(life.new_contacts)
    )
    for used_at in uses:
        index = rng.randrange(len(available))
        available[index] = available[-1]
        available.pop()
        if len(available) <= MIN_PREKEY_COUNT:
            for key_id in range(next_id, next_id + PREKEY_TOP_UP):
                available.append(key_id)
                written[key_id] = used_at
            next_id += PREKEY_TOP_UP
    for key_id in sorted(available):
        rows.append(("pre-key", str(key_id), key_pair(rng), written[key_id], written[key_id]))

    # App-state keys arrive from the phone at pairing, later ones now and then.
    app_ids: list[str] = []
    for index in range(life.app_state_keys):
        at = (
            paired_at
            + timedelta(minutes=1)
            + timedelta(seconds=span * index / max(life.app_state_keys, 1) / 2)
        )
        if app_state_key_ids is not None:
            key_id = app_state_key_ids[index]
        else:
            key_id = app_state_key_id(rng)
            while key_id in app_ids:
                key_id = app_state_key_id(rng)
        app_ids.append(key_id)
        rows.append(("app-state-sync-key", key_id, key_value(rng, "app-state-sync-key"), at, at))

    # Contacts: first seen some time after pairing; the last message today or earlier.
    phones: set[str] = set()
    last_seen: list[datetime] = []
    for index in range(life.contacts):
        phone = contact_phone(rng)
        while phone in phones:
            phone = contact_phone(rng)
        phones.add(phone)
        first = paired_at + timedelta(seconds=rng.uniform(0, span * 0.9))
        if index < life.active_today:
            last = now - timedelta(hours=rng.uniform(0.05, 20))
        else:
            quiet_from = max(first, paired_at)
            last = quiet_from + (now - timedelta(days=1) - quiet_from) * rng.random()
            last = max(first, last)
        first = min(first, last)
        last_seen.append(last)
        address = f"{phone}.0"
        rows.append(("session", address, key_value(rng, "session"), first, last))
        if life.version >= 7:
            rows.append(("identity-key", address, buffer(rng, 33), first, first))
        lid = _lid(rng)
        rows.append(("lid-mapping", phone, lid, first, first))
        rows.append(("lid-mapping", f"{lid}_reverse", phone, first, first))
        rows.append(("device-list", phone, ["0"], first, first))
    phone_list = sorted(phones)
    for index in range(life.extra_devices):
        phone = phone_list[index % len(phone_list)] if phone_list else contact_phone(rng)
        address = f"{phone}.{1 + index // max(len(phone_list), 1)}"
        at = paired_at + timedelta(seconds=rng.uniform(0, span * 0.9))
        rows.append(("session", address, key_value(rng, "session"), at, at))
        if life.version >= 7:
            rows.append(("identity-key", address, buffer(rng, 33), at, at))
    for index in range(min(life.tctokens, len(phone_list))):
        at = last_seen[index]
        rows.append(("tctoken", phone_list[index], key_value(rng, "tctoken"), at, at))

    # Groups: one sender-key per member who sent, one sender-key-memory per group.
    for _ in range(life.groups):
        group = f"120363{rng.randint(10**11, 10**12 - 1)}@g.us"
        at = paired_at + timedelta(seconds=rng.uniform(0, span))
        senders = phone_list[: life.group_members]
        senders += [contact_phone(rng) for _ in range(life.group_members - len(senders))]
        for sender in senders:
            value = key_value(rng, "sender-key")
            rows.append(("sender-key", f"{group}::{sender}::0", value, at, at))
        rows.append(("sender-key-memory", group, key_value(rng, "sender-key-memory"), at, at))

    # App-state versions: rewritten with each sync, last at the latest activity.
    synced = max(last_seen, default=paired_at)
    for name in APP_STATE_COLLECTIONS:
        rows.append(
            (
                "app-state-sync-version",
                name,
                key_value(rng, "app-state-sync-version"),
                paired_at,
                synced,
            )
        )
    return LifecycleKeys(
        rows=rows, next_pre_key_id=next_id, app_state_key_ids=app_ids, paired_at=paired_at
    )
