"""
Models: the bot's four tables (unmanaged, bot alias) and the project's own records.

The bot's tables are described by ``shared/legacy-schema.md``; each field here names the
column's exact PostgreSQL type so the drift check (``observability.schema``) can compare them
with a live database. Never add ``managed = True`` to these: production belongs to the bot.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from observability.fields import NaiveDateTimeField, NumericField


class WhatsAppAuthQuerySet(models.QuerySet):
    """Queries over ``whatsapp_auth``."""

    def for_salon(self, salon_id: int) -> WhatsAppAuthQuerySet:
        """Both spellings of one salon's session."""
        from observability.session_ids import spellings

        return self.filter(company_id__in=spellings(salon_id))


class WhatsAppAuth(models.Model):
    """
    One WhatsApp (Baileys) session's credentials: table ``whatsapp_auth``.

    Attributes:
        company_id: text, primary key: the session id, ``962302`` or ``company_962302``.
        creds: jsonb, not null: the Baileys credentials object. Secret: never render it.
        created_at: timestamptz, default now().
        updated_at: timestamptz, default now(); a trigger sets it on every update.

    """

    company_id = models.TextField(primary_key=True)
    creds = models.JSONField()
    created_at = models.DateTimeField(null=True, blank=True, db_default=Now())
    updated_at = models.DateTimeField(null=True, blank=True, db_default=Now())

    objects = WhatsAppAuthQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = "whatsapp_auth"
        verbose_name = "WhatsApp session"
        verbose_name_plural = "WhatsApp sessions"
        ordering = ["company_id"]

    def __str__(self) -> str:
        return self.company_id


class WhatsAppKeyQuerySet(models.QuerySet):
    """Queries over ``whatsapp_keys``."""

    def for_session(self, session_id: str) -> WhatsAppKeyQuerySet:
        """Keys stored under exactly this session id."""
        return self.filter(company_id=session_id)

    def expired(self, now=None) -> WhatsAppKeyQuerySet:
        """Keys whose ``expires_at`` has passed (NULL never expires)."""
        return self.filter(expires_at__lt=now or timezone.now())


class WhatsAppKey(models.Model):
    """
    Signal-protocol keys and other per-session key material: table ``whatsapp_keys``.

    Django 5.2's admin refuses composite primary keys: keys are browsed through the session's
    own admin pages.

    Attributes:
        company_id: text, not null: the session id (either spelling).
        key_type: text, not null: ``pre-key``, ``session``, ``sender-key``, ... .
        key_id: text, not null: free text (``AAAAAK6J``, ``79265686288.0``, ...).
        value: jsonb, not null: the key material. Secret: never render it.
        created_at: timestamptz, default now().
        updated_at: timestamptz, default now(); a trigger sets it on every update.
        expires_at: timestamptz, null: set by the bot on every write (7 or 14 days ahead);
            NULL never expires.

    """

    pk = models.CompositePrimaryKey("company_id", "key_type", "key_id")
    company_id = models.TextField()
    key_type = models.TextField()
    key_id = models.TextField()
    value = models.JSONField()
    created_at = models.DateTimeField(null=True, blank=True, db_default=Now())
    updated_at = models.DateTimeField(null=True, blank=True, db_default=Now())
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = WhatsAppKeyQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = "whatsapp_keys"
        verbose_name = "WhatsApp key"
        verbose_name_plural = "WhatsApp keys"

    def __str__(self) -> str:
        return f"{self.company_id} {self.key_type} {self.key_id}"


class Company(models.Model):
    """
    A salon: table ``companies``.

    Attributes:
        id: serial primary key.
        company_id: integer, not null: the salon id (e.g. 962302) that session ids spell.
        yclients_id: integer.
        title, address, phone, email, website, timezone, working_hours: varchar.
        coordinate_lat, coordinate_lon: numeric.
        currency: varchar(10).
        ai_enabled, sync_enabled: boolean.
        created_at, updated_at, last_sync_at: timestamp without time zone.
        raw_data, whatsapp_config, whatsapp_session_data: jsonb.
        whatsapp_enabled, whatsapp_connected: boolean; whatsapp_phone: varchar(50);
            whatsapp_connected_at: timestamp.
        integration_status: varchar(100); connected_at: timestamp.
        marketplace_user_*: varchar.
        api_key, webhook_secret: varchar(255). Secret: never render them.
        last_payment_date: timestamp; subscription_expires_at: timestamptz.
        whatsapp_channel_enabled, sms_channel_enabled: boolean; sms_short_names: text[].
        disconnected_at: timestamptz; status: varchar(50).
        telegram_enabled: boolean; telegram_premium_until: timestamp.

    """

    id = models.AutoField(primary_key=True)
    company_id = models.IntegerField()
    yclients_id = models.IntegerField(null=True, blank=True)
    title = models.CharField(max_length=255, null=True, blank=True)
    address = models.CharField(max_length=500, null=True, blank=True)
    phone = models.CharField(max_length=50, null=True, blank=True)
    email = models.CharField(max_length=255, null=True, blank=True)
    website = models.CharField(max_length=255, null=True, blank=True)
    timezone = models.CharField(max_length=100, null=True, blank=True)
    working_hours = models.CharField(max_length=255, null=True, blank=True)
    coordinate_lat = NumericField(null=True, blank=True)
    coordinate_lon = NumericField(null=True, blank=True)
    currency = models.CharField(max_length=10, null=True, blank=True)
    ai_enabled = models.BooleanField(null=True, blank=True, db_default=False)
    sync_enabled = models.BooleanField(null=True, blank=True, db_default=True)
    created_at = NaiveDateTimeField(null=True, blank=True, db_default=Now())
    updated_at = NaiveDateTimeField(null=True, blank=True, db_default=Now())
    last_sync_at = NaiveDateTimeField(null=True, blank=True)
    raw_data = models.JSONField(null=True, blank=True)
    whatsapp_enabled = models.BooleanField(null=True, blank=True, db_default=False)
    whatsapp_config = models.JSONField(null=True, blank=True)
    whatsapp_connected = models.BooleanField(null=True, blank=True, db_default=False)
    whatsapp_phone = models.CharField(max_length=50, null=True, blank=True)
    whatsapp_connected_at = NaiveDateTimeField(null=True, blank=True)
    integration_status = models.CharField(max_length=100, null=True, blank=True)
    connected_at = NaiveDateTimeField(null=True, blank=True)
    marketplace_user_id = models.CharField(max_length=255, null=True, blank=True)
    marketplace_user_name = models.CharField(max_length=255, null=True, blank=True)
    marketplace_user_email = models.CharField(max_length=255, null=True, blank=True)
    marketplace_user_phone = models.CharField(max_length=50, null=True, blank=True)
    whatsapp_session_data = models.JSONField(null=True, blank=True)
    api_key = models.CharField(max_length=255, null=True, blank=True)
    webhook_secret = models.CharField(max_length=255, null=True, blank=True)
    last_payment_date = NaiveDateTimeField(null=True, blank=True)
    subscription_expires_at = models.DateTimeField(null=True, blank=True)
    whatsapp_channel_enabled = models.BooleanField(null=True, blank=True, db_default=True)
    sms_channel_enabled = models.BooleanField(null=True, blank=True, db_default=False)
    sms_short_names = ArrayField(models.TextField(), null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=50, null=True, blank=True)
    telegram_enabled = models.BooleanField(null=True, blank=True, db_default=False)
    telegram_premium_until = NaiveDateTimeField(null=True, blank=True)

    class Meta:
        managed = False
        db_table = "companies"
        verbose_name = "salon"
        verbose_name_plural = "salons"
        ordering = ["company_id"]

    def __str__(self) -> str:
        return f"{self.title or 'Salon'} ({self.company_id})"


class Client(models.Model):
    """
    A salon's customer: table ``clients``.

    Attributes:
        id: serial primary key.
        yclients_id: integer, not null (unique).
        name: varchar(255).
        phone: varchar(50), not null: normalized digits, e.g. 79001234567.
        raw_phone: varchar(50): as the customer typed it.
        email: varchar(255); discount: numeric.
        company_id: integer: the salon id (``companies.company_id``), not a foreign key.
        branch_ids: integer[]; tags: text[].
        status: varchar(50); source: varchar(100).
        created_at, updated_at, last_sync_at, last_ai_interaction: timestamp.
        visit_count: integer; total_spent, average_bill: numeric.
        first_visit_date, last_visit_date: date.
        last_services: text[]; visit_history, preferences, ai_context, goods_purchases: jsonb.
        loyalty_level, client_segment: varchar(50).
        last_service_ids, favorite_staff_ids: integer[];
            preferred_time_slots: varchar(50)[].
        blacklisted, created_by_ai: boolean; notes: text.
        ai_messages_count, goods_count: integer.
        ai_satisfaction_score, services_amount, goods_amount: numeric.

    """

    id = models.AutoField(primary_key=True)
    yclients_id = models.IntegerField()
    name = models.CharField(max_length=255, null=True, blank=True)
    phone = models.CharField(max_length=50)
    raw_phone = models.CharField(max_length=50, null=True, blank=True)
    email = models.CharField(max_length=255, null=True, blank=True)
    discount = NumericField(null=True, blank=True)
    company_id = models.IntegerField(null=True, blank=True)
    branch_ids = ArrayField(models.IntegerField(), null=True, blank=True)
    tags = ArrayField(models.TextField(), null=True, blank=True)
    status = models.CharField(max_length=50, null=True, blank=True)
    source = models.CharField(max_length=100, null=True, blank=True)
    created_at = NaiveDateTimeField(null=True, blank=True, db_default=Now())
    updated_at = NaiveDateTimeField(null=True, blank=True, db_default=Now())
    visit_count = models.IntegerField(null=True, blank=True, db_default=0)
    total_spent = NumericField(null=True, blank=True)
    first_visit_date = models.DateField(null=True, blank=True)
    last_visit_date = models.DateField(null=True, blank=True)
    last_services = ArrayField(models.TextField(), null=True, blank=True)
    visit_history = models.JSONField(null=True, blank=True)
    preferences = models.JSONField(null=True, blank=True)
    last_sync_at = NaiveDateTimeField(null=True, blank=True)
    loyalty_level = models.CharField(max_length=50, null=True, blank=True)
    client_segment = models.CharField(max_length=50, null=True, blank=True)
    average_bill = NumericField(null=True, blank=True)
    last_service_ids = ArrayField(models.IntegerField(), null=True, blank=True)
    favorite_staff_ids = ArrayField(models.IntegerField(), null=True, blank=True)
    preferred_time_slots = ArrayField(models.CharField(max_length=50), null=True, blank=True)
    blacklisted = models.BooleanField(null=True, blank=True, db_default=False)
    notes = models.TextField(null=True, blank=True)
    created_by_ai = models.BooleanField(null=True, blank=True, db_default=False)
    last_ai_interaction = NaiveDateTimeField(null=True, blank=True)
    ai_context = models.JSONField(null=True, blank=True)
    ai_messages_count = models.IntegerField(null=True, blank=True, db_default=0)
    ai_satisfaction_score = NumericField(null=True, blank=True)
    services_amount = NumericField(null=True, blank=True)
    goods_amount = NumericField(null=True, blank=True)
    goods_purchases = models.JSONField(null=True, blank=True)
    goods_count = models.IntegerField(null=True, blank=True, db_default=0)

    class Meta:
        managed = False
        db_table = "clients"
        verbose_name = "client"
        verbose_name_plural = "clients"
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or f"Client {self.yclients_id}"


# --- The project's own records (default alias) ------------------------------------------------


class CleanupRun(models.Model):
    """
    One cleanup run, dry or applied, whoever started it: the audit trail of every delete.

    Written by ``observability.cleanup`` only; shown read-only in the admin. A run killed
    mid-way stays ``running`` with the counts of its committed batches until the next applied
    run marks it ``failed``.

    Attributes:
        operation: ``expired_keys``, ``duplicates``, ``orphan_keys`` or ``restore``.
        parameters: the run's inputs (salons, key types, cut-off, batch size, ...).
        started_by: ``command``, ``task`` or ``admin:<username>``.
        dry_run: True when the run only counted.
        started_at, finished_at: when it began and ended (finished is NULL while running).
        rows_seen: matching rows found at the start, ``{"<session id>": {"<key type>": n}}``.
        rows_deleted: rows deleted (committed), same shape.
        total_seen, total_deleted: the sums of the two.
        bytes_before, bytes_after: ``pg_total_relation_size`` of the tables touched.
        backup_path: the backup files written before deleting (duplicates), one per line.
        outcome: running, succeeded, failed or refused.
        error: what went wrong (never carries a secret).

    """

    class Outcome(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        REFUSED = "refused", "refused"

    operation = models.CharField(max_length=40)
    parameters = models.JSONField(default=dict, blank=True)
    started_by = models.CharField(max_length=200)
    dry_run = models.BooleanField(default=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rows_seen = models.JSONField(default=dict, blank=True)
    rows_deleted = models.JSONField(default=dict, blank=True)
    total_seen = models.BigIntegerField(default=0)
    total_deleted = models.BigIntegerField(default=0)
    bytes_before = models.BigIntegerField(null=True, blank=True)
    bytes_after = models.BigIntegerField(null=True, blank=True)
    backup_path = models.TextField(blank=True)
    outcome = models.CharField(
        max_length=20, choices=Outcome.choices, default=Outcome.RUNNING, db_index=True
    )
    error = models.TextField(blank=True)

    class Meta:
        verbose_name = "cleanup run"
        verbose_name_plural = "cleanup runs"
        ordering = ["-started_at"]

    def __str__(self) -> str:
        mode = "dry run" if self.dry_run else "applied"
        return f"{self.operation} ({mode}) {self.outcome} at {self.started_at:%Y-%m-%d %H:%M}"
