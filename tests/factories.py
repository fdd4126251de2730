"""Insert realistic bot rows (Baileys shapes) into the test bot database."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.utils import timezone

from observability.models import Client, Company, WhatsAppAuth, WhatsAppKey
from observability_demo import fakes


def default_phone(session_id: str) -> str:
    """A number of the salon's own (``7900`` + its id): sessions never share one by accident."""
    digits = "".join(ch for ch in session_id if ch.isdigit())
    return "7900" + digits[-7:].rjust(7, "0")


def make_auth(
    session_id: str,
    *,
    seed: int | None = None,
    phone: str | None = None,
    registered: bool = False,
    platform: str = "android",
    written_at: datetime | None = None,
    paired: bool = True,
    next_pre_key_id: int | None = None,
    my_app_state_key_id: str | None = None,
) -> WhatsAppAuth:
    """
    Insert one ``whatsapp_auth`` row with Baileys-shaped creds.

    By default a QR-paired session (``registered`` false, as Baileys leaves it) whose
    ``nextPreKeyId`` follows v7's first upload of 812 pre-keys; ``registered=True`` is a
    pairing-code login, ``paired=False`` creds whose pairing never finished. Without a
    ``seed`` the keys derive from the session id and without a ``phone`` the number does (see
    :func:`default_phone`), so two sessions share a login or a number only when a test says so.
    """
    rng = random.Random(seed if seed is not None else f"creds-{session_id}")
    phone = phone or default_phone(session_id)
    written_at = written_at or timezone.now()
    return WhatsAppAuth.objects.create(
        company_id=session_id,
        creds=fakes.creds(
            rng,
            phone=phone,
            name="Demo Salon",
            registered=registered,
            platform=platform,
            paired=paired,
            next_pre_key_id=next_pre_key_id,
            my_app_state_key_id=my_app_state_key_id,
        ),
        created_at=written_at - timedelta(days=30),
        updated_at=written_at,
    )


def make_keys(
    session_id: str,
    key_type: str,
    count: int,
    *,
    written_at: datetime | None = None,
    seed: int = 1,
    expires_at: datetime | None | str = "bot",
    first_id: int = 1,
) -> list[WhatsAppKey]:
    """
    Insert ``count`` keys of one type, written at ``written_at`` with the bot's expiry rule.

    Key ids and values have Baileys' shapes (``fakes.key_id``): pre-keys are numbered from
    ``first_id``, contacts' keys carry random numbers (unique within the call).

    Args:
        session_id: the session id to store the keys under.
        key_type: the bot's key type.
        count: how many keys.
        written_at: their created/updated time (default now).
        seed: seed for the random key ids and values.
        expires_at: ``"bot"`` applies the bot's 7/14-day rule; a datetime or None is stored
            as given.
        first_id: the first pre-key id.

    """
    rng = random.Random(f"{seed}-{session_id}-{key_type}")
    written_at = written_at or timezone.now()
    expiry = fakes.bot_expires_at(key_type, written_at) if expires_at == "bot" else expires_at
    seen: set[str] = set()
    keys = []
    for index in range(count):
        if key_type == "pre-key":
            key_id = str(first_id + index)
        else:
            key_id = fakes.key_id(rng, key_type, index)
            while key_id in seen:
                key_id = fakes.key_id(rng, key_type, index)
        seen.add(key_id)
        keys.append(
            WhatsAppKey(
                company_id=session_id,
                key_type=key_type,
                key_id=key_id,
                value=fakes.key_value(rng, key_type),
                created_at=written_at,
                updated_at=written_at,
                expires_at=expiry,
            )
        )
    return WhatsAppKey.objects.bulk_create(keys)


def make_session(
    session_id: str,
    *,
    life: fakes.Lifecycle | None = None,
    now: datetime | None = None,
    seed: int = 1,
    phone: str | None = None,
    registered: bool = False,
    platform: str = "android",
    connected_hours_ago: float = 2,
) -> fakes.LifecycleKeys:
    """
    Insert a whole session as Baileys leaves it after ``life``: creds and every key.

    Default: a healthy QR-paired v7 session three weeks after pairing (812 pre-keys uploaded,
    30 used by new contacts, most of the rest past the bot's ``expires_at``; two app-state
    keys with ``myAppStateKeyId`` naming the newest; 40 contacts, 3 of them active today).
    The creds were last written ``connected_hours_ago`` (Baileys writes them at each login).

    Returns:
        The rows written and the creds fields that agree with them.

    """
    life = life or fakes.Lifecycle()
    now = now or timezone.now()
    rng = random.Random(f"{seed}-{session_id}-life")
    keys = fakes.lifecycle_keys(rng, life, now)
    auth_rng = random.Random(f"{seed}-{session_id}-creds")
    WhatsAppAuth.objects.create(
        company_id=session_id,
        creds=fakes.creds(
            auth_rng,
            phone=phone or default_phone(session_id),
            name="Demo Salon",
            registered=registered,
            platform=platform,
            next_pre_key_id=keys.next_pre_key_id,
            my_app_state_key_id=keys.app_state_key_ids[-1] if keys.app_state_key_ids else None,
        ),
        created_at=keys.paired_at,
        updated_at=now - timedelta(hours=connected_hours_ago),
    )
    WhatsAppKey.objects.bulk_create(
        WhatsAppKey(
            company_id=session_id,
            key_type=key_type,
            key_id=key_id,
            value=value,
            created_at=created,
            updated_at=updated,
            expires_at=fakes.bot_expires_at(key_type, updated),
        )
        for key_type, key_id, value, created, updated in keys.rows
    )
    return keys


def make_company(salon_id: int, *, title: str = "Салон красоты «Лотос»", **fields) -> Company:
    """Insert one ``companies`` row with secrets set (so tests can prove they never show)."""
    defaults = {
        "api_key": f"sk_live_{salon_id}_secretapikey",
        "webhook_secret": f"whsec_{salon_id}_secretwebhook",
        "whatsapp_enabled": True,
        "whatsapp_connected": True,
        "status": "active",
    }
    return Company.objects.create(company_id=salon_id, title=title, **{**defaults, **fields})


def make_client(
    salon_id: int,
    yclients_id: int,
    *,
    name: str = "Анна Иванова",
    phone: str = "79001112233",
    **fields,
) -> Client:
    """Insert one ``clients`` row."""
    return Client.objects.create(
        company_id=salon_id, yclients_id=yclients_id, name=name, phone=phone, **fields
    )
