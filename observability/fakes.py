"""
Synthetic Baileys data in the real shapes, for the demo data set and the tests.

The shapes follow ``shared/samples/baileys-session.json`` (made by the Baileys library): binary
values are ``{"type": "Buffer", "data": <base64>}`` (or a byte list, as older rows have), and
secrets are random bytes from the given ``random.Random`` so a seed reproduces a data set.
"""

from __future__ import annotations

import base64
import random

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


def creds(
    rng: random.Random,
    *,
    phone: str,
    name: str,
    registered: bool = True,
    platform: str = "android",
) -> dict:
    """A Baileys ``creds`` object for a session logged in as ``phone``."""
    device = rng.randint(1, 40)
    jid = f"{phone}:{device}@s.whatsapp.net"
    return {
        "noiseKey": key_pair(rng),
        "pairingEphemeralKeyPair": key_pair(rng),
        "signedIdentityKey": key_pair(rng),
        "signedPreKey": {
            "keyPair": key_pair(rng),
            "signature": buffer(rng, 64),
            "keyId": rng.randint(1, 5000),
        },
        "registrationId": rng.randint(1, 16380),
        "advSecretKey": base64.b64encode(rng.randbytes(32)).decode(),
        "processedHistoryMessages": [],
        "nextPreKeyId": rng.randint(30, 3000),
        "firstUnuploadedPreKeyId": rng.randint(30, 3000),
        "accountSyncCounter": rng.randint(0, 5),
        "accountSettings": {"unarchiveChats": False},
        "registered": registered,
        "pairingCode": "".join(rng.choices("ABCDEFGHJKLMNPQRSTVWXYZ0123456789", k=8)),
        "routingInfo": buffer(rng, 24),
        "me": {"id": jid, "name": name, "lid": f"{rng.randint(10**14, 10**15 - 1)}:{device}@lid"},
        "platform": platform,
        "account": {
            "details": buffer(rng, 40),
            "accountSignatureKey": buffer(rng, 32),
            "accountSignature": buffer(rng, 64),
            "deviceSignature": buffer(rng, 64),
        },
        "signalIdentities": [
            {"identifier": {"name": jid, "deviceId": 0}, "identifierKey": buffer(rng, 33)}
        ],
        "lastAccountSyncTimestamp": rng.randint(1_730_000_000, 1_765_000_000),
        "myAppStateKeyId": "AAAAA" + "".join(rng.choices("ABCDEFGHIJKLMNOP", k=3)),
    }


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
