"""
Deterministic, realistic demo data for the bot's four tables, written with COPY.

The demo and the tests need a bot database that looks like production: salons with Russian
titles and addresses, their clients with Russian names and phones (normalized and as typed),
and WhatsApp sessions in every state ops must recognise (healthy, stale, dead, suspicious, one
salon stored under both spellings, keys without an auth row, a session that never finished
pairing). Every value comes from a ``random.Random`` seeded per row group, so one seed (and one
reference time) always gives the same rows. Large sets (1,000 sessions, 1,000,000 keys, 100,000
clients) are streamed through PostgreSQL's COPY, not saved row by row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from django.db import connections, transaction
from django.utils import timezone

from observability import config, schema, session_ids
from observability.exceptions import BadInput, translate_database_errors
from observability_demo import fakes

logger = logging.getLogger(__name__)

#: Salon ids are six-digit numbers, as in production; this leaves room for every one.
MAX_SESSIONS = 100_000
#: Upper bounds on --keys and --clients: the rows are generated in memory before the COPY, so
#: a mistyped size must be refused, not exhaust the machine (the large set is 1,000,000 keys).
MAX_KEYS = 20_000_000
MAX_CLIENTS = 10_000_000
#: The salon every demo shows twice: once as ``962302`` and once as ``company_962302``.
DUPLICATE_SALON_ID = 962302


class SessionState(StrEnum):
    """The situations a demo session is built to show: healthy, or one failure mode each."""

    HEALTHY = "healthy"  # paired weeks ago (QR or pairing code, v7 or v6), active today
    DUPLICATE = "duplicate"  # company_962302: its creds and keys were copied under 962302
    DUPLICATE_COPY = "duplicate_copy"  # 962302: the copy (one login in two places)
    STALE = "stale"  # nothing written for 30 hours: quiet, or disconnected
    DEAD = "dead"  # nothing written for 3 days; the bot recorded the disconnect
    BOT_FLAG_STALE = "bot_flag_stale"  # writes today, but companies.whatsapp_connected false
    NOT_PAIRED = "not_paired"  # creds from initAuthCreds: the phone never confirmed pairing
    WRONG_NUMBER = "wrong_number"  # logged in as another number than companies.whatsapp_phone
    CREDS_BEHIND_KEYS = "creds_behind_keys"  # the creds save of the last pre-key upload lost
    NO_PRE_KEYS = "no_pre_keys"  # every pre-key deleted (the old age-based cleanup)
    FEW_PRE_KEYS = "few_pre_keys"  # three pre-keys left
    APP_STATE_KEY_MISSING = "app_state_key_missing"  # app-state-sync-keys deleted for their age
    ORPHAN_KEYS = "orphan_keys"  # keys whose session has no whatsapp_auth row


#: The rule of ``observability.rules`` each non-healthy state is built to trigger.
EXPECTED_RULES = {
    SessionState.DUPLICATE: "one_login_twice",
    SessionState.DUPLICATE_COPY: "one_login_twice",
    SessionState.STALE: "silence",
    SessionState.DEAD: "bot_flags",
    SessionState.BOT_FLAG_STALE: "bot_flags",
    SessionState.NOT_PAIRED: "not_paired",
    SessionState.WRONG_NUMBER: "wrong_number",
    SessionState.CREDS_BEHIND_KEYS: "creds_behind_keys",
    SessionState.NO_PRE_KEYS: "pre_key_pool",
    SessionState.FEW_PRE_KEYS: "pre_key_pool",
    SessionState.APP_STATE_KEY_MISSING: "app_state_key_missing",
    SessionState.ORPHAN_KEYS: "orphan_keys",
}

#: How long before the reference time each state's life (its last key write) ended.
LIFE_ENDS_AGO = {
    SessionState.STALE: timedelta(hours=30),
    SessionState.DEAD: timedelta(days=3),
    SessionState.ORPHAN_KEYS: timedelta(days=5),
}

#: The fixed cast: one session per state, in this order (company_962302 is the first).
_CAST = (
    SessionState.DUPLICATE,
    SessionState.DUPLICATE_COPY,
    SessionState.STALE,
    SessionState.DEAD,
    SessionState.BOT_FLAG_STALE,
    SessionState.NOT_PAIRED,
    SessionState.WRONG_NUMBER,
    SessionState.CREDS_BEHIND_KEYS,
    SessionState.NO_PRE_KEYS,
    SessionState.FEW_PRE_KEYS,
    SessionState.APP_STATE_KEY_MISSING,
    SessionState.ORPHAN_KEYS,
    SessionState.HEALTHY,
)
#: Beyond the cast, the share of sessions given each non-healthy state.
_EXTRA_SHARE = {
    SessionState.STALE: 0.04,
    SessionState.DEAD: 0.02,
    SessionState.NOT_PAIRED: 0.01,
    SessionState.ORPHAN_KEYS: 0.01,
    SessionState.WRONG_NUMBER: 0.005,
    SessionState.APP_STATE_KEY_MISSING: 0.005,
}
#: Share of healthy sessions on Baileys v6 (30 pre-keys at pairing, topped up by fives) and
#: paired with a pairing code (``registered: true``); the rest are v7 and QR-paired.
_V6_SHARE = 0.15
_PAIRING_CODE_SHARE = 0.25
#: Pre-keys left to a FEW_PRE_KEYS session (below Baileys' MIN_PREKEY_COUNT, 5).
_FEW_PRE_KEYS = 3


@dataclass(frozen=True, slots=True)
class DemoSize:
    """
    How much demo data to write.

    Attributes:
        sessions: WhatsApp session ids (auth rows plus the orphan keys' session).
        keys: rows in ``whatsapp_keys``.
        clients: rows in ``clients``.

    """

    sessions: int
    keys: int
    clients: int

    def validate(self) -> None:
        """
        Refuse sizes that cannot show every state.

        Raises:
            BadInput: a negative number, or too few sessions or keys for the fixed cast.

        """
        for name in ("sessions", "keys", "clients"):
            if getattr(self, name) < 0:
                raise BadInput(f"--{name} must be zero or more, not {getattr(self, name)}.")
        if self.sessions > MAX_SESSIONS:
            raise BadInput(
                f"--sessions must be at most {MAX_SESSIONS:,} (six-digit salon ids), "
                f"not {self.sessions:,}."
            )
        for name, limit in (("keys", MAX_KEYS), ("clients", MAX_CLIENTS)):
            if getattr(self, name) > limit:
                raise BadInput(f"--{name} must be at most {limit:,}, not {getattr(self, name):,}.")
        if self.sessions < len(_CAST):
            raise BadInput(
                f"--sessions must be at least {len(_CAST)} so every session state appears "
                f"(got {self.sessions})."
            )
        needed = minimum_keys(self.sessions)
        if self.keys < needed:
            raise BadInput(
                f"--keys must be at least {needed} for {self.sessions} sessions (got {self.keys})."
            )


#: Named sizes for ``seed_demo_data --size``. A v7 session holds about a thousand keys (812
#: pre-keys at pairing), so the small set has 40 of them in 40,000 keys.
SIZES = {
    "small": DemoSize(sessions=40, keys=40_000, clients=1_500),
    "large": DemoSize(sessions=1_000, keys=1_000_000, clients=100_000),
}


@dataclass(slots=True)
class SessionPlan:
    """
    One demo session: who it is, what state it shows, its life and its key counts.

    Attributes:
        session_id: the id stored in ``company_id`` (either spelling).
        salon_id: the salon number.
        state: the situation it shows.
        key_counts: keys per key type (exactly what :func:`key_rows` writes).
        life: the Baileys life its keys follow (None: no keys at all).
        phone: the number it is logged in as (``creds.me.id``).
        pairing_code: paired with a pairing code (``registered: true``), else by QR.
        copy_of: the session whose creds and keys this one copies (the duplicate).

    """

    session_id: str
    salon_id: int
    state: SessionState
    key_counts: dict[str, int] = field(default_factory=dict)
    life: fakes.Lifecycle | None = None
    phone: str = ""
    pairing_code: bool = False
    copy_of: str | None = None

    @property
    def has_auth(self) -> bool:
        """Whether a ``whatsapp_auth`` row exists for it."""
        return self.state is not SessionState.ORPHAN_KEYS

    @property
    def source(self) -> str:
        """The session id whose random streams give this session's creds and keys."""
        return self.copy_of or self.session_id

    @property
    def life_ends_ago(self) -> timedelta:
        """How long before the reference time its last key was written."""
        return LIFE_ENDS_AGO.get(self.state, timedelta(0))


@dataclass(slots=True)
class DemoPlan:
    """
    Everything the rows are derived from: sessions, salons, sizes, seed and reference time.

    Attributes:
        seed: the seed every random stream derives from.
        now: the reference time ("written today" is relative to it).
        size: the requested size.
        sessions: the sessions in order.
        salon_ids: every salon (with and without a session), in order.

    """

    seed: int
    now: datetime
    size: DemoSize
    sessions: list[SessionPlan]
    salon_ids: list[int]


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """
    What a seeding run did.

    Attributes:
        companies, clients, sessions, keys: rows written (0 when skipped).
        seconds: wall time of the run.
        skipped: True when ``if_empty`` found data and wrote nothing.

    """

    companies: int = 0
    clients: int = 0
    sessions: int = 0
    keys: int = 0
    seconds: float = 0.0
    skipped: bool = False


def session_states(sessions: int) -> list[SessionState]:
    """The state of each of ``sessions`` sessions: the cast first, then shares, then healthy."""
    extra = max(sessions - len(_CAST), 0)
    states = list(_CAST)
    for state, share in _EXTRA_SHARE.items():
        states += [state] * int(extra * share)
    return states + [SessionState.HEALTHY] * (sessions - len(states))


def _cast_life(state: SessionState, version: int) -> fakes.Lifecycle | None:
    """The life of a non-healthy session: small and fixed, it shows a situation."""
    if state is SessionState.NOT_PAIRED:
        return None
    contacts = 20 if version >= 7 else 6
    return fakes.Lifecycle(
        paired_days_ago=30,
        version=version,
        contacts=contacts,
        new_contacts=contacts * 3 // 4,
        active_today=2,
        groups=1,
        group_members=2,
        app_state_keys=2,
    )


def _counts(state: SessionState, life: fakes.Lifecycle | None) -> dict[str, int]:
    """The rows of each type a session in ``state`` living ``life`` has (see key_rows)."""
    if life is None:
        return {}
    counts = life.key_counts()
    if state is SessionState.NO_PRE_KEYS:
        counts.pop("pre-key", None)
    elif state is SessionState.FEW_PRE_KEYS:
        counts["pre-key"] = min(counts.get("pre-key", 0), _FEW_PRE_KEYS)
    elif state is SessionState.APP_STATE_KEY_MISSING:
        counts.pop("app-state-sync-key", None)
    return counts


def _cast_keys(states: list[SessionState], version: int) -> int:
    return sum(
        sum(_counts(state, _cast_life(state, version)).values())
        for state in states
        if state is not SessionState.HEALTHY
    )


def _healthy_life(version: int, budget: int, rng: random.Random) -> fakes.Lifecycle:
    """
    A healthy session's life holding exactly ``budget`` keys.

    Contacts are added while they fit; what is left becomes contacts' second devices (a
    ``session`` row, and an ``identity-key`` row on v7) and, for an odd key, a ``tctoken``.
    """
    base = {
        "paired_days_ago": rng.uniform(8, 120),
        "version": version,
        "active_today": 0,
        "groups": rng.randint(1, 3),
        "group_members": 2,
        "app_state_keys": rng.randint(1, 4),
    }

    def life(contacts: int, extra: int = 0, tctokens: int = 1) -> fakes.Lifecycle:
        return fakes.Lifecycle(
            **{**base, "active_today": min(contacts, 1 + contacts // 8), "tctokens": tctokens},
            contacts=contacts,
            new_contacts=contacts * 7 // 10,
            extra_devices=extra,
        )

    per_contact = 5 if version >= 7 else 4
    contacts = max(1, (budget - life(1).key_count()) // per_contact)
    while contacts > 1 and life(contacts).key_count() > budget:
        contacts -= 1
    while life(contacts + 1).key_count() <= budget:
        contacts += 1
    left = budget - life(contacts).key_count()
    per_device = 2 if version >= 7 else 1
    # An odd key left on v7 (a device is two rows there) becomes a second tctoken.
    result = life(contacts, extra=left // per_device, tctokens=1 + left % per_device)
    if result.key_count() != budget:  # pragma: no cover - the arithmetic above is exact
        raise AssertionError(f"healthy life holds {result.key_count()} keys, not {budget}")
    return result


def _healthy_minimum() -> int:
    """The fewest keys a healthy session can hold: v6, one contact, the most groups and keys."""
    return fakes.Lifecycle(
        version=6,
        contacts=1,
        new_contacts=0,
        active_today=1,
        groups=3,
        group_members=2,
        app_state_keys=4,
        tctokens=1,
    ).key_count()


#: A healthy session on v7 needs its 812 pre-keys and a few contacts.
_V7_MINIMUM = 900


def minimum_keys(sessions: int) -> int:
    """The fewest keys that let ``sessions`` sessions show their states."""
    states = session_states(sessions)
    healthy = sum(1 for state in states if state is SessionState.HEALTHY)
    return _cast_keys(states, 6) + healthy * _healthy_minimum()


def _rng(seed: int, *parts: object) -> random.Random:
    # String seeds are hashed with SHA-512 by random.Random: stable across runs and platforms.
    return random.Random(":".join([str(seed), *map(str, parts)]))  # noqa: S311 (demo, not crypto)


# --- The plan ---------------------------------------------------------------------------------


def _split(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (exact sum)."""
    weight_sum = sum(weights) or 1.0
    parts = [int(total * weight / weight_sum) for weight in weights]
    parts[-1] += total - sum(parts)
    return parts


def build_plan(size: DemoSize, *, seed: int = 1, now: datetime | None = None) -> DemoPlan:
    """
    Decide every session, salon, life and key count (no database access).

    Args:
        size: how much data; validated here.
        seed: the seed every random choice derives from.
        now: the reference time; defaults to the current time.

    Returns:
        The plan the row generators read.

    Raises:
        BadInput: the size cannot show every state.

    """
    size.validate()
    now = now or timezone.now()
    rng = _rng(seed, "plan")
    states = session_states(size.sessions)

    # One salon per session, except the duplicate pair which shares DUPLICATE_SALON_ID; a
    # tenth more salons have no WhatsApp at all.
    salon_count = size.sessions - 1 + max(size.sessions // 10, 1)
    pool = rng.sample(range(100_000, 999_999), salon_count + 1)
    salon_numbers = [number for number in pool if number != DUPLICATE_SALON_ID][: salon_count - 1]
    salon_ids = [DUPLICATE_SALON_ID, *salon_numbers]

    # The cast lives on v7 (812 pre-keys) when the keys allow, else on v6 (30).
    healthy_count = sum(1 for state in states if state is SessionState.HEALTHY)
    cast_version = 7
    if size.keys - _cast_keys(states, 7) < healthy_count * _healthy_minimum():
        cast_version = 6

    sessions: list[SessionPlan] = []
    others = iter(salon_numbers)
    phones: set[str] = set()
    for state in states:
        if state is SessionState.DUPLICATE:
            session_id, salon_id = session_ids.prefixed(DUPLICATE_SALON_ID), DUPLICATE_SALON_ID
        elif state is SessionState.DUPLICATE_COPY:
            session_id, salon_id = session_ids.bare(DUPLICATE_SALON_ID), DUPLICATE_SALON_ID
        else:
            salon_id = next(others)
            spell = session_ids.prefixed if rng.random() < 0.6 else session_ids.bare
            session_id = spell(salon_id)
        phone = fakes.contact_phone(rng)
        while phone in phones:
            phone = fakes.contact_phone(rng)
        phones.add(phone)
        plan = SessionPlan(session_id=session_id, salon_id=salon_id, state=state, phone=phone)
        if state is SessionState.DUPLICATE_COPY:
            original = sessions[0]
            plan.copy_of, plan.phone = original.session_id, original.phone
        if state is not SessionState.HEALTHY:
            plan.life = _cast_life(state, cast_version)
            plan.key_counts = _counts(state, plan.life)
        sessions.append(plan)

    _fill_healthy_sessions(sessions, size.keys, rng)
    return DemoPlan(seed=seed, now=now, size=size, sessions=sessions, salon_ids=salon_ids)


def _fill_healthy_sessions(sessions: list[SessionPlan], keys: int, rng: random.Random) -> None:
    """Give healthy sessions the keys left after the cast's, so the total is exact."""
    healthy = [plan for plan in sessions if plan.state is SessionState.HEALTHY]
    fixed = sum(sum(plan.key_counts.values()) for plan in sessions)
    minimum = _healthy_minimum()
    # DemoSize.validate() made sure every healthy session gets at least its minimum.
    spare = keys - fixed - minimum * len(healthy)
    weights = [rng.uniform(0.9, 1.1) for _ in healthy]
    for plan, part in zip(healthy, _split(spare, weights), strict=True):
        budget = minimum + part
        v7 = budget >= _V7_MINIMUM and rng.random() >= _V6_SHARE
        plan.pairing_code = rng.random() < _PAIRING_CODE_SHARE
        plan.life = _healthy_life(7 if v7 else 6, budget, rng)
        plan.key_counts = plan.life.key_counts()


# --- Rows -------------------------------------------------------------------------------------

# fmt: off
_FIRST_NAMES_F = (
    "Анна", "Мария", "Елена", "Ольга", "Наталья", "Екатерина", "Татьяна", "Ирина", "Светлана",
    "Юлия", "Анастасия", "Дарья", "Ксения", "Алина", "Виктория", "Полина", "Марина", "Софья",
    "Вероника", "Кристина",
)
_FIRST_NAMES_M = (
    "Александр", "Дмитрий", "Сергей", "Андрей", "Алексей", "Максим", "Иван", "Михаил",
    "Николай", "Павел", "Артём", "Егор", "Роман", "Владимир", "Кирилл",
)
_SURNAMES = (
    "Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов",
    "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров",
    "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин",
    "Захаров", "Зайцев", "Соловьёв", "Борисов", "Яковлев", "Григорьев",
)
_SALON_KINDS = (
    "Салон красоты", "Студия маникюра", "Барбершоп", "Парикмахерская", "Студия красоты",
    "Ногтевая студия", "СПА-салон", "Студия бровей", "Косметология",
)
_SALON_NAMES = (
    "Лотос", "Шарм", "Элегия", "Бархат", "Грация", "Мираж", "Орхидея", "Вдохновение", "Нюанс",
    "Аврора", "Жемчужина", "Лилия", "Астра", "Престиж", "Мята", "Белый кролик", "Борода",
    "Ножницы", "Локон", "Фея",
)
# fmt: on
_CITIES = (
    ("Москва", "Europe/Moscow", 55.7558, 37.6173),
    ("Санкт-Петербург", "Europe/Moscow", 59.9343, 30.3351),
    ("Казань", "Europe/Moscow", 55.7963, 49.1088),
    ("Екатеринбург", "Asia/Yekaterinburg", 56.8389, 60.6057),
    ("Новосибирск", "Asia/Novosibirsk", 55.0084, 82.9357),
    ("Краснодар", "Europe/Moscow", 45.0355, 38.9753),
    ("Нижний Новгород", "Europe/Moscow", 56.2965, 43.9361),
    ("Самара", "Europe/Samara", 53.1959, 50.1002),
)
# fmt: off
_STREETS = (
    "ул. Ленина", "ул. Тверская", "пр-т Мира", "ул. Пушкина", "ул. Гагарина", "Невский пр-т",
    "ул. Советская", "ул. Садовая", "ул. Лесная", "Ленинградский пр-т", "ул. Баумана",
)
_SERVICES = (
    (1, "Стрижка женская", 2500), (2, "Стрижка мужская", 1500), (3, "Окрашивание волос", 6500),
    (4, "Маникюр с покрытием", 2200), (5, "Педикюр", 2800), (6, "Коррекция бровей", 900),
    (7, "Укладка", 1800), (8, "Чистка лица", 3500), (9, "Массаж лица", 2000),
    (10, "Наращивание ресниц", 3200),
)
# fmt: on
_TAGS = ("постоянный", "vip", "новый", "по записи в WhatsApp", "скидка 10%", "день рождения")
_SOURCES = ("yclients", "whatsapp", "instagram", "сайт", "звонок")


def raw_phone_spelling(rng: random.Random, normalized: str) -> str | None:
    """The phone as a customer might have typed it (``+7 (900) 123-45-67``, ``8 900 ...``)."""
    d = normalized[1:]  # ten digits after the country code
    choice = rng.random()
    if choice < 0.3:
        return f"+7 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}"
    if choice < 0.5:
        return f"8 {d[:3]} {d[3:6]} {d[6:8]} {d[8:]}"
    if choice < 0.65:
        return f"8{d}"
    if choice < 0.8:
        return f"+7{d}"
    if choice < 0.9:
        return f"8 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}"
    return None


def _naive(moment: datetime) -> datetime:
    """The bot's ``timestamp`` columns hold naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class _WhatsAppColumns:
    """The bot's own WhatsApp columns of a salon's ``companies`` row."""

    connected: bool | None
    phone: str | None
    connected_at: datetime | None
    disconnected_at: datetime | None


def _typed(rng: random.Random, phone: str) -> str:
    """The salon's number as its owner typed it into the bot (normalizes to ``phone``)."""
    d = phone[1:]
    return rng.choice(
        (
            phone,
            f"+{phone}",
            f"+7 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}",
            f"8 {d[:3]} {d[3:6]} {d[6:]}",
        )
    )


def _whatsapp_columns(
    plan: DemoPlan, session: SessionPlan | None, rng: random.Random
) -> _WhatsAppColumns:
    """
    What the bot wrote about the salon's connection, agreeing with the session's state.

    A healthy salon is connected with its own number; some had a disconnect before they paired
    (an old ``disconnected_at`` is no signal). The DEAD salon's disconnect comes after its
    last write, BOT_FLAG_STALE's flag says disconnected although it writes, WRONG_NUMBER's
    ``whatsapp_phone`` is another number, and a salon that never finished pairing has none.
    """
    if session is None:
        return _WhatsAppColumns(False, None, None, None)
    state = session.state
    if state is SessionState.NOT_PAIRED:
        return _WhatsAppColumns(False, None, None, None)
    ended = plan.now - session.life_ends_ago
    paired_at = ended - timedelta(days=session.life.paired_days_ago if session.life else 30)
    phone = _typed(rng, session.phone)
    if state is SessionState.WRONG_NUMBER:
        other = fakes.contact_phone(rng)
        while other == session.phone:
            other = fakes.contact_phone(rng)
        phone = _typed(rng, other)
    disconnected_at = None
    if state in (SessionState.DEAD, SessionState.ORPHAN_KEYS):
        disconnected_at = ended + timedelta(minutes=10)
    elif state is SessionState.BOT_FLAG_STALE or rng.random() < 0.3:
        disconnected_at = paired_at - timedelta(days=rng.randint(2, 60))
    connected = state not in (
        SessionState.DEAD,
        SessionState.ORPHAN_KEYS,
        SessionState.BOT_FLAG_STALE,
    )
    return _WhatsAppColumns(connected, phone, paired_at, disconnected_at)


def _company_row(plan: DemoPlan, salon_id: int, session: SessionPlan | None) -> tuple:
    rng = _rng(plan.seed, "company", salon_id)
    city, tz_name, lat, lon = rng.choice(_CITIES)
    name = rng.choice(_SALON_NAMES)
    title = f"{rng.choice(_SALON_KINDS)} «{name}»"
    created = plan.now - timedelta(days=rng.randint(60, 900))
    phone = fakes.contact_phone(rng)
    whatsapp = _whatsapp_columns(plan, session, rng)
    owner_first = rng.choice(_FIRST_NAMES_F)
    return (
        salon_id,
        salon_id + 1_000_000 if rng.random() < 0.9 else None,
        title,
        f"г. {city}, {rng.choice(_STREETS)}, д. {rng.randint(1, 150)}",
        phone,
        f"salon{salon_id}@example.ru",
        f"https://salon{salon_id}.example.ru" if rng.random() < 0.6 else None,
        tz_name,
        rng.choice(("Пн–Вс 10:00–21:00", "Пн–Сб 09:00–20:00", "Ежедневно 10:00–22:00")),
        Decimal(f"{lat + rng.uniform(-0.1, 0.1):.6f}"),
        Decimal(f"{lon + rng.uniform(-0.1, 0.1):.6f}"),
        "RUB",
        rng.random() < 0.5,
        True,
        _naive(created),
        _naive(plan.now - timedelta(hours=rng.randint(1, 72))),
        _naive(plan.now - timedelta(minutes=rng.randint(5, 600))),
        _json({"id": salon_id, "title": title, "city": city, "country": "Россия"}),
        session is not None,
        _json({"provider": "baileys", "session": session.session_id}) if session else None,
        whatsapp.connected,
        whatsapp.phone,
        _naive(whatsapp.connected_at) if whatsapp.connected_at else None,
        "active" if session is not None else "inactive",
        _naive(created),
        str(rng.randint(100_000, 999_999)),
        f"{owner_first} {rng.choice(_SURNAMES)}а",
        f"owner{salon_id}@example.ru",
        fakes.contact_phone(rng),
        _json({"status": "connected" if whatsapp.connected else "pairing"}) if session else None,
        "sk_live_" + rng.randbytes(16).hex(),  # secrets: random, never shown
        "whsec_" + rng.randbytes(20).hex(),
        _naive(plan.now - timedelta(days=rng.randint(1, 40))),
        plan.now + timedelta(days=rng.randint(-20, 200)),
        True,
        rng.random() < 0.2,
        [name.upper()[:11]] if rng.random() < 0.3 else None,
        whatsapp.disconnected_at,
        "active" if rng.random() < 0.85 else rng.choice(("trial", "suspended")),
        rng.random() < 0.1,
        None,
    )


# fmt: off
_COMPANY_COLUMNS = (
    "company_id", "yclients_id", "title", "address", "phone", "email", "website", "timezone",
    "working_hours", "coordinate_lat", "coordinate_lon", "currency", "ai_enabled",
    "sync_enabled", "created_at", "updated_at", "last_sync_at", "raw_data", "whatsapp_enabled",
    "whatsapp_config", "whatsapp_connected", "whatsapp_phone", "whatsapp_connected_at",
    "integration_status", "connected_at", "marketplace_user_id", "marketplace_user_name",
    "marketplace_user_email", "marketplace_user_phone", "whatsapp_session_data", "api_key",
    "webhook_secret", "last_payment_date", "subscription_expires_at",
    "whatsapp_channel_enabled", "sms_channel_enabled", "sms_short_names", "disconnected_at",
    "status", "telegram_enabled", "telegram_premium_until",
)
# fmt: on


def company_rows(plan: DemoPlan) -> Iterator[tuple]:
    """Rows for ``companies`` (``_COMPANY_COLUMNS`` order), one per salon."""
    by_salon: dict[int, SessionPlan] = {}
    for session in plan.sessions:
        by_salon.setdefault(session.salon_id, session)
    for salon_id in plan.salon_ids:
        yield _company_row(plan, salon_id, by_salon.get(salon_id))


# fmt: off
_CLIENT_COLUMNS = (
    "yclients_id", "name", "phone", "raw_phone", "email", "discount", "company_id",
    "branch_ids", "tags", "status", "source", "created_at", "updated_at", "visit_count",
    "total_spent", "first_visit_date", "last_visit_date", "last_services", "visit_history",
    "preferences", "last_sync_at", "loyalty_level", "client_segment", "average_bill",
    "last_service_ids", "favorite_staff_ids", "preferred_time_slots", "blacklisted", "notes",
    "created_by_ai", "last_ai_interaction", "ai_context", "ai_messages_count",
    "ai_satisfaction_score", "services_amount", "goods_amount", "goods_purchases", "goods_count",
)
# fmt: on


def _client_salons(plan: DemoPlan) -> list[int]:
    """Which salon each client belongs to: 962302 has about 1,300, the rest spread out."""
    rng = _rng(plan.seed, "client-salons")
    total = plan.size.clients
    main = min(1_300, total // 3)
    others = plan.salon_ids[1:]
    weights = [rng.uniform(0.2, 2.0) for _ in others]
    return [DUPLICATE_SALON_ID] * main + rng.choices(others, weights, k=total - main)


def client_rows(plan: DemoPlan) -> Iterator[tuple]:
    """Rows for ``clients`` (``_CLIENT_COLUMNS`` order)."""
    rng = _rng(plan.seed, "clients")
    today = plan.now.date()
    yclients_id = 120_000_000
    for salon_id in _client_salons(plan):
        yclients_id += rng.randint(1, 3)
        female = rng.random() < 0.75
        first = rng.choice(_FIRST_NAMES_F if female else _FIRST_NAMES_M)
        surname = rng.choice(_SURNAMES) + ("а" if female else "")
        name = f"{first} {surname}" if rng.random() < 0.85 else first
        phone = fakes.contact_phone(rng)
        visits = rng.choices((0, 1, 2, 5, 12, 30), (5, 30, 25, 20, 15, 5))[0]
        created = plan.now - timedelta(days=rng.randint(1, 1_000))
        services = rng.sample(_SERVICES, k=min(max(visits, 1), 3)) if visits else []
        spent = sum(price for _, _, price in services) * max(visits, 0)
        first_visit = (created + timedelta(days=rng.randint(0, 10))).date() if visits else None
        last_visit = (
            min(today, first_visit + timedelta(days=rng.randint(0, 400))) if first_visit else None
        )
        history = (
            [
                {"date": last_visit.isoformat(), "service": title, "amount": price}
                for _, title, price in services
            ]
            if last_visit
            else None
        )
        by_ai = rng.random() < 0.1
        ai_messages = rng.randint(1, 40) if by_ai or rng.random() < 0.2 else 0
        yield (
            yclients_id,
            name,
            phone,
            raw_phone_spelling(rng, phone),
            f"{phone[-6:]}@example.ru" if rng.random() < 0.3 else None,
            rng.choice((Decimal(0), Decimal(0), Decimal(5), Decimal(10))),
            salon_id,
            [salon_id],
            rng.sample(_TAGS, k=rng.randint(0, 2)) or None,
            "active" if rng.random() < 0.95 else "archived",
            rng.choice(_SOURCES),
            _naive(created),
            _naive(plan.now - timedelta(days=rng.randint(0, 30))),
            visits,
            Decimal(spent),
            first_visit,
            last_visit,
            [title for _, title, _ in services] or None,
            _json(history) if history else None,
            _json({"master": rng.choice(_FIRST_NAMES_F), "reminders": rng.random() < 0.8}),
            _naive(plan.now - timedelta(hours=rng.randint(1, 48))),
            rng.choice(("bronze", "silver", "gold")) if visits > 1 else None,
            ("vip" if visits >= 12 else "regular") if visits > 1 else "new",
            Decimal(spent // visits) if visits else None,
            [service_id for service_id, _, _ in services] or None,
            [rng.randint(1, 20)] if visits else None,
            rng.sample(("утро", "день", "вечер", "выходные"), k=rng.randint(0, 2)) or None,
            rng.random() < 0.01,
            "Аллергия на аммиак" if rng.random() < 0.02 else None,
            by_ai,
            _naive(plan.now - timedelta(days=rng.randint(0, 60))) if ai_messages else None,
            _json({"last_intent": "booking", "language": "ru"}) if ai_messages else None,
            ai_messages,
            Decimal(rng.randint(30, 50)) / 10 if ai_messages else None,
            Decimal(spent),
            Decimal(0),
            None,
            0,
        )


_AUTH_COLUMNS = ("company_id", "creds", "created_at", "updated_at")


def _app_state_key_ids(plan: DemoPlan, session: SessionPlan) -> list[str]:
    """The session's app-state key ids, oldest first (the last is ``myAppStateKeyId``)."""
    if session.life is None:
        return []
    rng = _rng(plan.seed, "app-keys", session.source)
    ids: list[str] = []
    while len(ids) < session.life.app_state_keys:
        key_id = fakes.app_state_key_id(rng)
        if key_id not in ids:
            ids.append(key_id)
    return ids


def auth_rows(plan: DemoPlan) -> Iterator[tuple]:
    """Rows for ``whatsapp_auth``: every session but the orphan keys' one."""
    for session in plan.sessions:
        if not session.has_auth:
            continue
        rng = _rng(plan.seed, "auth", session.source)
        name = rng.choice(_SALON_NAMES)
        platform = rng.choice(("android", "smba", "iphone"))
        login = rng.uniform(0.5, 20)
        life = session.life
        if life is None:
            # Pairing never finished: the QR was shown, the phone never confirmed.
            creds = fakes.creds(rng, phone=session.phone, name=name, paired=False)
            written = plan.now - timedelta(minutes=10)
            yield session.session_id, _json(creds), written, written
            continue
        next_id = life.pre_key_history()[1]
        if session.state is SessionState.CREDS_BEHIND_KEYS:
            next_id -= fakes.PREKEY_TOP_UP  # the creds save of the last upload was lost
        app_ids = _app_state_key_ids(plan, session)
        creds = fakes.creds(
            rng,
            phone=session.phone,
            name=name,
            registered=session.pairing_code,
            platform=platform,
            next_pre_key_id=next_id,
            my_app_state_key_id=app_ids[-1] if app_ids else None,
        )
        ended = plan.now - session.life_ends_ago
        # Baileys writes the creds at every login: the last one ended a silent session's life.
        written = ended if session.life_ends_ago else plan.now - timedelta(hours=login)
        paired_at = ended - timedelta(days=life.paired_days_ago)
        yield session.session_id, _json(creds), paired_at, written


# fmt: off
_KEY_COLUMNS = (
    "company_id", "key_type", "key_id", "value", "created_at", "updated_at", "expires_at",
)
# fmt: on


def _state_rows(state: SessionState, rows: list[tuple]) -> list[tuple]:
    """The life's rows as the failure mode left them (what an age-based cleanup deleted)."""
    if state is SessionState.NO_PRE_KEYS:
        return [row for row in rows if row[0] != "pre-key"]
    if state is SessionState.APP_STATE_KEY_MISSING:
        return [row for row in rows if row[0] != "app-state-sync-key"]
    if state is SessionState.FEW_PRE_KEYS:
        pre_keys = sorted((row for row in rows if row[0] == "pre-key"), key=lambda r: int(r[1]))
        kept = {row[1] for row in pre_keys[-_FEW_PRE_KEYS:]}
        return [row for row in rows if row[0] != "pre-key" or row[1] in kept]
    return rows


def key_rows(plan: DemoPlan) -> Iterator[tuple]:
    """Rows for ``whatsapp_keys``: each session's Baileys life, with the bot's ``expires_at``."""
    for session in plan.sessions:
        if session.life is None:
            continue
        rng = _rng(plan.seed, "keys", session.source)
        life = fakes.lifecycle_keys(
            rng,
            session.life,
            plan.now - session.life_ends_ago,
            app_state_key_ids=_app_state_key_ids(plan, session),
        )
        for key_type, key_id, value, created, updated in _state_rows(session.state, life.rows):
            yield (
                session.session_id,
                key_type,
                key_id,
                _json(value),
                created,
                updated,
                fakes.bot_expires_at(key_type, updated),
            )


# --- Writing ----------------------------------------------------------------------------------


def bot_tables_have_data(alias: str | None = None) -> bool:
    """Whether any of the bot's four tables holds a row."""
    alias = alias or config.bot_database_alias()
    with connections[alias].cursor() as cursor:
        exists = (f"EXISTS (SELECT 1 FROM {t})" for t in schema.BOT_TABLES)  # noqa: S608
        cursor.execute("SELECT " + " OR ".join(exists))
        return bool(cursor.fetchone()[0])


def _copy(cursor, table: str, columns: tuple[str, ...], rows: Iterator[tuple]) -> int:
    written = 0
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            written += 1
    return written


@contextlib.contextmanager
def _indexes_rebuilt_after(cursor, table: str) -> Iterator[None]:
    """
    Drop ``table``'s secondary indexes for the block, then recreate them exactly as they were.

    Only indexes that back no constraint (the primary keys stay). The definitions come from
    ``pg_get_indexdef``, so names, uniqueness and partial predicates are kept; the caller's
    transaction makes the swap all-or-nothing.
    """
    cursor.execute(
        "SELECT i.relname, pg_catalog.pg_get_indexdef(i.oid) "
        "FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass AND NOT EXISTS "
        "(SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = x.indexrelid) "
        "ORDER BY i.relname",
        [table],
    )
    definitions = cursor.fetchall()
    for name, _ in definitions:
        cursor.execute(f'DROP INDEX "{name}"')
    yield
    for _, definition in definitions:
        cursor.execute(definition)


def seed_demo_data(
    size: DemoSize,
    *,
    alias: str | None = None,
    seed: int = 1,
    now: datetime | None = None,
    replace: bool = False,
    if_empty: bool = False,
) -> DemoSummary:
    """
    Write the demo data set into the bot tables of a database of our own, in one transaction.

    Args:
        size: how much data.
        alias: the database alias; defaults to the bot alias.
        seed: same seed and same ``now`` give the same rows.
        now: the reference time; defaults to the current time.
        replace: empty the four tables first (TRUNCATE, ids restart at 1).
        if_empty: when the tables hold data, write nothing and return a skipped summary.

    Returns:
        What was written.

    Raises:
        BadInput: the size cannot show every state.
        FileNotFoundError: the bot tables do not exist (run ``create_bot_schema`` first).
        FileExistsError: the tables hold data and neither ``replace`` nor ``if_empty`` is set.
        BotDatabaseUnavailable: the database cannot be reached.

    """
    alias = alias or config.bot_database_alias()
    plan = build_plan(size, seed=seed, now=now)
    started = time.monotonic()
    with translate_database_errors(alias):
        present = schema.existing_bot_tables(alias)
        missing = [name for name in schema.BOT_TABLES if name not in present]
        if missing:
            raise FileNotFoundError(
                f"The bot tables {', '.join(missing)} do not exist in database alias {alias!r}."
            )
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            # The bot alias carries a statement timeout sized for reads; a large COPY is not.
            cursor.execute("SET LOCAL statement_timeout = 0")
            cursor.execute("SET LOCAL synchronous_commit = off")
            if not replace and bot_tables_have_data(alias):
                if if_empty:
                    return DemoSummary(skipped=True)
                raise FileExistsError(f"The bot tables in database alias {alias!r} hold data.")
            if replace:
                cursor.execute(
                    f"TRUNCATE {', '.join(schema.BOT_TABLES)} RESTART IDENTITY"  # noqa: S608
                )
            # The tables are empty here: building the big tables' secondary indexes once after
            # the load is several times faster than maintaining them row by row.
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            companies = _copy(cursor, "companies", _COMPANY_COLUMNS, company_rows(plan))
            with _indexes_rebuilt_after(cursor, "clients"):
                clients = _copy(cursor, "clients", _CLIENT_COLUMNS, client_rows(plan))
            _copy(cursor, "whatsapp_auth", _AUTH_COLUMNS, auth_rows(plan))
            with _indexes_rebuilt_after(cursor, "whatsapp_keys"):
                keys = _copy(cursor, "whatsapp_keys", _KEY_COLUMNS, key_rows(plan))
            cursor.execute(f"ANALYZE {', '.join(schema.BOT_TABLES)}")
    summary = DemoSummary(
        companies=companies,
        clients=clients,
        sessions=len(plan.sessions),
        keys=keys,
        seconds=time.monotonic() - started,
    )
    logger.debug("demo data written to %r: %s", alias, summary)
    return summary
