"""
A simulator of the bot: many salons writing to the bot's tables as Baileys does, on a clock.

For the detection benchmark (``bench/bench_detection.py``) and the detectors' tests. Each salon
has its own traffic: opening hours in its own time zone, quiet nights, a busy, slow or quiet
profile, days busier or calmer than others. A message with a contact rewrites that contact's
``session`` row (``storeSession``); a new contact uses up a pre-key (``removePreKey``,
``src/Signal/libsignal.ts``) and gets a ``session`` row; a message that fails to decrypt makes
Baileys create one pre-key and save ``nextPreKeyId`` (``getNextPreKeys(authState, 1)``,
``src/Socket/messages-recv.ts``); a login rewrites the creds (``src/Socket/socket.ts``). Rows
carry the bot's ``expires_at`` rule. Failures are injected on a salon at a moment of the
simulated clock; nothing here reads the detectors.

Time is simulated: :meth:`Simulator.step` writes one minute of traffic stamped with the
simulated clock; the caller runs the real snapshot refresh with ``now`` set to it. The bot's
tables stamp ``updated_at = now()`` in a trigger; the simulator writes with triggers off
(:func:`simulated_clock`) and stamps the simulated moment itself, as the trigger would at
that moment.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connections

from observability import config, schema
from observability.models import SessionRhythm
from observability.snapshot import detect
from observability_demo import fakes

#: Failure types the simulator can inject.
LOGOUT = "logout"
RECONNECT_LOOP = "reconnect_loop"
CREDS_NOT_SAVED = "creds_not_saved"
DECRYPT_STORM = "decrypt_storm"
SILENT_BUSY = "silent_death_busy"
SILENT_QUIET = "silent_death_quiet"
FAILURES = (LOGOUT, RECONNECT_LOOP, CREDS_NOT_SAVED, DECRYPT_STORM, SILENT_BUSY, SILENT_QUIET)

#: Traffic profiles: messages per minute in the busiest opening hour.
PROFILES = {"busy": 0.45, "slow": 0.08, "quiet": 0.006}

#: Chance that a message comes from a contact never seen before (uses a pre-key).
NEW_CONTACT = 0.05
#: Chance that a message fails to decrypt twice in normal traffic (one pre-key created).
DECRYPT_FAILURE = 0.002
#: Logins a day in normal traffic (a bot restart, a network change).
LOGINS_PER_DAY = 1.0
#: Pre-keys stored at the start (what is left of the 812 of the first upload).
PRE_KEYS = 300
MINUTE = timedelta(minutes=1)


@dataclass
class Salon:
    """One simulated salon and what the bot has stored for it."""

    salon_id: int
    session_id: str
    profile: str
    utc_offset: int
    opens: int
    closes: int
    closed_on_sunday: bool
    rng: random.Random
    next_pre_key_id: int = 813
    pre_keys: list[int] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)
    day_factor: float = 1.0
    day_delay: float = 0.0
    day: int = -1
    failure: str | None = None
    failed_at: datetime | None = None
    first_trace: datetime | None = None
    #: When the failure's traces can first be told from normal traffic: a storm's
    #: ``DECRYPT_WARNING_COUNT``-th pre-key made one at a time (one alone also happens to a
    #: healthy salon); for the other failures, the first trace.
    telling_trace: datetime | None = None
    storm_moments: list[datetime] = field(default_factory=list)
    loop_until: datetime | None = None
    storm_until: datetime | None = None
    upload_at: datetime | None = None

    def rate(self, moment: datetime) -> float:
        """Messages per minute expected at ``moment`` (the day's mood included)."""
        local = moment + timedelta(hours=self.utc_offset)
        if local.weekday() == 6 and self.closed_on_sunday:
            return PROFILES[self.profile] * 0.02
        hour = local.hour + local.minute / 60 - self.day_delay
        if not self.opens <= hour < self.closes:
            return PROFILES[self.profile] * 0.01
        # Busiest at midday, calmer at opening and closing.
        middle = (self.opens + self.closes) / 2
        shape = 1 - 0.5 * ((hour - middle) / ((self.closes - self.opens) / 2)) ** 2
        return PROFILES[self.profile] * shape * self.day_factor

    def new_day(self, moment: datetime) -> None:
        """Draw the day's mood: busier or calmer, opening a little late or early."""
        day = (moment + timedelta(hours=self.utc_offset)).toordinal()
        if day != self.day:
            self.day = day
            self.day_factor = self.rng.lognormvariate(0, 0.35)
            self.day_delay = self.rng.uniform(-0.5, 0.75)

    def busy_hours(self, moment: datetime) -> bool:
        """Within the salon's busiest hours (the middle of its opening hours), on a weekday."""
        local = moment + timedelta(hours=self.utc_offset)
        middle = (self.opens + self.closes) / 2
        return local.weekday() < 5 and abs(local.hour + local.minute / 60 - middle) <= 3


@contextlib.contextmanager
def simulated_clock(alias: str = "bot"):
    """
    A cursor on the bot database whose writes keep the ``updated_at`` they are given.

    ``session_replication_role = replica`` skips the tables' ``update_updated_at_column``
    triggers (which would stamp the wall clock); needs a superuser, as the embedded server's.
    """
    with connections[alias].cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            yield cursor
        finally:
            cursor.execute("RESET session_replication_role")


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


class Simulator:
    """
    Many salons on one simulated clock, writing to the bot database through ``alias``.

    Args:
        salons: how many salons (their profiles cycle busy, slow, quiet, slow, busy, ...).
        start: the simulated moment the run starts at.
        seed: the random seed (same seed, same traffic).
        alias: the bot database alias.

    """

    def __init__(self, salons: int, start: datetime, *, seed: int = 1, alias: str = "bot") -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
        self.now = start
        self.alias = alias
        cycle = ("busy", "slow", "quiet", "slow", "busy", "slow")
        self.salons = [
            Salon(
                salon_id=700000 + n,
                session_id=f"company_{700000 + n}" if n % 2 else str(700000 + n),
                profile=cycle[n % len(cycle)],
                utc_offset=self.rng.choice((2, 3, 3, 3, 4, 5)),
                opens=self.rng.choice((8, 9, 9, 10)),
                closes=self.rng.choice((19, 20, 21, 21, 22)),
                closed_on_sunday=self.rng.random() < 0.4,
                rng=random.Random(f"{seed}-{n}"),  # noqa: S311
            )
            for n in range(salons)
        ]
        self._pending: dict[str, list] = {
            "keys": [],
            "deletes": [],
            "auth": [],
            "flags": [],
            "connects": [],
        }

    # --- Setup ------------------------------------------------------------------------------

    def create(self, *, history: timedelta = timedelta(weeks=4), tables: bool = True) -> None:
        """
        Write every salon's creds, pre-keys, contacts and ``companies`` row; learn its rhythm.

        The rhythm of the ``history`` before the start is learned from the same traffic model,
        minute by minute, through ``detect.count_write`` (what the refresh does once a minute),
        so a run need not replay four simulated weeks of refreshes. ``tables=False`` writes into
        the bot tables as they are (the tests' database has them).
        """
        if tables:
            schema.create_bot_tables(self.alias, replace=True)
        with simulated_clock(self.alias) as cursor:
            for salon in self.salons:
                rng = salon.rng
                phone = f"7901{salon.salon_id:07d}"
                creds = fakes.creds(
                    rng, phone=phone, name="Salon", next_pre_key_id=salon.next_pre_key_id
                )
                cursor.execute(
                    "INSERT INTO whatsapp_auth (company_id, creds, created_at, updated_at) "
                    "VALUES (%s, %s, %s, %s)",
                    [salon.session_id, json.dumps(creds), self.now - history, self.now - MINUTE],
                )
                cursor.execute(
                    "INSERT INTO companies (company_id, title, whatsapp_enabled, "
                    "whatsapp_connected, whatsapp_phone, whatsapp_connected_at, updated_at) "
                    "VALUES (%s, %s, true, true, %s, %s, %s)",
                    [
                        salon.salon_id,
                        f"Salon {salon.salon_id}",
                        phone,
                        _naive(self.now - timedelta(hours=rng.uniform(2, 30))),
                        _naive(self.now - history),
                    ],
                )
                salon.pre_keys = list(
                    range(salon.next_pre_key_id - PRE_KEYS, salon.next_pre_key_id)
                )
                rows = [
                    (salon.session_id, "pre-key", str(i), self.now - history)
                    for i in salon.pre_keys
                ]
                contacts = {"busy": 60, "slow": 25, "quiet": 8}[salon.profile]
                salon.contacts = [f"7902{rng.randrange(10**7):07d}.0" for _ in range(contacts)]
                rows += [
                    (salon.session_id, "session", c, self.now - timedelta(days=rng.uniform(0, 6)))
                    for c in salon.contacts
                ]
                self._insert_keys(cursor, rows)
        self._learn_history(history)

    def _learn_history(self, history: timedelta) -> None:
        rhythms = self.learned_rhythms(history)
        SessionRhythm.objects.all().delete()
        SessionRhythm.objects.bulk_create(rhythms, batch_size=500)

    def learned_rhythms(self, history: timedelta) -> list[SessionRhythm]:
        """Every salon's rhythm as the refresh would have learned it over ``history`` (unsaved)."""
        observed_since = self.now - history
        rhythms = []
        for salon in self.salons:
            rhythm = detect.new_rhythm(salon.session_id, observed_since)
            moment = observed_since
            while moment < self.now:
                salon.new_day(moment)
                mean = salon.rate(moment)
                # Minutes of this hour with at least one write.
                minutes = sum(1 for _ in range(60) if salon.rng.random() < 1 - math.exp(-mean))
                if minutes:
                    detect.count_write(rhythm, moment, minutes)
                moment += timedelta(hours=1)
            rhythm.last_write = self.now - MINUTE
            rhythms.append(rhythm)
        return rhythms

    # --- Traffic ----------------------------------------------------------------------------

    def step(self) -> None:
        """Write one simulated minute of every salon's traffic, then advance the clock."""
        for salon in self.salons:
            salon.new_day(self.now)
            self._salon_minute(salon)
        self._flush()
        self.now += MINUTE

    def _salon_minute(self, salon: Salon) -> None:
        rng, now = salon.rng, self.now
        if salon.failure in (LOGOUT, SILENT_BUSY, SILENT_QUIET):
            return
        at = lambda: now + timedelta(seconds=rng.uniform(0, 59))  # noqa: E731
        saves_creds = salon.failure != CREDS_NOT_SAVED
        messages = _poisson(rng, salon.rate(now))
        for _ in range(messages):
            moment = at()
            if rng.random() < NEW_CONTACT and salon.pre_keys:
                used = salon.pre_keys.pop(0)
                self._pending["deletes"].append((salon.session_id, str(used)))
                contact = f"7902{rng.randrange(10**7):07d}.0"
                salon.contacts.append(contact)
            else:
                contact = rng.choice(salon.contacts)
            self._pending["keys"].append((salon.session_id, "session", contact, moment))
            if rng.random() < DECRYPT_FAILURE:
                self._create_pre_keys(salon, 1, moment, saves_creds)
        if salon.failure == DECRYPT_STORM and now < salon.storm_until:
            for _ in range(_poisson(rng, 1.5)):
                moment = at()
                salon.storm_moments.append(moment)
                self._create_pre_keys(salon, 1, moment, saves_creds)
            moments = sorted(salon.storm_moments)
            if moments:
                salon.first_trace = moments[0]
                telling = config.decrypt_warning_count()
                if len(moments) >= telling:
                    salon.telling_trace = moments[telling - 1]
        if salon.failure == RECONNECT_LOOP and now < salon.loop_until:
            self._login(salon, at())
        elif rng.random() < LOGINS_PER_DAY / 1440:
            self._login(salon, at(), saves_creds)
        if salon.upload_at is not None and now >= salon.upload_at:
            # A login that finds few pre-keys on the server uploads MIN_PREKEY_COUNT more.
            salon.upload_at = None
            self._create_pre_keys(salon, 5, at(), saves_creds)

    def _create_pre_keys(self, salon: Salon, count: int, moment: datetime, saves: bool) -> None:
        ids = range(salon.next_pre_key_id, salon.next_pre_key_id + count)
        for key_id in ids:
            salon.pre_keys.append(key_id)
            self._pending["keys"].append((salon.session_id, "pre-key", str(key_id), moment))
        salon.next_pre_key_id += count
        if saves:
            self._pending["auth"].append((salon.session_id, moment, salon.next_pre_key_id))
        elif salon.first_trace is None:
            salon.first_trace = moment  # a pre-key stored above the saved nextPreKeyId

    def _login(self, salon: Salon, moment: datetime, saves: bool = True) -> None:
        # The bot records the connection.update close and open (src/Socket/socket.ts) in
        # companies.disconnected_at and whatsapp_connected_at.
        self._pending["connects"].append((salon.salon_id, moment))
        if saves:
            self._pending["auth"].append((salon.session_id, moment, None))
            if salon.failure == RECONNECT_LOOP and salon.first_trace is None:
                salon.first_trace = moment

    # --- Failures ---------------------------------------------------------------------------

    def inject(self, salon: Salon, failure: str) -> None:
        """Start ``failure`` on ``salon`` now (its first trace is recorded as it appears)."""
        salon.failure, salon.failed_at = failure, self.now
        rng = salon.rng
        if failure == LOGOUT:
            # The bot's connection.update handler records the logout.
            salon.first_trace = self.now
            self._pending["flags"].append((salon.salon_id, self.now))
        elif failure == RECONNECT_LOOP:
            salon.loop_until = self.now + timedelta(hours=2)
        elif failure == CREDS_NOT_SAVED:
            salon.upload_at = self.now + timedelta(minutes=rng.uniform(0, 60))
        elif failure == DECRYPT_STORM:
            salon.storm_until = self.now + timedelta(minutes=30)
        # Silent deaths leave no trace at all: the salon simply stops writing.

    # --- Writing ------------------------------------------------------------------------------

    def _flush(self) -> None:
        pending = self._pending
        with simulated_clock(self.alias) as cursor:
            if pending["keys"]:
                self._insert_keys(cursor, pending["keys"])
            if pending["deletes"]:
                cursor.executemany(
                    "DELETE FROM whatsapp_keys WHERE company_id = %s AND key_type = 'pre-key' "
                    "AND key_id = %s",
                    pending["deletes"],
                )
            for session_id, moment, next_id in pending["auth"]:
                if next_id is None:
                    cursor.execute(
                        "UPDATE whatsapp_auth SET updated_at = %s WHERE company_id = %s",
                        [moment, session_id],
                    )
                else:
                    cursor.execute(
                        "UPDATE whatsapp_auth SET updated_at = %s, "
                        "creds = jsonb_set(jsonb_set(creds, '{nextPreKeyId}', to_jsonb(%s::int)),"
                        " '{firstUnuploadedPreKeyId}', to_jsonb(%s::int)) WHERE company_id = %s",
                        [moment, next_id, next_id, session_id],
                    )
            for salon_id, moment in pending["connects"]:
                cursor.execute(
                    "UPDATE companies SET whatsapp_connected = true, disconnected_at = %s, "
                    "whatsapp_connected_at = %s, updated_at = %s WHERE company_id = %s",
                    [moment - timedelta(seconds=1), _naive(moment), _naive(moment), salon_id],
                )
            for salon_id, moment in pending["flags"]:
                cursor.execute(
                    "UPDATE companies SET whatsapp_connected = false, disconnected_at = %s, "
                    "updated_at = %s WHERE company_id = %s",
                    [moment, _naive(moment), salon_id],
                )
        for rows in pending.values():
            rows.clear()

    def _insert_keys(self, cursor, rows: list[tuple]) -> None:
        cursor.executemany(
            "INSERT INTO whatsapp_keys AS k (company_id, key_type, key_id, value, created_at, "
            "updated_at, expires_at) VALUES (%s, %s, %s, '{}'::jsonb, %s, %s, %s) "
            "ON CONFLICT (company_id, key_type, key_id) DO UPDATE SET "
            "updated_at = greatest(k.updated_at, excluded.updated_at), "
            "expires_at = greatest(k.expires_at, excluded.expires_at)",
            [
                (sid, kind, key_id, at, at, at + timedelta(days=7))
                for sid, kind, key_id, at in rows
            ],
        )


def _naive(moment: datetime) -> datetime:
    """A moment as the bot's ``timestamp without time zone`` columns hold it (UTC)."""
    return (
        moment.replace(tzinfo=None)
        if moment.utcoffset() is None
        else (moment - moment.utcoffset()).replace(tzinfo=None)
    )
