"""Insert realistic bot rows (Baileys shapes) into the test bot database."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.utils import timezone

from observability import fakes
from observability.models import Client, Company, WhatsAppAuth, WhatsAppKey


def make_auth(
    session_id: str,
    *,
    seed: int = 1,
    phone: str = "79001234567",
    registered: bool = True,
    platform: str = "android",
    written_at: datetime | None = None,
) -> WhatsAppAuth:
    """Insert one ``whatsapp_auth`` row with Baileys-shaped creds."""
    rng = random.Random(seed)
    written_at = written_at or timezone.now()
    return WhatsAppAuth.objects.create(
        company_id=session_id,
        creds=fakes.creds(
            rng, phone=phone, name="Demo Salon", registered=registered, platform=platform
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
) -> list[WhatsAppKey]:
    """
    Insert ``count`` keys of one type, written at ``written_at`` with the bot's expiry rule.

    Args:
        session_id: the session id to store the keys under.
        key_type: the bot's key type.
        count: how many keys.
        written_at: their created/updated time (default now).
        seed: seed for the random key ids and values.
        expires_at: ``"bot"`` applies the bot's 7/14-day rule; a datetime or None is stored
            as given.

    """
    rng = random.Random(f"{seed}-{session_id}-{key_type}")
    written_at = written_at or timezone.now()
    expiry = fakes.bot_expires_at(key_type, written_at) if expires_at == "bot" else expires_at
    keys = [
        WhatsAppKey(
            company_id=session_id,
            key_type=key_type,
            key_id=f"{fakes.key_id(rng, key_type, index)}#{index}",
            value=fakes.key_value(rng, key_type),
            created_at=written_at,
            updated_at=written_at,
            expires_at=expiry,
        )
        for index in range(count)
    ]
    return WhatsAppKey.objects.bulk_create(keys)


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
