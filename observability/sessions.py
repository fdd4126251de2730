"""Session health: the one home of every question about WhatsApp sessions and their keys."""

from __future__ import annotations

import heapq
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from django.db import connections
from django.utils import timezone

from observability import config, phones, rules, session_ids
from observability.exceptions import SessionNotFound, translate_database_errors
from observability.rules import SessionFacts, Status, worst
from observability.session_ids import Spelling

logger = logging.getLogger(__name__)

#: How many of the worst sessions the store's summary carries.
WORST_COUNT = 10

__all__ = [
    "SessionFacts",
    "SessionHealth",
    "Status",
    "StoreFinding",
    "StoreHealth",
    "get_session",
    "list_sessions",
    "store_health",
    "summarize",
    "worst",
]


@dataclass(frozen=True)
class SessionHealth:
    """
    The health of one stored session id, with every fact the verdict was drawn from.

    Attributes:
        session_id: the id exactly as stored (``962302`` or ``company_962302``).
        salon_id: the salon's number, or None when the id follows neither spelling.
        spelling: bare or prefixed, or None when unparseable.
        salon_title: ``companies.title`` of the salon, when the salon is known.
        key_counts: number of keys by ``key_type``.
        total_keys: all keys of the session.
        session_keys: keys of type ``session`` (one per contact device).
        expired_keys: keys whose ``expires_at`` has passed (a fact, not a fault: pre-keys
            and app-state keys stay live long past it).
        expired_share: expired_keys / total_keys (0 when there are no keys).
        newest_key_write: the latest ``updated_at`` (or ``created_at``) over the keys.
        auth_updated_at: ``whatsapp_auth.updated_at``, when an auth row exists.
        has_auth: an auth row exists.
        has_keys: at least one key exists.
        phone_masked: the session's own number from ``creds.me.id``, masked.
        registered: ``creds.registered`` (None without an auth row); true only after a
            pairing-code login, so false is normal for a QR-paired session.
        platform: ``creds.platform``.
        twin_session_id: the other spelling of the same salon, when it is stored too.
        status: the verdict.
        reasons: every WARN or FAIL rule that applies, as sentences an operator can act on.
        phone_digits: the unmasked number, for searching only; never render it.
        salon_pk: ``companies.id`` of the salon's row, for links to its page.
        notes: sentences shown beside the verdict that never change it (unknown key types).
        rules: stable names of the rules behind ``reasons``, in the same order.
        facts: everything the rules judged (``observability.rules.SessionFacts``).
        login_marks: what the auth row's login is known by (:func:`login_marks`), stored by
            the snapshot to find shared logins without reading every creds; never rendered.

    """

    session_id: str
    salon_id: int | None
    spelling: Spelling | None
    salon_title: str | None
    key_counts: dict[str, int]
    total_keys: int
    session_keys: int
    expired_keys: int
    expired_share: float
    newest_key_write: datetime | None
    auth_updated_at: datetime | None
    has_auth: bool
    has_keys: bool
    phone_masked: str | None
    registered: bool | None
    platform: str | None
    twin_session_id: str | None
    status: Status
    reasons: tuple[str, ...]
    phone_digits: str | None = field(default=None, repr=False, compare=False)
    salon_pk: int | None = None
    notes: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    facts: SessionFacts | None = field(default=None, repr=False, compare=False)
    login_marks: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def is_duplicate(self) -> bool:
        """The salon is stored under both spellings."""
        return self.twin_session_id is not None

    @property
    def is_orphan(self) -> bool:
        """Keys exist but no auth row does."""
        return self.has_keys and not self.has_auth

    @property
    def paired(self) -> bool:
        """The creds hold a paired account (``me.id`` and ``account``)."""
        return bool(self.facts and self.facts.paired)

    @property
    def pairing(self) -> str | None:
        """``"pairing code"`` or ``"QR"`` for a paired session (from ``creds.registered``)."""
        if not self.paired:
            return None
        return "pairing code" if self.registered else "QR"

    @property
    def last_write(self) -> datetime | None:
        """The latest write to the session's creds or keys."""
        return self.facts.last_write if self.facts else self.newest_key_write

    def last_write_age(self, now: datetime | None = None) -> timedelta | None:
        """How long ago the newest key was written (None without keys)."""
        if self.newest_key_write is None:
            return None
        return (now or timezone.now()) - self.newest_key_write

    def as_dict(self) -> dict:
        """
        The verdict and its facts as JSON-ready data: no secret, the phone masked.

        Used by ``manage.py whatsapp_sessions --json`` and by anything that stores verdicts.
        """
        facts = self.facts or SessionFacts(self.session_id)
        return {
            "session_id": self.session_id,
            "salon_id": self.salon_id,
            "salon_title": self.salon_title,
            "status": str(self.status),
            "reasons": list(self.reasons),
            "rules": list(self.rules),
            "notes": list(self.notes),
            "facts": {
                "has_auth": self.has_auth,
                "paired": facts.paired,
                "pairing": self.pairing,
                "registered": self.registered,
                "platform": self.platform,
                "phone": self.phone_masked,
                "salon_phone": phones.mask(facts.salon_phone),
                "key_counts": dict(self.key_counts),
                "total_keys": self.total_keys,
                "pre_keys": facts.pre_keys,
                "max_pre_key_id": facts.max_pre_key_id,
                "next_pre_key_id": facts.next_pre_key_id,
                "app_state_key_id": facts.app_state_key_id,
                "app_state_key_stored": facts.app_state_key_stored,
                "expired_keys": self.expired_keys,
                "last_write": _iso(self.last_write),
                "last_key_write": _iso(self.newest_key_write),
                "auth_written": _iso(self.auth_updated_at),
                "twin_session_id": self.twin_session_id,
                "shares_login_with": list(facts.shares_login_with),
                "shares_phone_with": list(facts.shares_phone_with),
                "bot_connected": facts.bot_connected,
                "bot_disconnected_at": _iso(facts.bot_disconnected_at),
            },
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass(frozen=True)
class StoreFinding:
    """
    One reason the store is not OK.

    The admin's overview, the store health check and the store alert all show these, so the
    store has one verdict.

    Attributes:
        cause: a stable name (``failing_sessions``, ``one_login_twice``, ...), used as the
            alert's fingerprint and cooldown key.
        status: ``WARN`` or ``FAIL``.
        message: what is wrong, with counts and salon ids, never a phone or a secret.
        action: what an operator should do about it.

    """

    cause: str
    status: Status
    message: str
    action: str

    @property
    def sentence(self) -> str:
        """The finding as one sentence for a page or a health message."""
        return f"{self.message}: {self.action}"


@dataclass(frozen=True)
class StoreHealth:
    """
    The health of the whole session store.

    Attributes:
        sessions_by_status: how many sessions have each status (every status present).
        total_sessions: sessions known from auth rows or keys.
        total_expired_keys: keys past ``expires_at`` over the whole table (a fact, not a
            fault: Baileys still needs every stored pre-key and app-state key).
        duplicate_salon_ids: salons stored under both spellings.
        orphan_session_ids: session ids that have keys but no auth row.
        keys_by_type: number of keys per ``key_type`` over the whole table.
        status: the store's verdict: the worst of its findings.
        findings: why, worst first.
        worst: the worst sessions, worst first (at most ten).
        shared_logins: groups of session ids that hold one login or one number.

    """

    sessions_by_status: dict[Status, int]
    total_sessions: int
    total_expired_keys: int
    duplicate_salon_ids: tuple[int, ...]
    orphan_session_ids: tuple[str, ...]
    keys_by_type: dict[str, int]
    status: Status
    findings: tuple[StoreFinding, ...]
    worst: tuple[SessionHealth, ...]
    shared_logins: tuple[tuple[str, ...], ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """The findings as sentences, worst first."""
        return tuple(finding.sentence for finding in self.findings)

    @property
    def total_keys(self) -> int:
        """All keys in the store."""
        return sum(self.keys_by_type.values())


# --- Queries ---------------------------------------------------------------------------------
#
# Three aggregate queries answer every session at once: the keys grouped by (company_id,
# key_type), a narrow read of whatsapp_auth that extracts the few creds fields the rules need
# in SQL (the creds never reach Python; of the login's public keys only hashes, compared in
# Python to find a login stored twice), and the salons' companies rows. Their number does not
# depend on the number of sessions.

# One row per session: the per-type counts as two parallel arrays, the newest write as epoch
# seconds (a float is far cheaper for the driver to load than ten thousand timestamps), and
# the highest pre-key id. Baileys stores pre-key ids as decimal text without leading zeros, so
# left-padding them makes byte order numeric order; that is about half the cost of testing
# each id with a regular expression and casting it. A non-numeric maximum gives no signal.
# The ids of the ``app-state-sync-key`` rows come along (a handful per session), so whether
# ``creds.myAppStateKeyId`` is stored is answered here, not by one more lookup per auth row.
_PER_TYPE = """
    key_type, count(*) AS keys,
    count(*) FILTER (WHERE expires_at < %(now)s) AS expired,
    max(coalesce(updated_at, created_at)) AS newest,
    max(CASE WHEN key_type = 'pre-key' THEN lpad(key_id, 20, '0') COLLATE "C" END) AS max_pre_key,
    array_agg(left(key_id, 64)) FILTER (WHERE key_type = 'app-state-sync-key') AS app_state_keys
"""
_PER_SESSION = """
    array_agg(key_type ORDER BY key_type),
    array_agg(keys ORDER BY key_type),
    sum(expired)::bigint,
    extract(epoch FROM max(newest))::float8,
    max(max_pre_key),
    min(app_state_keys)
"""
_KEYS_SQL = f"""
    SELECT company_id, {_PER_SESSION}
      FROM (SELECT company_id, {_PER_TYPE} FROM whatsapp_keys {{where}}
          GROUP BY company_id, key_type) AS per_type
  GROUP BY company_id
"""  # noqa: S608 - only module constants are interpolated

# The same for a list of sessions (the incremental refresh's): one index lookup per session, so
# the work follows the sessions asked for. Given a few hundred ids among many, ``company_id =
# ANY(ids)`` in the query above makes the planner scan the whole table in parallel. At 10M
# keys and 10,000 sessions (the machine shared, load average 2 to 13) that took 1.3 s for 500
# sessions against 0.46 s this way, and 3.1 s against 1.5 s for 1,000; they met near 2,500
# (the scan reads every key once, the lookups only theirs but one by one). Beyond
# :data:`_LOOKUPS_MAX` ids the scan is used.
#: Up to this many ids, :data:`_SOME_KEYS_SQL` looks each one up (see above). The ids include
#: each session's other spelling (to see duplicates), mostly not stored and found absent at
#: once: this is about 1,000 sessions.
_LOOKUPS_MAX = 2_000

_SOME_KEYS_SQL = f"""
    SELECT s.company_id, {_PER_SESSION}
      FROM unnest(%(ids)s::text[]) AS s(company_id)
     CROSS JOIN LATERAL (
            SELECT {_PER_TYPE} FROM whatsapp_keys
             WHERE company_id = s.company_id
          GROUP BY key_type
           ) AS per_type
  GROUP BY s.company_id
"""  # noqa: S608 - only module constants are interpolated

# The hashes of a login's two public keys (``signedIdentityKey``, ``noiseKey``): the same hash
# in two auth rows is one login stored twice. Only the hashes leave the database, never a key.
_LOGIN_HASHES = """
           md5((a.creds -> 'signedIdentityKey' -> 'public')::text) AS identity_hash,
           md5((a.creds -> 'noiseKey' -> 'public')::text) AS noise_hash
"""

# ``account`` is a secret: only whether it is there leaves the database. Of the identity key
# (public, yet part of the creds) only a hash leaves it, to see a new pairing.
_AUTH_SQL = f"""
    SELECT a.company_id,
           a.creds -> 'me' ->> 'id',
           coalesce(jsonb_typeof(a.creds -> 'account') = 'object', false),
           a.creds ->> 'registered',
           a.creds ->> 'platform',
           CASE WHEN jsonb_typeof(a.creds -> 'nextPreKeyId') = 'number'
                THEN (a.creds ->> 'nextPreKeyId')::numeric END,
           left(a.creds ->> 'myAppStateKeyId', 64),
           coalesce(a.updated_at, a.created_at),
           {_LOGIN_HASHES}
      FROM whatsapp_auth a
      {{where}}
"""  # noqa: S608 - only module constants are interpolated

# The auth rows holding one of a filtered read's key hashes or numbers (see :func:`login_marks`),
# when the caller knows no other rows' marks: every creds row is hashed (a scan), but only the
# rows that match leave the database, not every salon's number.
_MARKS_SQL = f"""
    SELECT company_id, jid, identity_hash, noise_hash
      FROM (SELECT a.company_id, a.creds -> 'me' ->> 'id' AS jid, {_LOGIN_HASHES}
              FROM whatsapp_auth a) AS marked
     WHERE identity_hash = ANY(%(identities)s) OR noise_hash = ANY(%(noises)s)
        OR substring(jid FROM '^[+]?([0-9]+)') = ANY(%(numbers)s)
"""  # noqa: S608 - only module constants are interpolated

_COMPANIES_SQL = """
    SELECT DISTINCT ON (company_id)
           company_id, title, id, whatsapp_phone, whatsapp_connected, disconnected_at,
           whatsapp_connected_at
      FROM companies
     WHERE company_id = ANY(%(salons)s)
  ORDER BY company_id, id
"""


@dataclass
class _KeyAggregate:
    counts: dict[str, int] = field(default_factory=dict)
    expired: int = 0
    newest: datetime | None = None
    max_pre_key_id: int | None = None
    app_state_key_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _AuthRow:
    jid: str | None
    has_account: bool
    registered: str | None
    platform: str | None
    next_pre_key_id: int | None
    app_state_key_id: str | None
    updated_at: datetime | None
    identity_hash: str | None = None
    marks: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Salon:
    title: str | None
    pk: int
    phone: str | None
    connected: bool | None
    disconnected_at: datetime | None
    connected_at: datetime | None = None


@dataclass
class _Shared:
    """Who shares a login or a number with whom (session id -> the others)."""

    login: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    phone: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


@dataclass
class _Fetched:
    keys: dict[str, _KeyAggregate]
    auth: dict[str, _AuthRow]
    salons: dict[int, _Salon]
    shared: _Shared


def _alias() -> str:
    return config.bot_database_alias()


def _pre_key_id(value) -> int | None:
    """A pre-key id read from SQL (a padded text or a number), or None when not a number."""
    if value is None:
        return None
    if isinstance(value, str):
        return int(value) if value.isdigit() and value.isascii() else None
    return int(value)  # a jsonb number is finite


#: Given login marks, the sessions outside a filtered read known to hold any of them, with all
#: their marks (``session id -> marks``): how the snapshot refresh answers from what it stored.
MarkHolders = Callable[[set[str]], Mapping[str, Sequence[str]]]


#: The tag of the number among a login's marks; the other marks are key hashes.
NUMBER_MARK = "p:"


def login_marks(jid: str | None, identity: str | None, noise: str | None) -> tuple[str, ...]:
    """
    What one auth row's login is known by: its key hashes and its number, each tagged.

    Two auth rows with a mark in common hold one login twice (a shared identity or noise key:
    WhatsApp keeps one connection, ``shared/baileys-facts.md``) or log in as one number (in
    the normal form ``phones.normalize`` gives, the one ``SessionState.phone_digits`` holds).
    """
    phone = phones.normalize(phones.from_jid(jid))
    tagged = (("i:", identity), ("n:", noise), (NUMBER_MARK, phone))
    return tuple(tag + value for tag, value in tagged if value)


def _marks_params(marks: set[str]) -> dict[str, list[str]]:
    """
    :data:`_MARKS_SQL`'s parameters: the key hashes, and every spelling of each number.

    A number mark is in ``phones.normalize``'s form; the JIDs hold the digits as written, so
    each spelling that normalizes to it is looked for (``7…``, and ``8…`` or the bare ten
    digits of a Russian number).
    """
    numbers = set()
    for mark in marks:
        if mark.startswith(NUMBER_MARK):
            digits = mark.removeprefix(NUMBER_MARK)
            numbers.add(digits)
            if len(digits) == 11 and digits.startswith("7"):
                numbers.update((digits[1:], "8" + digits[1:]))
    return {
        "identities": sorted(m.removeprefix("i:") for m in marks if m.startswith("i:")),
        "noises": sorted(m.removeprefix("n:") for m in marks if m.startswith("n:")),
        "numbers": sorted(numbers),
    }


def _shared(marks: Mapping[str, Sequence[str]]) -> _Shared:
    """Who shares a login or a number with whom, from each auth row's login marks."""
    holders: dict[str, set[str]] = defaultdict(set)
    for session_id, held in marks.items():
        for mark in held:
            holders[mark].add(session_id)
    shared = _Shared()
    for mark, members in holders.items():
        if len(members) > 1:
            by_id = shared.phone if mark.startswith(NUMBER_MARK) else shared.login
            for member in members:
                by_id[member].update(members - {member})
    return shared


def _fetch(
    session_filter: Sequence[str] | None, now: datetime, holders: MarkHolders | None = None
) -> _Fetched:
    """
    Run the aggregate queries, restricted to ``session_filter`` when given.

    Shared logins compare the rows read with every other auth row: a whole read has them
    all; a filtered one asks ``holders`` for the others holding its marks, or, without it,
    reads every row's marks (a scan of every creds).
    """
    alias = _alias()
    params: dict = {"now": now}
    where = ""
    if session_filter is not None:
        where = "WHERE company_id = ANY(%(ids)s)"
        params["ids"] = list(session_filter)
    keys: dict[str, _KeyAggregate] = {}
    auth: dict[str, _AuthRow] = {}
    with translate_database_errors(alias), connections[alias].cursor() as cursor:
        if session_filter is not None and len(params["ids"]) <= _LOOKUPS_MAX:
            cursor.execute(_SOME_KEYS_SQL, params)
        else:
            cursor.execute(_KEYS_SQL.replace("{where}", where), params)
        for row in cursor.fetchall():
            company_id, key_types, counts, expired, newest, max_pre_key, app_state = row
            keys[company_id] = _KeyAggregate(
                counts=dict(zip(key_types, counts, strict=True)),
                expired=expired,
                newest=datetime.fromtimestamp(newest, tz=UTC) if newest is not None else None,
                max_pre_key_id=_pre_key_id(max_pre_key),
                app_state_key_ids=frozenset(app_state or ()),
            )
        cursor.execute(
            _AUTH_SQL.replace("{where}", where.replace("company_id", "a.company_id")), params
        )
        for row in cursor.fetchall():
            company_id, jid, account, registered, platform, next_id, app_key, at = row[:8]
            identity, noise = row[8:]
            auth[company_id] = _AuthRow(
                jid=jid,
                has_account=account,
                registered=registered,
                platform=platform,
                next_pre_key_id=_pre_key_id(next_id),
                app_state_key_id=app_key,
                updated_at=at,
                identity_hash=identity[:12] if identity else None,
                marks=login_marks(jid, identity, noise),
            )
        marks = {company_id: row.marks for company_id, row in auth.items()}
        if session_filter is not None:
            inside = set(params["ids"])
            wanted_marks = {mark for held in marks.values() for mark in held}
            if holders is not None:
                others = holders(wanted_marks)
            else:
                cursor.execute(_MARKS_SQL, _marks_params(wanted_marks))
                others = {row[0]: login_marks(*row[1:]) for row in cursor.fetchall()}
            marks.update((sid, held) for sid, held in others.items() if sid not in inside)
        shared = _shared(marks)
        salon_ids = sorted(
            {
                parsed.salon_id
                for parsed in map(session_ids.describe, set(keys) | set(auth))
                if parsed.salon_id is not None
            }
        )
        salons: dict[int, _Salon] = {}
        if salon_ids:
            cursor.execute(_COMPANIES_SQL, {"salons": salon_ids})
            for salon, title, pk, phone, connected, gone_at, since in cursor.fetchall():
                # whatsapp_connected_at is a timestamp without time zone: read as UTC.
                since = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
                salons[salon] = _Salon(title, pk, phone, connected, gone_at, since)
    return _Fetched(keys=keys, auth=auth, salons=salons, shared=shared)


def _with_twins(ids: Iterable[str]) -> list[str]:
    """The given session ids plus the other spelling of each (to detect duplicates)."""
    wanted: set[str] = set()
    for raw in ids:
        wanted.add(raw)
        twin = session_ids.describe(raw).twin
        if twin:
            wanted.add(twin)
    return sorted(wanted)


# --- Facts and verdicts ----------------------------------------------------------------------


def _facts(session_id: str, fetched: _Fetched) -> SessionFacts:
    """Gather one session's facts from the fetched aggregates (the rules judge them)."""
    parsed = session_ids.describe(session_id)
    aggregate = fetched.keys.get(session_id)
    auth = fetched.auth.get(session_id)
    twin = parsed.twin
    twin_exists = bool(twin and (twin in fetched.keys or twin in fetched.auth))
    salon = fetched.salons.get(parsed.salon_id) if parsed.salon_id is not None else None
    writes = [
        moment
        for moment in (aggregate.newest if aggregate else None, auth.updated_at if auth else None)
        if moment is not None
    ]
    salon_phone = phones.normalize(salon.phone) if salon and salon.phone else ""
    return SessionFacts(
        session_id=session_id,
        salon_id=parsed.salon_id,
        has_auth=auth is not None,
        me_id_present=bool(auth and auth.jid),
        has_account=bool(auth and auth.has_account),
        registered=(auth.registered == "true") if auth else None,
        phone=phones.from_jid(auth.jid) if auth else None,
        next_pre_key_id=auth.next_pre_key_id if auth else None,
        app_state_key_id=auth.app_state_key_id if auth else None,
        app_state_key_stored=bool(
            auth and aggregate and auth.app_state_key_id in aggregate.app_state_key_ids
        ),
        key_counts=dict(sorted(aggregate.counts.items())) if aggregate else {},
        max_pre_key_id=aggregate.max_pre_key_id if aggregate else None,
        last_write=max(writes) if writes else None,
        twin_session_id=twin if twin_exists else None,
        twin_has_auth=bool(twin and twin in fetched.auth),
        shares_login_with=tuple(sorted(fetched.shared.login.get(session_id, ()))),
        shares_phone_with=tuple(sorted(fetched.shared.phone.get(session_id, ()))),
        salon_phone=salon_phone or None,
        bot_connected=salon.connected if salon else None,
        bot_disconnected_at=salon.disconnected_at if salon else None,
        bot_connected_at=salon.connected_at if salon else None,
        device=_device(auth.jid) if auth else None,
        identity_hash=auth.identity_hash if auth else None,
    )


_DEVICE = re.compile(r"^[^:@]+:([0-9]{1,6})@")


def _device(jid: str | None) -> int | None:
    """The device number of ``creds.me.id`` (``<phone>:<device>@s.whatsapp.net``), if any."""
    match = _DEVICE.match(jid or "")
    return int(match.group(1)) if match else None


#: The verdict of a session built with ``judged=False``: its caller judges the facts itself.
_UNJUDGED = rules.Judgement(Status.OK, ())


def _build(
    session_id: str, fetched: _Fetched, now: datetime, judged: bool = True
) -> SessionHealth:
    facts = _facts(session_id, fetched)
    judgement = rules.judge(facts, now) if judged else _UNJUDGED
    parsed = session_ids.describe(session_id)
    aggregate = fetched.keys.get(session_id)
    auth_row = fetched.auth.get(session_id)
    counts = facts.key_counts
    total = sum(counts.values())
    expired = aggregate.expired if aggregate else 0
    salon = fetched.salons.get(parsed.salon_id) if parsed.salon_id is not None else None
    return SessionHealth(
        session_id=session_id,
        salon_id=parsed.salon_id,
        spelling=parsed.spelling,
        salon_title=salon.title if salon else None,
        key_counts=counts,
        total_keys=total,
        session_keys=counts.get("session", 0),
        expired_keys=expired,
        expired_share=(expired / total) if total else 0.0,
        newest_key_write=aggregate.newest if aggregate else None,
        auth_updated_at=auth_row.updated_at if auth_row else None,
        has_auth=auth_row is not None,
        has_keys=total > 0,
        phone_masked=phones.mask(facts.phone),
        registered=facts.registered,
        platform=auth_row.platform if auth_row else None,
        twin_session_id=facts.twin_session_id,
        status=judgement.status,
        reasons=judgement.reasons,
        phone_digits=facts.phone,
        salon_pk=salon.pk if salon else None,
        notes=judgement.notes,
        rules=judgement.rules,
        facts=facts,
        login_marks=auth_row.marks if auth_row else (),
    )


def _worst_first_key(health: SessionHealth) -> tuple:
    """Sort key: FAIL before WARN before OK, then more reasons, then oldest write first."""
    newest = health.last_write
    return (
        -health.status.severity,
        -len(health.reasons),
        newest.timestamp() if newest else float("-inf"),
        health.session_id,
    )


def _sessions(
    wanted: Sequence[str] | None,
    now: datetime,
    holders: MarkHolders | None = None,
    judged: bool = True,
) -> list[SessionHealth]:
    fetched = _fetch(None if wanted is None else _with_twins(wanted), now, holders)
    every = set(fetched.keys) | set(fetched.auth)
    if wanted is not None:
        every &= set(wanted)
    result = [_build(sid, fetched, now, judged) for sid in every]
    if judged:  # unjudged, every status is the same placeholder: nothing to rank
        result.sort(key=_worst_first_key)
    return result


# --- Public API ------------------------------------------------------------------------------


def list_sessions(
    *,
    now: datetime | None = None,
    session_ids: Iterable[str] | None = None,
    holders: MarkHolders | None = None,
    judged: bool = True,
) -> list[SessionHealth]:
    """
    The health of every session (or of the given session ids), worst first when judged.

    A session is any id found in ``whatsapp_auth`` or ``whatsapp_keys``. Three aggregate
    queries answer all of them at once; the rules are in ``observability.rules``.

    Args:
        now: the moment to judge at (default: now).
        session_ids: restrict to these stored ids; the other spelling of each is read too so
            duplicates are still detected, and shared logins are looked up among every row.
        holders: with ``session_ids``, where the other sessions' login marks are looked up
            instead of asking the bot's database (the snapshot refresh passes its stored ones).
        judged: False for the facts only, every status OK with no reasons: for a caller that
            judges them itself (the snapshot refresh, with each session's history), which
            would otherwise throw the rules' first verdict away.

    Raises:
        BotDatabaseUnavailable: the bot database cannot be reached.
        QueryTimedOut: the server cancelled a query.

    """
    now = now or timezone.now()
    if session_ids is None:
        return _sessions(None, now, judged=judged)
    wanted = list(session_ids)
    if not wanted:
        return []
    return _sessions(wanted, now, holders, judged)


def get_session(session_id: str, *, now: datetime | None = None) -> SessionHealth:
    """
    The health of one stored session id.

    Raises:
        SessionNotFound: neither an auth row nor a key is stored under this id.
        BotDatabaseUnavailable: the bot database cannot be reached.

    """
    now = now or timezone.now()
    for health in _sessions([session_id], now):
        if health.session_id == session_id:
            return health
    raise SessionNotFound(f"No WhatsApp session is stored under {session_id[:60]!r}.")


def store_health(*, now: datetime | None = None) -> StoreHealth:
    """
    The health of the whole store, from the same aggregate queries.

    Raises:
        BotDatabaseUnavailable: the bot database cannot be reached.
        QueryTimedOut: the server cancelled a query.

    """
    return summarize(_sessions(None, now or timezone.now()))


def summarize(sessions: Sequence[SessionHealth]) -> StoreHealth:
    """
    The store's health from every session's health (no query of its own).

    Every key belongs to exactly one stored session id, so the store's totals are the sums of
    the sessions' counts. Callers that already hold :func:`list_sessions` (the admin) use this
    instead of querying again.

    Args:
        sessions: the health of every session in the store, in any order.

    """
    # Worst first, FAIL before WARN before OK: only the flagged sessions need sorting (the
    # findings name the first failing ones), and of the OK ones only as many as fill ``worst``.
    # Sorting all ten thousand every minute, mostly OK, was most of this function's time.
    flagged = sorted((h for h in sessions if h.status is not Status.OK), key=_worst_first_key)
    first = flagged[:WORST_COUNT]
    if len(first) < WORST_COUNT:
        fine = (h for h in sessions if h.status is Status.OK)
        first += heapq.nsmallest(WORST_COUNT - len(first), fine, key=_worst_first_key)
    by_status = dict.fromkeys(Status, 0)
    for health in sessions:
        by_status[health.status] += 1
    keys_by_type: dict[str, int] = defaultdict(int)
    for health in sessions:
        for key_type, count in health.key_counts.items():
            keys_by_type[key_type] += count
    duplicates = tuple(
        sorted(
            {
                h.salon_id
                for h in sessions
                if h.twin_session_id is not None and h.salon_id is not None
            }
        )
    )
    orphans = tuple(sorted(h.session_id for h in sessions if h.is_orphan))
    shared = _shared_groups(sessions)
    findings = _store_findings(flagged, by_status, shared, orphans)
    return StoreHealth(
        sessions_by_status=by_status,
        total_sessions=len(sessions),
        total_expired_keys=sum(health.expired_keys for health in sessions),
        duplicate_salon_ids=duplicates,
        orphan_session_ids=orphans,
        keys_by_type=dict(sorted(keys_by_type.items())),
        status=worst(*(finding.status for finding in findings)),
        findings=findings,
        worst=tuple(first),
        shared_logins=shared,
    )


def _shared_groups(sessions: Sequence[SessionHealth]) -> tuple[tuple[str, ...], ...]:
    """The groups of session ids holding one login or one number, each sorted, deduplicated."""
    groups = set()
    for health in sessions:
        facts = health.facts
        if facts is None:
            continue
        for others in (facts.shares_login_with, facts.shares_phone_with):
            if others:
                groups.add(tuple(sorted({health.session_id, *others})))
    return tuple(sorted(groups))


def _store_findings(
    flagged: Sequence[SessionHealth],
    by_status: dict[Status, int],
    shared: tuple[tuple[str, ...], ...],
    orphans: tuple[str, ...],
) -> tuple[StoreFinding, ...]:
    """
    Judge the store from its sessions' verdicts, worst finding first.

    FAIL when any session fails or one login (or number) is stored under several session ids
    (``observability.rules.one_login_twice``); WARN when any session warns or keys exist
    without an auth row. Keys past ``expires_at`` are not a finding: Baileys still needs every
    stored pre-key and app-state key (see ``observability.rules``).

    ``flagged`` holds the WARN and FAIL sessions, worst first; ``by_status`` counts them all.
    """
    total = sum(by_status.values())
    findings: list[StoreFinding] = []
    if by_status[Status.FAIL]:
        examples = [h.session_id for h in flagged if h.status is Status.FAIL][:5]
        findings.append(
            StoreFinding(
                "failing_sessions",
                Status.FAIL,
                f"{by_status[Status.FAIL]} of {total} session(s) failing "
                f"(worst: {', '.join(examples)})",
                "open the sessions admin (worst first) or run manage.py whatsapp_sessions "
                "--status FAIL, and follow each session's reason.",
            )
        )
    if shared:
        listed = "; ".join(" + ".join(group) for group in shared[:10])
        findings.append(
            StoreFinding(
                "one_login_twice",
                Status.FAIL,
                f"{len(shared)} login(s) or number(s) stored under several session ids ({listed})",
                "WhatsApp keeps one connection per login and drops the other (440 conflict): "
                "keep the session the bot uses in each group and remove the others "
                "(cleanup_duplicates for two spellings of one salon).",
            )
        )
    if by_status[Status.WARN]:
        findings.append(
            StoreFinding(
                "warning_sessions",
                Status.WARN,
                f"{by_status[Status.WARN]} of {total} session(s) warning",
                "check the warning sessions in the sessions admin.",
            )
        )
    if orphans:
        findings.append(
            StoreFinding(
                "orphan_sessions",
                Status.WARN,
                f"{len(orphans)} session(s) have keys but no auth row",
                "no login can use them: cleanup_orphan_keys deletes them once past its grace "
                "(the store overview says when).",
            )
        )
    findings.sort(key=lambda finding: -finding.status.severity)
    return tuple(findings)


# --- One session's detail (the session page and its key browser) -----------------------------


@dataclass(frozen=True)
class KeyTypeStats:
    """
    The keys of one type in one session.

    Attributes:
        key_type: the bot's key type.
        count: keys of this type.
        expired: of which past ``expires_at``.
        oldest_write, newest_write: the earliest and latest write.
        next_expiry: the soonest ``expires_at`` still ahead, if any.

    """

    key_type: str
    count: int
    expired: int
    oldest_write: datetime | None
    newest_write: datetime | None
    next_expiry: datetime | None


@dataclass(frozen=True)
class DayCount:
    """How many keys fall on one calendar day (in the project's time zone)."""

    day: date
    count: int


@dataclass(frozen=True)
class CredsField:
    """
    One field of a session's creds, described without its secret.

    Attributes:
        path: dotted path (``signedPreKey.keyPair.private``).
        kind: ``buffer``, ``string``, ``number``, ``boolean``, ``object``, ``array``, ``null``.
        length: bytes of a buffer, characters of a string, items of an array or object.
        shown: the value in clear, only for allow-listed harmless fields (phones masked).
        depth: nesting depth, for indentation.

    """

    path: str
    kind: str
    length: int | None
    shown: str | None

    @property
    def depth(self) -> int:
        """Nesting depth (0 for a top-level field)."""
        return self.path.count(".")

    @property
    def name(self) -> str:
        """The field's own name (last path segment)."""
        return self.path.rsplit(".", 1)[-1]

    @property
    def is_secret(self) -> bool:
        """True when the value is withheld (every field not on the allow list)."""
        return self.shown is None and self.kind not in ("object", "null")


@dataclass(frozen=True)
class SessionDetail:
    """
    What the session page reads live from the bot's tables (its verdict is the snapshot's).

    Attributes:
        key_types: the keys by type, ordered by type.
        writes_per_day: keys last written on each of the chart's days, the last being today.
        expiries_per_day: keys expiring on each day from now on, today first.
        creds: the creds fields, secrets withheld (empty without an auth row).
        has_auth: an auth row is stored under the id.

    """

    key_types: tuple[KeyTypeStats, ...]
    writes_per_day: tuple[DayCount, ...]
    expiries_per_day: tuple[DayCount, ...]
    creds: tuple[CredsField, ...]
    has_auth: bool


@dataclass(frozen=True)
class KeyRow:
    """One key as the key browser shows it: never its value, only the value's size."""

    key_type: str
    key_id: str
    created_at: datetime | None
    updated_at: datetime | None
    expires_at: datetime | None
    value_kind: str
    value_bytes: int
    expired: bool

    @property
    def key_id_shown(self) -> str:
        """The key id with every phone-like digit run masked (ids embed contacts' numbers)."""
        return _LONG_DIGITS.sub(lambda match: phones.mask(match.group()) or "", self.key_id)


_LONG_DIGITS = re.compile(r"\d{9,}")


@dataclass(frozen=True)
class KeyPage:
    """One page of a session's keys."""

    rows: tuple[KeyRow, ...]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        """Number of pages (at least 1)."""
        return max(1, -(-self.total // self.per_page))


#: Creds fields shown in clear: harmless counters and labels. Everything else (every Buffer,
#: every unknown field) is a secret by default and shows as kind and length only.
CREDS_CLEAR_FIELDS = frozenset(
    {
        "registered",
        "platform",
        "me.name",
        "registrationId",
        "nextPreKeyId",
        "firstUnuploadedPreKeyId",
        "accountSyncCounter",
        "lastAccountSyncTimestamp",
        "myAppStateKeyId",
        "signedPreKey.keyId",
        "accountSettings.unarchiveChats",
        "accountSettings.defaultDisappearingMode",
    }
)
#: Creds fields holding the session's own phone number: shown masked.
CREDS_PHONE_FIELDS = frozenset({"me.id"})

# One pass over the session's keys (found through idx_whatsapp_keys_company) gives the keys by
# type and both charts: the rows grouped three ways at once (GROUPING SETS), by type, by the day
# of their last write and by the day of their expiry. The days are buckets between boundaries
# computed in Python in the project's time zone (``_day_bounds``): width_bucket is one binary
# search per row, where converting every timestamp to the zone (timezone()) costs more in a zone
# with summer time, and the boundaries keep the days right across a change of offset. A write
# outside the chart's days lands in bucket 0 or past the last one, an expiry before now in 0, a
# missing expiry in NULL: the caller keeps buckets 1 to ``days``.
# Three passes (two statements, the charts' two branches run by parallel workers) cost 6.2 ms
# for the largest session at 10M keys (5,531 keys); this one 2.1 ms.
_DETAIL_SQL = """
    SELECT CASE WHEN GROUPING(key_type) = 0 THEN 'type'
                WHEN GROUPING(write_day) = 0 THEN 'write'
                ELSE 'expiry' END,
           key_type, coalesce(write_day, expiry_day), count(*),
           count(*) FILTER (WHERE expires_at < %(now)s),
           min(written), max(written),
           min(expires_at) FILTER (WHERE expires_at >= %(now)s)
      FROM (SELECT key_type, expires_at, coalesce(updated_at, created_at) AS written,
                   width_bucket(coalesce(updated_at, created_at), %(write_days)s::timestamptz[])
                       AS write_day,
                   width_bucket(expires_at, %(expiry_days)s::timestamptz[]) AS expiry_day
              FROM whatsapp_keys
             WHERE company_id = %(sid)s) AS keys
  GROUP BY GROUPING SETS ((key_type), (write_day), (expiry_day))
  ORDER BY key_type
"""

_HAS_AUTH_SQL = "SELECT EXISTS (SELECT 1 FROM whatsapp_auth WHERE company_id = %(sid)s)"

# Walks the creds tree in SQL so secrets never reach Python: for each field its path, kind,
# length, and its value only when the path is on the allow list. Buffers are leaves.
_BUFFER = "(jsonb_typeof(value) = 'object' AND value ->> 'type' = 'Buffer')"
_CREDS_SQL = f"""
    WITH RECURSIVE walk(path, value) AS (
        SELECT e.key, e.value
          FROM whatsapp_auth,
               jsonb_each(CASE WHEN jsonb_typeof(creds) = 'object' THEN creds
                               ELSE '{{}}'::jsonb END) AS e
         WHERE company_id = %(sid)s
        UNION ALL
        SELECT walk.path || '.' || e.key, e.value
          FROM walk,
               jsonb_each(
                   CASE WHEN jsonb_typeof(walk.value) = 'object'
                         AND coalesce(walk.value ->> 'type', '') <> 'Buffer'
                        THEN walk.value ELSE '{{}}'::jsonb END
               ) AS e
    )
    SELECT path,
           CASE WHEN {_BUFFER} THEN 'buffer' ELSE jsonb_typeof(value) END,
           CASE
             WHEN {_BUFFER} AND jsonb_typeof(value -> 'data') = 'array'
               THEN jsonb_array_length(value -> 'data')
             WHEN {_BUFFER} AND jsonb_typeof(value -> 'data') = 'string'
               THEN floor(length(rtrim(value ->> 'data', '=')) * 3 / 4)::int
             WHEN jsonb_typeof(value) = 'string' THEN length(value #>> '{{}}')
             WHEN jsonb_typeof(value) = 'array' THEN jsonb_array_length(value)
             WHEN jsonb_typeof(value) = 'object'
               THEN (SELECT count(*) FROM jsonb_object_keys(value))::int
           END,
           CASE WHEN path = ANY(%(clear)s)
                 AND jsonb_typeof(value) IN ('string', 'number', 'boolean')
                THEN value #>> '{{}}'
           END
      FROM walk
  ORDER BY path
"""  # noqa: S608 - only module constants are interpolated; values are parameters

# A key's size without its content: the decoded bytes of a Buffer, else the JSON text's bytes.
_VALUE_SIZE = """
    CASE
      WHEN jsonb_typeof(value) = 'object' AND value ->> 'type' = 'Buffer'
        THEN CASE jsonb_typeof(value -> 'data')
               WHEN 'array' THEN jsonb_array_length(value -> 'data')
               WHEN 'string' THEN floor(length(rtrim(value ->> 'data', '=')) * 3 / 4)::int
               ELSE octet_length(value::text)
             END
      ELSE octet_length(value::text)
    END
"""
_VALUE_KIND = """
    CASE WHEN jsonb_typeof(value) = 'object' AND value ->> 'type' = 'Buffer' THEN 'buffer'
         ELSE jsonb_typeof(value) END
"""


# Natural order of key ids: those starting with a number first, by that number (its length
# and digits without leading zeros: no cast can overflow on a 20-digit id), then the
# rest as text. "2" < "10" < "10.1" < "abc".
_KEY_ID_ORDER = """
    length(ltrim(substring(key_id FROM '^[0-9]+'), '0')) NULLS LAST,
    ltrim(substring(key_id FROM '^[0-9]+'), '0') NULLS LAST,
    key_id
"""


def _creds_summary(cursor, session_id: str) -> tuple[CredsField, ...]:
    clear = sorted(CREDS_CLEAR_FIELDS | CREDS_PHONE_FIELDS)
    cursor.execute(_CREDS_SQL, {"sid": session_id, "clear": clear})
    fields = []
    for path, kind, length, shown in cursor.fetchall():
        if path in CREDS_PHONE_FIELDS:
            shown = phones.mask_jid(shown)
        fields.append(CredsField(path=path, kind=kind, length=length, shown=shown))
    return tuple(fields)


def _midnight(day: date, tz: tzinfo) -> datetime:
    """The moment ``day`` begins in ``tz`` (the first valid moment if midnight is skipped)."""
    return datetime.combine(day, time.min, tzinfo=tz)


def _day_bounds(now: datetime, days: int, tz: tzinfo) -> tuple[list[datetime], list[datetime]]:
    """
    The boundaries of the charts' days: the last ``days`` days for writes, today on for expiries.

    Bucket ``n`` (1 to ``days``) of the writes is day ``n`` of the chart, the last being today;
    of the expiries, bucket 1 is the rest of today from ``now``, then one bucket a day.
    """
    today = timezone.localtime(now, tz).date()
    first = today - timedelta(days=days - 1)
    writes = [_midnight(first + timedelta(days=offset), tz) for offset in range(days + 1)]
    expiries = [now] + [
        _midnight(today + timedelta(days=offset), tz) for offset in range(1, days + 1)
    ]
    return writes, expiries


def _days(start: date, count: int, found: dict[int, int]) -> tuple[DayCount, ...]:
    """One count a day from ``start``, from the buckets found (1-based, missing = 0)."""
    return tuple(
        DayCount(day=start + timedelta(days=offset), count=found.get(offset + 1, 0))
        for offset in range(count)
    )


def session_detail(
    session_id: str, *, now: datetime | None = None, days: int = 14
) -> SessionDetail:
    """
    What the session page reads live: keys by type, both charts, the creds summary.

    The verdict is not here: the page reads it from the stored snapshot (issue 13). Three
    queries whatever the session's size, each reading only this session's rows: one pass over
    its keys (:data:`_DETAIL_SQL`), whether its auth row exists, and the creds walk. None reads
    beyond the session, so the cost follows the session's keys, not the table's.

    Args:
        session_id: the stored session id.
        now: the moment that decides what is expired and where the charts' days fall.
        days: how many days the charts cover, back for writes and ahead for expiries.

    Raises:
        SessionNotFound: nothing is stored under this id.
        BotDatabaseUnavailable: the bot database cannot be reached.

    """
    now = now or timezone.now()
    tz = timezone.get_current_timezone()
    write_days, expiry_days = _day_bounds(now, days, tz)
    params = {
        "sid": session_id,
        "now": now,
        "write_days": write_days,
        "expiry_days": expiry_days,
    }
    key_types: list[KeyTypeStats] = []
    buckets: dict[str, dict[int, int]] = {"write": {}, "expiry": {}}
    alias = _alias()
    with translate_database_errors(alias), connections[alias].cursor() as cursor:
        cursor.execute(_DETAIL_SQL, params)
        for grouped_by, key_type, bucket, count, *stats in cursor.fetchall():
            if grouped_by == "type":
                key_types.append(KeyTypeStats(key_type, count, *stats))
            elif bucket is not None:
                buckets[grouped_by][bucket] = count
        cursor.execute(_HAS_AUTH_SQL, {"sid": session_id})
        has_auth = cursor.fetchone()[0]
        if not has_auth and not key_types:
            raise SessionNotFound(f"No WhatsApp session is stored under {session_id[:60]!r}.")
        creds = _creds_summary(cursor, session_id) if has_auth else ()
    today = timezone.localtime(now, tz).date()
    return SessionDetail(
        key_types=tuple(key_types),
        writes_per_day=_days(today - timedelta(days=days - 1), days, buckets["write"]),
        expiries_per_day=_days(today, days, buckets["expiry"]),
        creds=creds,
        has_auth=has_auth,
    )


def browse_keys(
    session_id: str,
    *,
    key_type: str | None = None,
    expired: bool | None = None,
    page: int = 1,
    per_page: int = 100,
    now: datetime | None = None,
) -> KeyPage:
    """
    One page of a session's keys, ordered by type and id, values never read into Python.

    Ids are ordered as people count: by the number they start with (pre-key ids ``1, 2, ...,
    10``, not ``1, 10, 11``), then as text. That order is not the primary key's, so the page
    sorts the session's matching keys (found through the primary key index on
    (company_id, key_type, key_id)); a session holds a few thousand keys at most, and the
    sort costs milliseconds.

    Args:
        session_id: the stored session id.
        key_type: only keys of this type.
        expired: True for expired keys only, False for live (or never-expiring) ones only.
        page: 1-based page number (clamped to the last page).
        per_page: rows per page.
        now: the moment that decides what is expired.

    Raises:
        BotDatabaseUnavailable: the bot database cannot be reached.

    """
    now = now or timezone.now()
    conditions = ["company_id = %(sid)s"]
    params: dict = {"sid": session_id, "now": now}
    if key_type:
        conditions.append("key_type = %(key_type)s")
        params["key_type"] = key_type
    if expired is True:
        conditions.append("expires_at < %(now)s")
    elif expired is False:
        conditions.append("(expires_at IS NULL OR expires_at >= %(now)s)")
    where = " AND ".join(conditions)
    alias = _alias()
    with translate_database_errors(alias), connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM whatsapp_keys WHERE {where}", params)  # noqa: S608
        total = cursor.fetchone()[0]
        pages = max(1, -(-total // per_page))
        page = min(max(1, page), pages)
        params.update(limit=per_page, offset=(page - 1) * per_page)
        cursor.execute(
            f"""
            SELECT key_type, key_id, created_at, updated_at, expires_at,
                   {_VALUE_KIND}, {_VALUE_SIZE}, coalesce(expires_at < %(now)s, false)
              FROM whatsapp_keys
             WHERE {where}
          ORDER BY key_type, {_KEY_ID_ORDER}
             LIMIT %(limit)s OFFSET %(offset)s
            """,  # noqa: S608 - only module constants and fixed conditions are interpolated
            params,
        )
        rows = tuple(KeyRow(*row) for row in cursor.fetchall())
    return KeyPage(rows=rows, total=total, page=page, per_page=per_page)
