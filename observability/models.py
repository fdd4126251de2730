"""
Models: the bot's four tables (unmanaged, bot alias) and the project's own records.

The bot's tables are described by ``shared/legacy-schema.md``; each field here names the
column's exact PostgreSQL type so the drift check (``observability.schema``) can compare them
with a live database. Never add ``managed = True`` to these: production belongs to the bot.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from observability import moments
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
        rows_kept: rows the retention policy protects (expired keys), same shape.
        total_kept: their sum.
        kept_reasons: why each key type in ``rows_kept`` is kept, ``{"<key type>": reason}``.
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
    rows_kept = models.JSONField(default=dict, blank=True)
    total_kept = models.BigIntegerField(default=0)
    kept_reasons = models.JSONField(default=dict, blank=True)
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
        # The project's named rights beyond the admin's own (observability.health_views);
        # they sit on this model because permissions need one, and it is the project's own.
        permissions = [
            ("view_health_details", "Can see health check details"),
            ("view_metrics", "Can read /metrics"),
        ]

    def __str__(self) -> str:
        mode = "dry run" if self.dry_run else "applied"
        return f"{self.operation} ({mode}) {self.outcome} at {moments.text(self.started_at)}"


# --- The stored snapshot of session health (observability.snapshot) ---------------------------


class HealthStatus(models.TextChoices):
    """A session's verdict as stored (the values of ``observability.sessions.Status``)."""

    OK = "OK", "OK"
    WARN = "WARN", "WARN"
    FAIL = "FAIL", "FAIL"


class SessionState(models.Model):
    """
    The latest known health of one WhatsApp session: one row per session id, keys-only too.

    Written only by ``observability.snapshot.refresh``; every page, health check, metric and
    alert reads these rows instead of the bot's tables. The columns the admin filters, searches
    and orders on are real columns; every other fact stays in ``facts``.

    Attributes:
        session_id: the id exactly as the bot stores it (``962302`` or ``company_962302``).
        salon_id: the salon's number (NULL when the id follows neither spelling).
        salon_title: ``companies.title`` of the salon, for search and display.
        salon_pk: ``companies.id``, for links to the salon's page.
        spelling: ``bare``, ``prefixed`` or empty.
        platform: ``creds.platform`` (empty without an auth row).
        has_auth: an auth row exists (False: a keys-only session).
        is_duplicate: the salon is stored under both spellings.
        phone_masked: the session's own number, masked, for display.
        phone_digits: the number's digits, for phone search only. Never render it.
        status: the verdict; ``severity`` 0/1/2 orders it in SQL; ``reason_count`` too.
        reasons: the verdict's sentences, most severe first.
        total_keys: keys stored under the session id.
        newest_key_write: the latest key write (NULL without keys).
        last_write: the latest write to the creds or the keys (what the silence rule reads).
        facts: every other fact of ``SessionHealth`` as JSON (no phone digits, no secret).
        bot_flagged_disconnected: the salon's ``companies.whatsapp_connected`` was false (a
            column so the refresh compares it with the flag now without reading ``facts``).
        login_marks: hashes of the session's login keys (``sessions.login_marks``; its number
            is ``phone_digits``), so an incremental refresh finds the sessions sharing a
            login among the stored ones instead of reading every creds row. NULL:
            stored before the marks were, so the next refresh recounts every session. Never
            rendered, filtered or searched.
        status_since: when the status last changed (or the session was first seen).
        first_seen: when a snapshot first saw the session.
        facts_changed_at: when the stored facts (or status) last changed.

    """

    session_id = models.TextField(primary_key=True)
    salon_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    salon_title = models.TextField(blank=True, default="")
    salon_pk = models.IntegerField(null=True, blank=True)
    spelling = models.CharField(max_length=10, blank=True, default="")
    platform = models.CharField(max_length=60, blank=True, default="")
    has_auth = models.BooleanField(default=True)
    is_duplicate = models.BooleanField(default=False)
    phone_masked = models.CharField(max_length=40, blank=True, default="")
    phone_digits = models.CharField(max_length=20, blank=True, default="", db_index=True)
    status = models.CharField(max_length=4, choices=HealthStatus.choices, db_index=True)
    severity = models.SmallIntegerField(default=0)
    reason_count = models.SmallIntegerField(default=0)
    reasons = models.JSONField(default=list, blank=True)
    total_keys = models.IntegerField(default=0)
    newest_key_write = models.DateTimeField(null=True, blank=True)
    last_write = models.DateTimeField(null=True, blank=True, db_index=True)
    facts = models.JSONField(default=dict, blank=True)
    bot_flagged_disconnected = models.BooleanField(default=False)
    login_marks = ArrayField(models.TextField(), null=True, blank=True)
    status_since = models.DateTimeField()
    first_seen = models.DateTimeField()
    facts_changed_at = models.DateTimeField()

    class Meta:
        verbose_name = "WhatsApp session"
        verbose_name_plural = "WhatsApp sessions"
        # Worst first, as observability.sessions ranks them.
        ordering = [
            "-severity",
            "-reason_count",
            models.F("newest_key_write").asc(nulls_first=True),
            "session_id",
        ]
        indexes = [
            models.Index(
                fields=["-severity", "-reason_count", "newest_key_write", "session_id"],
                name="obs_sessionstate_worst",
            ),
        ]

    def __str__(self) -> str:
        return self.session_id


class SessionChange(models.Model):
    """
    One change of a session that matters, at the snapshot that saw it.

    Unchanged state is never copied: a row is written only when the status changes or a fact
    an operator cares about changes (the kinds below). Rows older than
    ``snapshot_history_retention`` are pruned by the refresh itself.

    Attributes:
        session_id: the session id (no foreign key: a session that is gone keeps its history).
        at: when the snapshot that saw the change was taken.
        kind: what changed (:class:`Kind`).
        old_status, new_status: the status before and after (equal for a fact change).
        reasons: the verdict's sentences after the change (status changes only; NULL else).
        detail: a short description of a fact change (counts, masked numbers; no secret).
        data: the fact's values before and after (``old``, ``new``: numbers such as
            ``nextPreKeyId`` or the ``session`` row count) and the status the session had
            (``was``), for the history detectors (``observability.rules.HISTORY_RULES``).

    ``creds_rewritten`` rows are one per session and UTC day, counting the rewrites seen
    (Baileys rewrites creds on every connect: a loop shows as a high count, not as thousands
    of rows). Time-ordered inserts make a BRIN index enough for ``at``.

    """

    class Kind(models.TextChoices):
        APPEARED = "appeared", "first seen"
        STATUS = "status", "status changed"
        GONE = "gone", "no longer stored"
        PAIRED_AGAIN = "paired_again", "paired again"
        PHONE_CHANGED = "phone_changed", "phone changed"
        PREKEYS_TOPPED_UP = "prekeys_topped_up", "pre-keys topped up"
        PREKEY_ONE_BY_ONE = "prekey_one_by_one", "pre-keys rising one by one"
        CREDS_REWRITTEN = "creds_rewritten", "creds rewritten"
        SESSION_ROWS_LOST = "session_rows_lost", "session rows lost"

    session_id = models.TextField()
    at = models.DateTimeField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    old_status = models.CharField(max_length=4, blank=True, default="")
    new_status = models.CharField(max_length=4, blank=True, default="")
    reasons = models.JSONField(null=True, blank=True)
    detail = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "session change"
        verbose_name_plural = "session changes"
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["session_id", "at"], name="obs_sessionchange_session_at"),
            BrinIndex(fields=["at"], name="obs_sessionchange_at_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} {self.kind} at {moments.text(self.at)}"


class Snapshot(models.Model):
    """
    One refresh of the stored session health: when, how, how long, and its outcome.

    The newest successful row is "the snapshot" pages show the age of; only it keeps the
    store's summary (``store``), older rows are cleared of it and pruned after
    ``snapshot_log_retention``.

    Attributes:
        taken_at: the moment the sessions were judged at (the start of the refresh).
        kind: ``full`` (every session recounted) or ``incremental`` (only changed ones).
        duration: how long the refresh took, in seconds.
        sessions_refreshed: sessions recomputed from the bot's tables.
        sessions_total: sessions stored after the refresh.
        changes: change rows written.
        outcome: ``succeeded`` or ``failed``.
        error: why it failed (never a secret).
        store: the store's summary (``StoreHealth`` as JSON) on the newest successful row.
        keys_seen_until: the bot database's clock when the refresh looked for changed rows,
            moved back to the start of the oldest writing transaction still open then: every
            row stamped before it was visible to the refresh, so the next incremental one
            starts there (NULL on failed refreshes and on rows from before this field).

    """

    class Kind(models.TextChoices):
        FULL = "full", "full"
        INCREMENTAL = "incremental", "incremental"

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    taken_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    duration = models.FloatField(default=0)
    sessions_refreshed = models.IntegerField(default=0)
    sessions_total = models.IntegerField(default=0)
    changes = models.IntegerField(default=0)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    error = models.TextField(blank=True, default="")
    store = models.JSONField(null=True, blank=True)
    keys_seen_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "health snapshot"
        verbose_name_plural = "health snapshots"
        ordering = ["-taken_at"]

    def __str__(self) -> str:
        return f"{self.kind} snapshot at {moments.text(self.taken_at)} ({self.outcome})"


#: Hours in a week: the buckets of a session's rhythm (Monday 00:00 UTC is bucket 0).
HOURS_PER_WEEK = 168
#: Weeks a rhythm remembers (one slot of 168 counters per calendar week, reused in turn).
RHYTHM_WEEKS = 4
#: Logins (creds rewrites) a rhythm remembers for the reconnect-loop detector.
RECENT_LOGINS = 12


class SessionRhythm(models.Model):
    """
    One session's writes per hour of the week over the last four weeks, learned by the refresh.

    A compact histogram, not a history: ``counts`` holds ``RHYTHM_WEEKS`` slots of 168
    counters, one slot per calendar week (``weeks`` says which week each slot holds; a slot is
    cleared when its week comes round again). Each refresh that sees a session's last write
    move adds one to the counter of that write's hour, so a counter counts the minutes with a
    write (the refresh runs every minute). The silence rule (``observability.rules``) reads
    the rate of each hour from it.

    Attributes:
        session_id: the session id (no foreign key: kept while the session is stored).
        observed_since: the first refresh that saw the session (hours before it are unknown).
        last_write: the last write counted (a write is counted once).
        weeks: the week number (days since 1970-01-05 // 7) each slot holds, -1 for none.
        counts: the slots' counters, slot after slot.
        recheck_at: when a history verdict of the session may change without any new write
            (a silence growing unlikely, a window passing): the refresh judges it again then.
        recent_logins: the refreshes that saw the creds rewritten without a pre-key save (a
            login), the last ``RECENT_LOGINS`` of them: the reconnect-loop detector reads
            them (the day's ``creds_rewritten`` change row only counts rewrites).

    """

    session_id = models.TextField(primary_key=True)
    observed_since = models.DateTimeField()
    last_write = models.DateTimeField(null=True, blank=True)
    weeks = ArrayField(models.IntegerField(), size=RHYTHM_WEEKS)
    counts = ArrayField(models.SmallIntegerField(), size=RHYTHM_WEEKS * HOURS_PER_WEEK)
    recheck_at = models.DateTimeField(null=True, blank=True, db_index=True)
    recent_logins = ArrayField(models.DateTimeField(), default=list, blank=True)

    class Meta:
        verbose_name = "session rhythm"
        verbose_name_plural = "session rhythms"

    def __str__(self) -> str:
        return f"rhythm of {self.session_id}"


class AlertDelivery(models.Model):
    """
    One session transition (to FAIL, or a recovery from it) and how it went out.

    The transition stream (``observability.alerts.dispatch_transitions``) writes one row per
    ``SessionChange`` status row it reads (``change_id`` is unique: a transition goes out
    once, whichever process reads it first). The webhook delivery
    (``observability.webhook``) records each attempt's outcome on it.

    Attributes:
        change_id: the ``SessionChange`` row of the transition.
        session_id, salon_id: whose transition.
        old_status, new_status: the transition.
        cause: the rule behind the FAIL (a recovery carries its FAIL's cause).
        at: when the snapshot saw it.
        payload: the JSON body sent (no secret, no full phone number).
        sentry: reported to Sentry.
        outcome: see :class:`Outcome`.
        attempts: webhook attempts made.
        next_attempt_at: when a pending delivery is tried (again).
        last_attempt_at, delivered_at: when it was last tried, when it was accepted.
        response_status: the HTTP status of the last attempt (None: no answer).
        error: why the last attempt failed.

    """

    class Outcome(models.TextChoices):
        PENDING = "pending", "pending"
        SENDING = "sending", "sending"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed (gave up)"
        SUPPRESSED = "suppressed", "suppressed (cooldown)"
        NO_WEBHOOK = "no_webhook", "no webhook configured"
        TOO_OLD = "too_old", "not sent (seen too long ago)"

    change_id = models.BigIntegerField(unique=True)
    session_id = models.TextField()
    salon_id = models.BigIntegerField(null=True, blank=True)
    old_status = models.CharField(max_length=4, blank=True, default="")
    new_status = models.CharField(max_length=4, blank=True, default="")
    cause = models.CharField(max_length=60, blank=True, default="")
    at = models.DateTimeField()
    payload = models.JSONField(default=dict, blank=True)
    sentry = models.BooleanField(default=False)
    outcome = models.CharField(max_length=12, choices=Outcome.choices, db_index=True)
    attempts = models.SmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    response_status = models.SmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "alert delivery"
        verbose_name_plural = "alert deliveries"
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.session_id} {self.old_status}→{self.new_status} ({self.outcome})"


class TableSizeSample(models.Model):
    """
    The size of one bot table or index at one moment: the history the insights page charts.

    Taken hourly by a django-q2 schedule (``observability.tasks.capture_table_sizes``) from
    the catalogue of the bot's database (``pg_table_size``, ``pg_relation_size``); kept for
    ``OBSERVABILITY_INSIGHTS_SIZE_RETENTION`` (90 days). Names and sizes only, never a row.

    Attributes:
        taken_at: when the sizes were read (one value for a whole capture).
        table: the bot table (``whatsapp_keys``, ...).
        relation: the table itself or one of its indexes.
        kind: ``table`` (heap and TOAST) or ``index``.
        bytes: its size on disk.

    """

    class Kind(models.TextChoices):
        TABLE = "table", "table"
        INDEX = "index", "index"

    taken_at = models.DateTimeField(db_index=True)
    table = models.CharField(max_length=128)
    relation = models.CharField(max_length=128)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    bytes = models.BigIntegerField()

    class Meta:
        verbose_name = "table size sample"
        verbose_name_plural = "table size samples"
        ordering = ["-taken_at", "table", "relation"]
        indexes = [models.Index(fields=["relation", "taken_at"], name="obs_tablesize_rel_taken")]

    def __str__(self) -> str:
        return f"{self.relation} {self.bytes} B at {moments.text(self.taken_at)}"
