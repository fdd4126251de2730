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

from observability import config, fakes, schema, session_ids
from observability.exceptions import BadInput, translate_database_errors

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
    """The situations a demo session is built to show."""

    HEALTHY = "healthy"  # 50-100 session keys, written today
    DUPLICATE = "duplicate"  # the bare twin of a salon also stored as company_<id>
    STALE = "stale"  # nothing written for 30 hours
    DEAD = "dead"  # nothing written for 3 days, most keys expired
    SUSPICIOUS = "suspicious"  # fewer than 10 session keys
    ORPHAN_KEYS = "orphan_keys"  # keys whose session has no whatsapp_auth row
    NOT_REGISTERED = "not_registered"  # creds with registered = false (pairing never finished)


#: How long ago each state's newest key was written.
NEWEST_WRITE_AGE = {
    SessionState.HEALTHY: timedelta(minutes=20),
    SessionState.DUPLICATE: timedelta(hours=2),
    SessionState.STALE: timedelta(hours=30),
    SessionState.DEAD: timedelta(days=3),
    SessionState.SUSPICIOUS: timedelta(minutes=45),
    SessionState.ORPHAN_KEYS: timedelta(days=5),
    SessionState.NOT_REGISTERED: timedelta(minutes=10),
}

#: The fixed cast: one session per state (the healthy one is company_962302).
_CAST = (
    SessionState.HEALTHY,
    SessionState.DUPLICATE,
    SessionState.STALE,
    SessionState.DEAD,
    SessionState.SUSPICIOUS,
    SessionState.ORPHAN_KEYS,
    SessionState.NOT_REGISTERED,
)
#: Beyond the cast, the share of sessions given each non-healthy state.
_EXTRA_SHARE = {
    SessionState.STALE: 0.05,
    SessionState.DEAD: 0.03,
    SessionState.SUSPICIOUS: 0.03,
    SessionState.ORPHAN_KEYS: 0.01,
    SessionState.NOT_REGISTERED: 0.01,
}
#: How the keys of a healthy session beyond its ``session`` keys split between key types.
_OTHER_KEY_SHARE = {
    "pre-key": 0.36,
    "lid-mapping": 0.15,
    "device-list": 0.15,
    "sender-key": 0.12,
    "tctoken": 0.08,
    "sender-key-memory": 0.05,
    "app-state-sync-key": 0.05,
    "app-state-sync-version": 0.04,
}
_MAX_APP_STATE_VERSIONS = 5  # Baileys keeps one per collection


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


#: Named sizes for ``seed_demo_data --size``.
SIZES = {
    "small": DemoSize(sessions=40, keys=8_000, clients=1_500),
    "large": DemoSize(sessions=1_000, keys=1_000_000, clients=100_000),
}


@dataclass(slots=True)
class SessionPlan:
    """
    One demo session: who it is, what state it shows and how many keys of each type it has.

    Attributes:
        session_id: the id stored in ``company_id`` (either spelling).
        salon_id: the salon number.
        state: the situation it shows.
        key_counts: keys per key type.

    """

    session_id: str
    salon_id: int
    state: SessionState
    key_counts: dict[str, int] = field(default_factory=dict)

    @property
    def has_auth(self) -> bool:
        """Whether a ``whatsapp_auth`` row exists for it."""
        return self.state is not SessionState.ORPHAN_KEYS


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


#: The most keys a non-healthy session of each state can get (see _fixed_key_counts).
_MAX_FIXED_KEYS = {
    SessionState.DUPLICATE: 277,
    SessionState.STALE: 277,
    SessionState.DEAD: 277,
    SessionState.SUSPICIOUS: 61,
    SessionState.ORPHAN_KEYS: 68,
    SessionState.NOT_REGISTERED: 30,
}


def session_states(sessions: int) -> list[SessionState]:
    """The state of each of ``sessions`` sessions: the cast first, then shares, then healthy."""
    extra = max(sessions - len(_CAST), 0)
    states = list(_CAST)
    for state, share in _EXTRA_SHARE.items():
        states += [state] * int(extra * share)
    return states + [SessionState.HEALTHY] * (sessions - len(states))


def minimum_keys(sessions: int) -> int:
    """The fewest keys that let ``sessions`` sessions show their states."""
    # A healthy session needs its 50-100 session keys and one key of every other type.
    healthy_needs = 100 + len(_OTHER_KEY_SHARE)
    return sum(_MAX_FIXED_KEYS.get(state, healthy_needs) for state in session_states(sessions))


def _rng(seed: int, *parts: object) -> random.Random:
    # String seeds are hashed with SHA-512 by random.Random: stable across runs and platforms.
    return random.Random(":".join([str(seed), *map(str, parts)]))  # noqa: S311 (demo, not crypto)


# --- The plan ---------------------------------------------------------------------------------


def _fixed_key_counts(state: SessionState, rng: random.Random) -> dict[str, int]:
    """Key counts of a non-healthy session (small and fixed: they show a situation)."""
    if state is SessionState.SUSPICIOUS:
        return {
            "session": rng.randint(3, 8),
            "pre-key": rng.randint(20, 40),
            "app-state-sync-version": 5,
            "app-state-sync-key": 2,
            "device-list": rng.randint(2, 6),
        }
    if state is SessionState.NOT_REGISTERED:
        return {"pre-key": 30}
    if state is SessionState.ORPHAN_KEYS:
        return {
            "session": rng.randint(15, 30),
            "pre-key": rng.randint(10, 20),
            "sender-key": rng.randint(3, 8),
            "lid-mapping": rng.randint(4, 10),
        }
    counts = {
        "session": rng.randint(50, 100),
        "pre-key": rng.randint(40, 90),
        "sender-key": rng.randint(8, 20),
        "sender-key-memory": rng.randint(2, 6),
        "app-state-sync-key": rng.randint(2, 6),
        "app-state-sync-version": 5,
        "lid-mapping": rng.randint(8, 20),
        "device-list": rng.randint(8, 20),
        "tctoken": rng.randint(3, 10),
    }
    return counts


def _split(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (exact sum)."""
    weight_sum = sum(weights) or 1.0
    parts = [int(total * weight / weight_sum) for weight in weights]
    parts[-1] += total - sum(parts)
    return parts


def build_plan(size: DemoSize, *, seed: int = 1, now: datetime | None = None) -> DemoPlan:
    """
    Decide every session, salon and key count (no database access).

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

    sessions: list[SessionPlan] = []
    others = iter(salon_numbers)
    for state in states:
        if state is SessionState.HEALTHY and not sessions:
            session_id = session_ids.prefixed(DUPLICATE_SALON_ID)
            salon_id = DUPLICATE_SALON_ID
        elif state is SessionState.DUPLICATE:
            session_id = session_ids.bare(DUPLICATE_SALON_ID)
            salon_id = DUPLICATE_SALON_ID
        else:
            salon_id = next(others)
            spell = session_ids.prefixed if rng.random() < 0.6 else session_ids.bare
            session_id = spell(salon_id)
        sessions.append(
            SessionPlan(
                session_id=session_id,
                salon_id=salon_id,
                state=state,
                key_counts=_fixed_key_counts(state, rng),
            )
        )

    _fill_healthy_sessions(sessions, size.keys, rng)
    return DemoPlan(seed=seed, now=now, size=size, sessions=sessions, salon_ids=salon_ids)


def _fill_healthy_sessions(sessions: list[SessionPlan], keys: int, rng: random.Random) -> None:
    """Give healthy sessions the keys left after the fixed ones, so the total is exact."""
    healthy = [plan for plan in sessions if plan.state is SessionState.HEALTHY]
    fixed = sum(
        sum(plan.key_counts.values())
        for plan in sessions
        if plan.state is not SessionState.HEALTHY
    )
    for plan in healthy:
        plan.key_counts = {"session": plan.key_counts["session"]}
    # DemoSize.validate() made sure this covers one key of each type per healthy session.
    remaining = keys - fixed - sum(plan.key_counts["session"] for plan in healthy)
    types = list(_OTHER_KEY_SHARE)
    # Every healthy session gets one key of each type, then a random share of the rest.
    spare = remaining - len(healthy) * len(types)
    weights = [rng.uniform(0.6, 1.4) for _ in healthy]
    per_session = [len(types) + part for part in _split(spare, weights)]
    for plan, budget in zip(healthy, per_session, strict=True):
        budget -= len(types)  # one of each type first
        parts = _split(budget, list(_OTHER_KEY_SHARE.values()))
        counts = {key_type: 1 + part for key_type, part in zip(types, parts, strict=True)}
        surplus = counts["app-state-sync-version"] - _MAX_APP_STATE_VERSIONS
        if surplus > 0:
            counts["app-state-sync-version"] -= surplus
            counts["pre-key"] += surplus
        plan.key_counts.update(counts)


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


def _company_row(plan: DemoPlan, salon_id: int, session: SessionPlan | None) -> tuple:
    rng = _rng(plan.seed, "company", salon_id)
    city, tz_name, lat, lon = rng.choice(_CITIES)
    name = rng.choice(_SALON_NAMES)
    title = f"{rng.choice(_SALON_KINDS)} «{name}»"
    created = plan.now - timedelta(days=rng.randint(60, 900))
    registered = (
        session is not None
        and session.has_auth
        and session.state is not SessionState.NOT_REGISTERED
    )
    phone = fakes.contact_phone(rng)
    connected_at = created + timedelta(days=rng.randint(1, 30)) if registered else None
    disconnected = session is not None and session.state in (
        SessionState.DEAD,
        SessionState.ORPHAN_KEYS,
    )
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
        registered and not disconnected,
        phone if registered else None,
        _naive(connected_at) if connected_at else None,
        "active" if session is not None else "inactive",
        _naive(created),
        str(rng.randint(100_000, 999_999)),
        f"{owner_first} {rng.choice(_SURNAMES)}а",
        f"owner{salon_id}@example.ru",
        fakes.contact_phone(rng),
        _json({"status": "connected" if registered else "pairing"}) if session else None,
        "sk_live_" + rng.randbytes(16).hex(),  # secrets: random, never shown
        "whsec_" + rng.randbytes(20).hex(),
        _naive(plan.now - timedelta(days=rng.randint(1, 40))),
        plan.now + timedelta(days=rng.randint(-20, 200)),
        True,
        rng.random() < 0.2,
        [name.upper()[:11]] if rng.random() < 0.3 else None,
        plan.now - timedelta(days=3) if disconnected else None,
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


def auth_rows(plan: DemoPlan) -> Iterator[tuple]:
    """Rows for ``whatsapp_auth``: every session but the orphan keys' one."""
    for session in plan.sessions:
        if not session.has_auth:
            continue
        rng = _rng(plan.seed, "auth", session.session_id)
        registered = session.state is not SessionState.NOT_REGISTERED
        creds = fakes.creds(
            rng,
            phone=fakes.contact_phone(rng),
            name=rng.choice(_SALON_NAMES),
            registered=registered,
            platform=rng.choice(("android", "smba", "iphone")),
        )
        if not registered:
            # Pairing never finished: the phone never confirmed, so no account or identity yet.
            for name in ("me", "account", "signalIdentities"):
                creds.pop(name)
        written = plan.now - NEWEST_WRITE_AGE[session.state]
        yield (
            session.session_id,
            _json(creds),
            written - timedelta(days=rng.randint(20, 400)),
            written,
        )


# fmt: off
_KEY_COLUMNS = (
    "company_id", "key_type", "key_id", "value", "created_at", "updated_at", "expires_at",
)
# fmt: on


def _key_age(state: SessionState, key_type: str, rng: random.Random) -> timedelta:
    """How much older than the session's newest write one key is."""
    if state is SessionState.DEAD:
        # Mostly left over from weeks ago (expired), a few from the last days before it died.
        if rng.random() < 0.85:
            return timedelta(days=rng.uniform(12, 40))
        return timedelta(hours=rng.uniform(0, 72))
    if key_type == "pre-key" and rng.random() < 0.03:
        return timedelta(days=rng.uniform(8, 12))  # never used, so never rewritten: expired
    if key_type == "session":
        return timedelta(hours=rng.uniform(0, 30))
    return timedelta(hours=rng.uniform(0, 120))


def key_rows(plan: DemoPlan) -> Iterator[tuple]:
    """Rows for ``whatsapp_keys`` with the bot's expiry rule (``fakes.bot_expires_at``)."""
    for number, session in enumerate(plan.sessions):
        rng = _rng(plan.seed, "keys", session.session_id)
        newest = plan.now - NEWEST_WRITE_AGE[session.state]
        legacy_versions = number % 10 == 3  # rows from before the bot set expires_at
        first = True
        for key_type, count in session.key_counts.items():
            seen: set[str] = set()
            for index in range(count):
                key_id = fakes.key_id(rng, key_type, index)
                while key_id in seen:  # random ids (phones, groups) may collide
                    key_id = fakes.key_id(rng, key_type, index)
                seen.add(key_id)
                # The first key of a session is its newest write, exactly NEWEST_WRITE_AGE old.
                written = newest if first else newest - _key_age(session.state, key_type, rng)
                first = False
                expires = (
                    None
                    if legacy_versions and key_type == "app-state-sync-version"
                    else fakes.bot_expires_at(key_type, written)
                )
                yield (
                    session.session_id,
                    key_type,
                    key_id,
                    _json(fakes.key_value(rng, key_type)),
                    written - timedelta(days=rng.randint(0, 20)),
                    written,
                    expires,
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
