"""The unmanaged models read every column of real rows in the bot's schema."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connections

from observability.models import Client, Company, WhatsAppAuth, WhatsAppKey
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])


def test_models__are_unmanaged_and_read_from_the_bot_alias():
    """Every bot model is unmanaged and routed to the bot alias, never to default."""
    for model in (WhatsAppAuth, WhatsAppKey, Company, Client):
        assert model._meta.managed is False
        assert model.objects.db == "bot"


def test_whatsapp_key__composite_primary_key_round_trips():
    """A key is found by its (company_id, key_type, key_id) triple."""
    factories.make_keys("company_962302", "session", 2)
    key = WhatsAppKey.objects.filter(company_id="company_962302").first()
    again = WhatsAppKey.objects.get(pk=(key.company_id, key.key_type, key.key_id))
    assert again.value == key.value
    assert again.expires_at - again.updated_at == dt.timedelta(days=7)


def test_whatsapp_auth__reads_buffers_in_creds():
    """Creds come back as the Baileys object, Buffers included."""
    factories.make_auth("962302", phone="79001234567")
    creds = WhatsAppAuth.objects.get(pk="962302").creds
    assert creds["noiseKey"]["private"]["type"] == "Buffer"
    assert creds["me"]["id"].startswith("79001234567:")


def test_company_and_client__read_arrays_numeric_jsonb_and_naive_timestamps():
    """Arrays, numeric, jsonb, dates and timestamp-without-time-zone columns all read back."""
    factories.make_company(
        962302,
        sms_short_names=["LOTOS", "LOTOS2"],
        coordinate_lat=Decimal("55.7558260"),
        raw_data={"id": 962302},
        created_at=dt.datetime(2025, 1, 2, 3, 4, 5),
    )
    factories.make_client(
        962302,
        1001,
        branch_ids=[1, 2],
        tags=["vip"],
        preferred_time_slots=["morning"],
        total_spent=Decimal("12500.50"),
        visit_history=[{"date": "2025-01-01"}],
        last_visit_date=dt.date(2025, 11, 1),
    )
    company = Company.objects.get(company_id=962302)
    client = Client.objects.get(yclients_id=1001)
    assert company.sms_short_names == ["LOTOS", "LOTOS2"]
    assert company.coordinate_lat == Decimal("55.7558260")
    assert company.created_at == dt.datetime(2025, 1, 2, 3, 4, 5)
    assert client.branch_ids == [1, 2]
    assert client.preferred_time_slots == ["morning"]
    assert client.total_spent == Decimal("12500.50")
    assert client.visit_history == [{"date": "2025-01-01"}]
    assert client.visit_count == 0  # the column default, not the ORM's


def test_bot_tables__updated_at_trigger_fires():
    """The production trigger sets updated_at on update, as the bot's database does."""
    factories.make_auth("962302", written_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    with connections["bot"].cursor() as cursor:
        cursor.execute("UPDATE whatsapp_auth SET creds = creds WHERE company_id = '962302'")
    assert WhatsAppAuth.objects.get(pk="962302").updated_at.year >= 2026
