"""Synthetic rows have the shapes Baileys itself wrote (tests/fixtures/baileys-session.json)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from observability_demo import fakes

#: Made by npm baileys 7.0.0-rc14 with random secrets (copied from shared/samples).
SAMPLE = json.loads((Path(__file__).parent / "fixtures" / "baileys-session.json").read_text())
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _shape(value):
    """The JSON shape of a value: object keys and value kinds, Buffers as one leaf kind."""
    if isinstance(value, dict):
        if value.get("type") == "Buffer":
            return "Buffer"
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def test_creds__pairing_code_login_has_the_samples_shape():
    """A pairing-code login's creds have every field of Baileys' own, with the same kinds."""
    sample = SAMPLE["whatsapp_auth"]["creds"]
    made = fakes.creds(
        random.Random(1),
        phone="79001234567",
        name="Demo Salon",
        registered=True,
        my_app_state_key_id="AAAAAK6J",
    )
    assert _shape(made) == _shape(sample)


def test_creds__qr_login_keeps_registered_false_without_pairing_code():
    """A QR-paired session has registered false and no pairingCode, as Baileys leaves it."""
    made = fakes.creds(random.Random(1), phone="79001234567", name="Demo Salon")
    assert made["registered"] is False and "pairingCode" not in made
    assert made["me"]["id"].startswith("79001234567:") and "account" in made


def test_creds__unfinished_pairing_is_init_auth_creds():
    """Creds whose pairing never finished are what initAuthCreds() makes: no me, no account."""
    made = fakes.creds(random.Random(1), phone="79001234567", name="x", paired=False)
    assert not {"me", "account", "signalIdentities", "platform"} & set(made)
    assert made["nextPreKeyId"] == made["firstUnuploadedPreKeyId"] == 1


@pytest.mark.parametrize("key_type", sorted({k["key_type"] for k in SAMPLE["whatsapp_keys"]}))
def test_lifecycle_keys__each_type_has_the_samples_id_and_value_shape(key_type):
    """Every key type's ids look like Baileys' and its values have Baileys' shape."""
    sample = next(k for k in SAMPLE["whatsapp_keys"] if k["key_type"] == key_type)
    life = fakes.lifecycle_keys(random.Random(3), fakes.Lifecycle(), NOW)
    made = [row for row in life.rows if row[0] == key_type]
    assert made, key_type
    _, key_id, value, _, _ = made[0]
    if key_type == "sender-key-memory":  # keyed by the members' JIDs
        assert all(jid.endswith(":0@s.whatsapp.net") and v is True for jid, v in value.items())
    else:
        assert _shape(value) == _shape(sample["value"]), key_type
    if key_type == "pre-key":
        assert key_id.isdigit()
    elif key_type == "session":
        assert key_id.split(".")[0].isdigit() and key_id.endswith(".0")
    elif key_type == "sender-key":
        assert key_id.count("::") == 2 and "@g.us::" in key_id
    elif key_type == "app-state-sync-key":
        assert len(key_id) == len(sample["key_id"])


def test_lifecycle__row_counts_match_and_pre_keys_follow_baileys():
    """The rows match key_counts(); pre-key ids stay below nextPreKeyId; top-ups come by 5."""
    for life in (
        fakes.Lifecycle(),
        fakes.Lifecycle(version=6, contacts=50, new_contacts=50),
        fakes.Lifecycle(contacts=3, extra_devices=7, tctokens=9),
    ):
        keys = fakes.lifecycle_keys(random.Random(5), life, NOW)
        counts: dict[str, int] = {}
        for row in keys.rows:
            counts[row[0]] = counts.get(row[0], 0) + 1
        assert counts == life.key_counts()
        ids = [int(row[1]) for row in keys.rows if row[0] == "pre-key"]
        assert max(ids) < keys.next_pre_key_id == life.pre_key_history()[1]
        assert (keys.next_pre_key_id - 1 - fakes.INITIAL_PREKEYS[life.version]) % 5 == 0
        assert len({(row[0], row[1]) for row in keys.rows}) == len(keys.rows)
