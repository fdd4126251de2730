"""
Every verdict rule on a WhatsApp session, each grounded in how Baileys uses the rows.

``observability.sessions`` gathers the facts in SQL (:class:`SessionFacts`); the functions here
judge them, one small function per rule. Each rule's docstring names the Baileys source file
it follows (``WhiskeySockets/Baileys`` at v7.0.0-rc13; see ``shared/baileys-facts.md``), so an
operator can check why a session is flagged. A rule returns ``None`` when it has nothing to say,
else a :class:`Verdict` whose sentence says what is wrong and what to do about it.

Rules the bot team once used and Baileys contradicts are gone on purpose:
- ``creds.registered`` false is not a failure: only a pairing-code login sets it
  (``src/Socket/messages-recv.ts``); a QR-paired session keeps ``false`` for ever.
- Keys past ``expires_at`` are not a failure: every stored pre-key stays live until a new
  contact uses it (``src/Signal/libsignal.ts`` ``removePreKey``), and app-state keys are
  written once (``src/Utils/process-message.ts``). ``expires_at`` is only the bot's write time
  plus 7 or 14 days.
- "Fewer than 10 ``session`` keys" is not a failure: ``session`` rows exist per contact, so a
  new or small salon has few.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from observability import config, key_types, phones

#: Baileys' ``MIN_PREKEY_COUNT`` (``src/Defaults/index.ts``): at this many or fewer pre-keys on
#: the server, ``uploadPreKeysToServerIfRequired`` uploads more.
MIN_PREKEY_COUNT = 5
#: Baileys' ``INITIAL_PREKEY_COUNT`` (``src/Defaults/index.ts``): a v7 session uploads this many
#: pre-keys when the server holds none (30 before v7.0.0-rc.9).
INITIAL_PREKEY_COUNT = 812


class Status(StrEnum):
    """A health verdict; compare them with :attr:`severity` or :func:`worst`."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"

    @property
    def severity(self) -> int:
        """0 for OK, 1 for WARN, 2 for FAIL: higher is worse."""
        return _SEVERITY[self]


_SEVERITY = {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2}


def worst(*statuses: Status) -> Status:
    """The most severe of the given statuses (OK when none is given)."""
    return max(statuses, key=lambda status: status.severity, default=Status.OK)


@dataclass(frozen=True)
class SessionFacts:
    """
    Everything the rules look at for one stored session id, read in SQL (no secret included).

    Attributes:
        session_id: the id exactly as stored.
        salon_id: the salon number, or None when the id follows neither spelling.
        has_auth: a ``whatsapp_auth`` row exists.
        me_id_present: ``creds.me.id`` is set (written by pairing).
        has_account: ``creds.account`` is present (a boolean only: the account is a secret).
        registered: ``creds.registered`` (True only after a pairing-code login).
        phone: the digits of ``creds.me.id`` (never rendered; masked in sentences).
        next_pre_key_id: ``creds.nextPreKeyId``.
        app_state_key_id: ``creds.myAppStateKeyId``.
        app_state_key_stored: an ``app-state-sync-key`` with that id is stored.
        key_counts: keys by ``key_type``.
        max_pre_key_id: the highest numeric ``pre-key`` id stored.
        last_write: the latest write to the session's creds or keys.
        twin_session_id: the other spelling of the salon, when it is stored too.
        twin_has_auth: the twin has an auth row (two logins for one salon).
        shares_login_with: other session ids whose creds hold the same ``signedIdentityKey``
            or ``noiseKey`` (hashed in SQL, compared by hash, never read).
        shares_phone_with: other session ids logged in as the same number.
        salon_phone: the salon's ``companies.whatsapp_phone``, normalized (None: no signal).
        bot_connected: ``companies.whatsapp_connected`` (None: no signal).
        bot_disconnected_at: ``companies.disconnected_at`` (None: no signal).
        bot_connected_at: ``companies.whatsapp_connected_at``, read as UTC (None: no signal).
        device: the device number in ``creds.me.id`` (``<phone>:<device>@s.whatsapp.net``).
        identity_hash: a short hash of ``creds.signedIdentityKey.public`` (computed in SQL;
            the key itself never leaves the database), to see a new pairing.

    """

    session_id: str
    salon_id: int | None = None
    has_auth: bool = False
    me_id_present: bool = False
    has_account: bool = False
    registered: bool | None = None
    phone: str | None = field(default=None, repr=False)
    next_pre_key_id: int | None = None
    app_state_key_id: str | None = None
    app_state_key_stored: bool = False
    key_counts: dict[str, int] = field(default_factory=dict)
    max_pre_key_id: int | None = None
    last_write: datetime | None = None
    twin_session_id: str | None = None
    twin_has_auth: bool = False
    shares_login_with: tuple[str, ...] = ()
    shares_phone_with: tuple[str, ...] = ()
    salon_phone: str | None = field(default=None, repr=False)
    bot_connected: bool | None = None
    bot_disconnected_at: datetime | None = None
    bot_connected_at: datetime | None = None
    device: int | None = None
    identity_hash: str | None = None

    @property
    def paired(self) -> bool:
        """Pairing finished: the creds name the account's device and hold its signed identity."""
        return self.has_auth and self.me_id_present and self.has_account

    @property
    def pre_keys(self) -> int:
        """Stored ``pre-key`` rows."""
        return self.key_counts.get("pre-key", 0)

    @property
    def unknown_key_types(self) -> dict[str, int]:
        """Counts of key types the bot's list does not name (v7's ``identity-key``, ...)."""
        return {kind: n for kind, n in self.key_counts.items() if not key_types.is_known(kind)}


@dataclass(frozen=True)
class Verdict:
    """
    What one rule says about one session.

    Attributes:
        rule: the rule's stable name (``not_paired``, ``creds_behind_keys``, ...).
        status: OK for a note that is shown but never fails, else WARN or FAIL.
        sentence: what is wrong and what to do, without a secret or an unmasked phone.

    """

    rule: str
    status: Status
    sentence: str


Rule = Callable[[SessionFacts, datetime], Verdict | None]


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.0f} days"
    return f"{hours:.0f} hours"


def _ids(session_ids: tuple[str, ...]) -> str:
    return ", ".join(repr(sid) for sid in session_ids)


# --- The rules --------------------------------------------------------------------------------


def session_id_spelling(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    WARN: the session id follows neither of the bot's spellings, so no salon owns it.

    No Baileys ground: Baileys accepts any storage key. The bot names sessions ``962302`` or
    ``company_962302`` (``shared/legacy-schema.md``); anything else is a bot bug.
    """
    if facts.salon_id is not None:
        return None
    return Verdict(
        "session_id_spelling",
        Status.WARN,
        "The session id follows neither spelling (962302 or company_962302), so it cannot be "
        "tied to a salon: check the bot's configuration.",
    )


def orphan_keys(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    WARN: keys are stored but no creds row is: leftovers no login can use.

    Follows ``src/Utils/auth-utils.ts``: without stored creds Baileys starts from
    ``initAuthCreds()``, a new identity with ``nextPreKeyId`` 1, so these keys belong to
    nothing (the bot logged out or deleted the creds).
    """
    if facts.has_auth or not facts.key_counts:
        return None
    grace = config.cleanup_orphan_age() / timedelta(days=1)
    return Verdict(
        "orphan_keys",
        Status.WARN,
        "Keys exist without an auth row (creds): the session was logged out or deleted and "
        f"no login can use them. Remove them with cleanup_orphan_keys once unwritten for "
        f"{grace:g} days (its grace; the store overview says when).",
    )


def not_paired(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    FAIL: the creds hold no paired account (no ``creds.me.id`` or no ``creds.account``).

    Follows ``src/Utils/validate-connection.ts`` (``configureSuccessfulPairing`` writes ``me``
    and ``account`` when the phone confirms, by QR or pairing code) and
    ``src/Utils/auth-utils.ts`` (``initAuthCreds()`` has neither). ``creds.registered`` is
    not looked at: only a pairing-code login sets it (``src/Socket/messages-recv.ts``).
    """
    if not facts.has_auth or facts.paired:
        return None
    missing = " and ".join(
        name
        for name, present in (("me.id", facts.me_id_present), ("account", facts.has_account))
        if not present
    )
    return Verdict(
        "not_paired",
        Status.FAIL,
        f"Not paired: the creds have no {missing}, so pairing never finished or the salon "
        "was logged out. Pair the salon's WhatsApp again (QR code or pairing code).",
    )


def wrong_number(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    FAIL: the session is logged in as another number than the salon's ``whatsapp_phone``.

    Follows ``src/Utils/validate-connection.ts``: pairing stores the device's JID,
    ``<phone>:<device>@s.whatsapp.net``, as ``creds.me.id``. Both numbers are normalized
    (``observability.phones``) before they are compared; no ``whatsapp_phone`` is no signal.
    """
    if not facts.paired or not facts.phone or not facts.salon_phone:
        return None
    own = phones.normalize(facts.phone)
    if own == facts.salon_phone:
        return None
    return Verdict(
        "wrong_number",
        Status.FAIL,
        f"Wrong number: the session is logged in as {phones.mask(own)} but the salon's "
        f"WhatsApp number is {phones.mask(facts.salon_phone)} (companies.whatsapp_phone). "
        "Pair the salon's own number again, or correct whatsapp_phone if the salon changed it.",
    )


def creds_behind_keys(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    FAIL: a stored pre-key id is at or above ``creds.nextPreKeyId``.

    Follows ``src/Utils/signal.ts`` (``getNextPreKeys`` stores the new pre-keys first, then
    returns the creds update ``nextPreKeyId = last id + 1``) and ``src/Socket/socket.ts``
    (``uploadPreKeys`` emits that update for the bot to save). A stored id at or above it
    means the creds save was lost; the next upload reuses those ids with new key material,
    and contacts who hold the old bundle cannot decrypt their first message.
    """
    if (
        not facts.paired
        or facts.next_pre_key_id is None
        or facts.max_pre_key_id is None
        or facts.max_pre_key_id < facts.next_pre_key_id
    ):
        return None
    return Verdict(
        "creds_behind_keys",
        Status.FAIL,
        f"Creds behind keys: pre-key {facts.max_pre_key_id} is stored but creds.nextPreKeyId "
        f"is {facts.next_pre_key_id}, so a creds save was lost and the next upload will reuse "
        "those ids (first messages of new contacts then fail to decrypt). With the bot stopped "
        f"for this salon, set nextPreKeyId and firstUnuploadedPreKeyId to "
        f"{facts.max_pre_key_id + 1}, or pair again; then find why the bot's creds save failed.",
    )


def pre_key_pool(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    FAIL without any stored pre-key on a paired session; WARN below ``MIN_PREKEY_COUNT`` (5).

    Follows ``src/Defaults/index.ts`` (``MIN_PREKEY_COUNT = 5``, ``INITIAL_PREKEY_COUNT =
    812``) and ``src/Socket/socket.ts`` (``uploadPreKeysToServerIfRequired`` uploads 812 when
    the server holds none and 5 more at 5 or fewer, on every login). Each new contact uses
    one pre-key; without one, its first message cannot be decrypted.
    """
    if not facts.paired:
        return None
    count = facts.pre_keys
    if count == 0:
        return Verdict(
            "pre_key_pool",
            Status.FAIL,
            "No pre-key is stored: new contacts' first messages cannot be decrypted. Restart "
            "the bot's WhatsApp connection for this salon (on login Baileys uploads "
            f"{INITIAL_PREKEY_COUNT} when the server holds none); pair again if none appear.",
        )
    minimum = config.min_prekey_count()
    if count < minimum:
        return Verdict(
            "pre_key_pool",
            Status.WARN,
            f"Only {count} pre-key(s) stored (Baileys keeps at least {MIN_PREKEY_COUNT}): the "
            "pool is nearly used up and is topped up only at login. Restart the bot's "
            "connection for this salon and check that the count rises.",
        )
    return None


def app_state_key_missing(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    FAIL: ``creds.myAppStateKeyId`` names an ``app-state-sync-key`` that is not stored.

    Follows ``src/Utils/chat-utils.ts`` (``encodeSyncdPatch`` throws ``myAppStateKey ("…")
    not present``) and ``src/Utils/process-message.ts`` (the phone shares the keys once; the
    newest becomes ``myAppStateKeyId``). Without it every chat change the bot makes fails.
    """
    if not facts.has_auth or not facts.app_state_key_id or facts.app_state_key_stored:
        return None
    return Verdict(
        "app_state_key_missing",
        Status.FAIL,
        f"App-state key missing: creds.myAppStateKeyId names {facts.app_state_key_id!r}, "
        "which is not stored, so every chat change (read, archive, labels) fails with "
        "'myAppStateKey not present'. Never delete app-state-sync-key rows; pair the salon "
        "again so the phone shares its keys anew.",
    )


def one_login_twice(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    FAIL: another session id holds the same login (identity or noise key) or the same number.

    Follows ``src/Utils/generics.ts`` (a ``conflict`` stream error maps to
    ``DisconnectReason.connectionReplaced``, 440: WhatsApp keeps one connection per login and
    drops the other, and each bot reconnects in a loop) and ``src/Utils/validate-connection.ts``
    (``me.id`` names the number). One salon stored under both spellings with one login is a
    case of this.
    """
    if facts.shares_login_with:
        return Verdict(
            "one_login_twice",
            Status.FAIL,
            f"One login in two places: {_ids(facts.shares_login_with)} holds the same "
            "identity key, so WhatsApp drops one connection ('Stream Errored (conflict)', "
            "440) and the bot reconnects in a loop. Keep the session the bot uses and remove "
            "the other (cleanup_duplicates for two spellings of one salon).",
        )
    if facts.shares_phone_with:
        return Verdict(
            "one_login_twice",
            Status.FAIL,
            f"One number in two places: {_ids(facts.shares_phone_with)} is logged in as the "
            f"same number ({phones.mask(facts.phone)}), so two sessions answer for one "
            "WhatsApp account. Keep the session the bot uses and remove the other "
            "(cleanup_duplicates for two spellings of one salon).",
        )
    return None


def twin_login(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    WARN: the salon's other spelling holds a different login of its own.

    No Baileys ground beyond ``one_login_twice``: the bot keeps one session per salon under
    one of two spellings (``shared/legacy-schema.md``), so a second creds row for the salon is
    a second bot session; which one is stale only the bot's configuration can say.
    """
    if not (facts.has_auth and facts.twin_has_auth) or (
        facts.shares_login_with or facts.shares_phone_with
    ):
        return None
    return Verdict(
        "twin_login",
        Status.WARN,
        f"The salon is also stored as {facts.twin_session_id!r} with a login of its own: keep "
        "the session the bot uses and remove the other (cleanup_duplicates).",
    )


def bot_flags(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    FAIL at once: the bot's own ``companies`` flags say the salon's WhatsApp is disconnected.

    The bot writes ``whatsapp_connected``, ``whatsapp_connected_at`` and ``disconnected_at``
    itself (``shared/baileys-facts.md``, "What an observer of the tables can know"): it sets
    them from Baileys' ``connection.update`` events (``src/Socket/socket.ts``: ``close`` with
    a ``DisconnectReason``, ``open`` after ``CB:success``). FAIL when ``whatsapp_connected`` is
    false, or when ``disconnected_at`` is later than ``whatsapp_connected_at`` (without that
    column: later than the session's last write, since Baileys writes the creds at every
    login). NULL columns are no signal.
    """
    if not facts.has_auth:
        return None
    disconnected = facts.bot_disconnected_at
    if disconnected is not None:
        since = facts.bot_connected_at or facts.last_write
        if since is not None and disconnected > since:
            return Verdict(
                "bot_flags",
                Status.FAIL,
                f"The bot recorded a disconnect {_age(now - disconnected)} ago "
                "(companies.disconnected_at) and has not connected since, so this salon's "
                "WhatsApp is down. Check the bot's logs for this salon and reconnect it (pair "
                "again if it was logged out).",
            )
    if facts.bot_connected is False:
        return Verdict(
            "bot_flags",
            Status.FAIL,
            "The bot's own flag says WhatsApp is disconnected (companies.whatsapp_connected "
            "is false), so this salon's messages are not sent. Check the bot's logs for this "
            "salon and reconnect it (pair again if it was logged out).",
        )
    return None


def silence(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    WARN after 24 h, FAIL after 48 h without any write to the session's creds or keys.

    Follows ``src/Defaults/index.ts`` (the keepalive, ``keepAliveIntervalMs``, writes
    nothing) and ``src/Socket/socket.ts`` (creds are written at each login, keys when
    messages are encrypted or decrypted). A connected salon that sends and receives nothing
    writes nothing either, so the sentence says so; the session history issue replaces this
    with each session's own rhythm.
    """
    if not facts.paired or facts.last_write is None:
        return None
    age = now - facts.last_write
    if age >= config.stale_failure_after():
        status = Status.FAIL
    elif age >= config.stale_warning_after():
        status = Status.WARN
    else:
        return None
    return Verdict(
        "silence",
        status,
        f"No key written for {_age(age)} (nor creds): the bot may be disconnected, but a "
        "quiet salon that sends and receives nothing writes nothing either. Check the bot's "
        "WhatsApp connection for this salon; if it is connected, this is only silence.",
    )


def unknown_key_types(facts: SessionFacts, now: datetime) -> Verdict | None:
    """
    OK (a note, never a failure): key types the bot's list does not name, counted.

    Follows ``src/Types/Auth.ts`` (``SignalDataTypeMap``): Baileys v7 stores ``identity-key``
    rows, one per contact, which the bot's list of types predates.
    """
    unknown = facts.unknown_key_types
    if not unknown:
        return None
    listed = ", ".join(f"{kind} {count}" for kind, count in sorted(unknown.items()))
    return Verdict(
        "unknown_key_types",
        Status.OK,
        f"Key types the bot's list does not name: {listed}. Baileys v7 writes identity-key "
        "rows per contact; nothing to do.",
    )


#: Every rule, in the order their sentences are listed within one severity.
RULES: tuple[Rule, ...] = (
    not_paired,
    one_login_twice,
    wrong_number,
    creds_behind_keys,
    pre_key_pool,
    app_state_key_missing,
    bot_flags,
    silence,
    twin_login,
    orphan_keys,
    session_id_spelling,
    unknown_key_types,
)


# --- History detectors -------------------------------------------------------------------------
#
# Signals that only show as change over time (``shared/baileys-facts.md``, "What an observer of
# the tables can know"). The snapshot refresh records the facts that moved at each refresh as
# ``SessionChange`` rows and learns each session's rhythm; ``observability.snapshot.detect``
# turns them into a :class:`SessionHistory`. Every detector takes the clock as ``now``, so a
# simulator can compress time.

#: Hours in a week, the buckets of :attr:`SessionHistory.rates` (Monday 00:00 UTC first).
HOURS_PER_WEEK = 168

#: Change kinds the history detectors read (``SessionChange.Kind`` values).
CREDS_REWRITTEN = "creds_rewritten"
PREKEY_ONE_BY_ONE = "prekey_one_by_one"
PREKEYS_TOPPED_UP = "prekeys_topped_up"
SESSION_ROWS_LOST = "session_rows_lost"
PAIRED_AGAIN = "paired_again"
#: A login seen by one refresh shortly after the bot's previous connection (not stored: it is
#: built from that refresh's ``creds_rewritten`` change; ``old`` holds the seconds between).
CONNECTED_AGAIN = "connected_again"
HISTORY_KINDS = (
    CREDS_REWRITTEN,
    PREKEY_ONE_BY_ONE,
    PREKEYS_TOPPED_UP,
    SESSION_ROWS_LOST,
    PAIRED_AGAIN,
)


@dataclass(frozen=True)
class HistoryEvent:
    """
    One fact that moved at one refresh.

    Attributes:
        at: the refresh that saw it.
        kind: one of :data:`HISTORY_KINDS`.
        old, new: the fact's numbers before and after (``nextPreKeyId``, ``session`` rows).
        was: the session's status before the refresh (``OK``, ``WARN``, ``FAIL``, or ``""``).

    """

    at: datetime
    kind: str
    old: int | None = None
    new: int | None = None
    was: str = ""


@dataclass(frozen=True)
class SessionHistory:
    """
    What the history detectors read about one session.

    Attributes:
        events: the facts that moved within the longest detector window, oldest first.
        rates: the session's expected minutes with a write per hour, for each hour of the
            week (Monday 00:00 UTC first); None until it has enough history
            (``rhythm_min_history``, ``rhythm_min_writes``): the flat silence rule applies.
        pace: today's pace before the last write: the minutes with a write counted in the
            hours before it, and the minutes the rhythm expected in them
            (``observability.snapshot.detect.pace``); ``(0, 0)`` when unknown.

    """

    events: tuple[HistoryEvent, ...] = ()
    rates: tuple[float, ...] | None = None
    pace: tuple[float, float] = (0.0, 0.0)

    def within(self, kind: str, window: timedelta, now: datetime) -> list[HistoryEvent]:
        """The events of one kind seen in the last ``window`` (up to ``now``)."""
        return [e for e in self.events if e.kind == kind and now - window < e.at <= now]


HistoryRule = Callable[[SessionFacts, SessionHistory, datetime], Verdict | None]


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def reconnect_loop(facts: SessionFacts, history: SessionHistory, now: datetime) -> Verdict | None:
    """
    FAIL: the creds were rewritten in many separate minutes within a short window.

    Follows ``src/Socket/socket.ts`` (``CB:success`` emits ``creds.update`` at every login:
    ``me.lid``, ``lastPropHash``, ``routingInfo``) and ``src/Defaults/index.ts`` (the 30 s
    keepalive writes nothing): an idle or busy connected session rewrites its creds rarely,
    so rewrites in ``reconnect_min_minutes`` separate minutes within ``reconnect_window`` are
    logins again and again. The usual cause is one login used in two places: WhatsApp drops
    one connection ('Stream Errored (conflict)', 440, ``src/Utils/generics.ts``) and each
    side reconnects. Rewrites seen together with a ``nextPreKeyId`` rise are pre-key saves,
    not logins, and are not counted.

    Sooner, from the second login: when the bot records its connections
    (``companies.whatsapp_connected_at``, set on ``connection.update`` open), a creds rewrite
    that comes with a new connection within ``reconnect_again_within`` of the previous one
    is a login again at once. One login writes the creds several times within seconds
    (``CB:success`` ``me.lid`` and ``edge_routing`` in src/Socket/socket.ts, ``lastPropHash``
    in src/Socket/chats.ts), which can straddle two refreshes: counting connections, not
    rewrites, keeps that from looking like two logins.
    """
    again = [
        e
        for e in history.within(CONNECTED_AGAIN, config.reconnect_again_within(), now)
        if e.old is not None and e.old <= config.reconnect_again_within().total_seconds()
    ]
    if again:
        return Verdict(
            "reconnect_loop",
            Status.FAIL,
            f"Reconnect loop: the bot connected again {again[-1].old} s after its previous "
            "connection (companies.whatsapp_connected_at) and Baileys rewrote the creds at "
            "the login. Most likely one login is used in two places, so WhatsApp drops one "
            "connection ('Stream Errored (conflict)', 440) and the bot reconnects again and "
            "again: stop the other copy of this session (another bot instance or a restored "
            "backup), then check the bot's logs.",
        )
    window = config.reconnect_window()
    with_pre_keys = {
        e.at for e in history.events if e.kind in (PREKEY_ONE_BY_ONE, PREKEYS_TOPPED_UP)
    }
    minutes = {
        _minute(e.at)
        for e in history.within(CREDS_REWRITTEN, window, now)
        if e.at not in with_pre_keys
    }
    if len(minutes) < config.reconnect_min_minutes():
        return None
    return Verdict(
        "reconnect_loop",
        Status.FAIL,
        f"Reconnect loop: the creds were rewritten in {len(minutes)} separate minutes within "
        f"{_minutes(window)} (Baileys rewrites them at every login). Most likely one login is "
        "used in two places, so WhatsApp drops one connection ('Stream Errored (conflict)', "
        "440) and the bot reconnects again and again: stop the other copy of this session "
        "(another bot instance or a restored backup), then check the bot's logs.",
    )


def decryption_failures(
    facts: SessionFacts, history: SessionHistory, now: datetime
) -> Verdict | None:
    """
    WARN, then FAIL as the rate grows: ``nextPreKeyId`` rising one by one within minutes.

    Follows ``src/Socket/messages-recv.ts``: a message that fails to decrypt twice makes
    Baileys create exactly one pre-key for the retry receipt (``getNextPreKeys(authState,
    1)``), and ``src/Utils/signal.ts`` returns ``nextPreKeyId = last id + 1`` in the creds
    update. Uploads come in batches (``MIN_PREKEY_COUNT`` 5 or ``INITIAL_PREKEY_COUNT`` 812,
    ``src/Defaults/index.ts``, ``src/Socket/socket.ts``) and are not counted; a rise of an
    upload plus a few counts the few (``observability.snapshot.changes.split_pre_key_rise``:
    each ``prekey_one_by_one`` event's ``new - old`` is the pre-keys made one at a time).
    """
    window = config.decrypt_window()
    count = sum(
        max(0, (e.new or 0) - (e.old or 0)) or 1
        for e in history.within(PREKEY_ONE_BY_ONE, window, now)
    )
    if count >= config.decrypt_failure_count():
        status = Status.FAIL
    elif count >= config.decrypt_warning_count():
        status = Status.WARN
    else:
        return None
    return Verdict(
        "decryption_failures",
        status,
        f"Decryption failures: {count} pre-keys were created one at a time within "
        f"{_minutes(window)}; Baileys creates one for each message it failed to decrypt "
        "twice (a retry receipt), so contacts' messages are failing. Usual causes: session "
        "rows lost or restored from an old backup, a lost creds save, one login in two places. "
        "Check the bot's logs for 'Bad MAC' or 'No session' for this salon.",
    )


def session_rows_lost(
    facts: SessionFacts, history: SessionHistory, now: datetime
) -> Verdict | None:
    """
    WARN: a sharp fall of the session's per-contact ``session`` rows within the window.

    Follows ``shared/baileys-facts.md`` ("Per-contact records"): ``storeSession`` rewrites a
    ``session`` row at every encrypt and decrypt, and without it the contact's next message
    cannot be decrypted until the sender retries with a pre-key (``src/Socket/messages-recv.ts``).
    Baileys itself deletes one only when a contact's identity changes, so a fall of at least
    ``rows_lost_min_rows`` and ``rows_lost_min_share`` within ``rows_lost_window`` is a
    delete by the bot, a restore, or a cleanup.
    """
    window = config.rows_lost_window()
    falls = history.within(SESSION_ROWS_LOST, window, now)
    if not falls or falls[0].old is None:
        return None
    before = falls[0].old
    lost = sum(max(0, (e.old or 0) - (e.new or 0)) for e in falls)
    if lost < config.rows_lost_min_rows() or lost < config.rows_lost_min_share() * before:
        return None
    return Verdict(
        "session_rows_lost",
        Status.WARN,
        f"Session rows lost: {lost} of {before} per-contact 'session' rows disappeared within "
        f"{_minutes(window)}, so those contacts' next messages cannot be decrypted until they "
        "retry. Check the cleanup runs, any restore of the bot database and the bot's logs.",
    )


def paired_again(facts: SessionFacts, history: SessionHistory, now: datetime) -> Verdict | None:
    """
    WARN: the salon was paired again while it worked, or more than once within the window.

    Follows ``src/Utils/validate-connection.ts`` (``configureSuccessfulPairing`` writes a new
    ``me.id``, ``<phone>:<device>@s.whatsapp.net``, and the ``signedIdentityKey`` is created
    anew by ``initAuthCreds()``, ``src/Utils/auth-utils.ts``): a new device number or identity
    key is a new pairing. After a logout (the session failed) it is the expected repair and
    only a timeline event; while the session worked, or twice within ``paired_again_window``,
    someone paired it who perhaps should not have.
    """
    window = config.paired_again_window()
    pairings = history.within(PAIRED_AGAIN, window, now)
    if not pairings:
        return None
    unexpected = [e for e in pairings if e.was in (Status.OK, Status.WARN)]
    if len(pairings) < 2 and not unexpected:
        return None
    what = (
        f"paired again {len(pairings)} times within {_minutes(window)}"
        if len(pairings) >= 2
        else "paired again while it was working"
    )
    return Verdict(
        "paired_again",
        Status.WARN,
        f"The salon was {what} (a new device or identity key in the creds). Check with the "
        "salon that it was them: a pairing by someone else takes over its WhatsApp, and "
        "contacts see a new security code.",
    )


def hour_index(moment: datetime) -> int:
    """The hour of the week of a moment, 0 to 167 (Monday 00:00 UTC is 0)."""
    moment = moment.astimezone(UTC)
    return moment.weekday() * 24 + moment.hour


def expected_writes(rates: tuple[float, ...], start: datetime, end: datetime) -> float:
    """The minutes with a write the rhythm expects between ``start`` and ``end``."""
    total = 0.0
    cursor = start
    while cursor < end:
        hour_end = cursor.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        step_end = min(hour_end, end)
        total += rates[hour_index(cursor)] * (step_end - cursor).total_seconds() / 3600
        cursor = step_end
        if total > 1e6:  # far past any threshold: stop walking a long silence
            break
    return total


#: The highest share of an hour's minutes a rhythm may claim to have a write in: a minute's
#: chance of staying silent is never taken below 1 - this (so one hour never looks certain).
_BUSIEST_SHARE = 0.95


def hazards(rates: tuple[float, ...]) -> tuple[float, ...]:
    """
    Expected writes per hour behind the rhythm's minutes with a write (``-60 ln(1 - r/60)``).

    The refresh counts minutes with at least one write: a minute with a write a third of the
    time hides about 0.4 writes, and the chance of a silent minute is ``exp(-0.4)``, not
    ``exp(-1/3)``. Silence probabilities are taken from these rates.
    """
    return tuple(-60 * math.log(1 - min(rate / 60, _BUSIEST_SHARE)) for rate in rates)


def silence_probability(expected: float, pace: tuple[float, float]) -> float:
    """
    The chance of no write while the rhythm expects ``expected`` writes, on a day like today.

    A day is busier or calmer than the rhythm by a factor the session's pace estimates: the
    minutes with a write counted before the silence (``pace[0]``) against what the rhythm
    expected for them (``pace[1]``), both with ``silence_day_prior`` minutes added, a Gamma
    belief about today's factor. Averaging ``exp(-factor * expected)`` over it gives the
    negative binomial ``(b / (b + expected)) ** a``: a Poisson model with the mean rate would
    call a quiet stretch on a calm day far less likely than it is (bench/DETECTION.md).
    """
    a, b = _pace_belief(pace)
    return math.exp(-a * math.log1p(expected / b))


def _pace_belief(pace: tuple[float, float]) -> tuple[float, float]:
    # A prior of 0 with nothing counted would be no belief at all (a division by zero).
    prior = max(config.silence_day_prior(), 0.1)
    counted = min(pace[0], pace[1] * config.silence_pace_cap())
    return counted + prior, pace[1] + prior


def silence_thresholds(pace: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Expected writes (:func:`hazards`) at which a silence becomes a WARN and a FAIL."""
    a, b = _pace_belief(pace)
    return tuple(
        b * math.expm1(-math.log(probability) / a)
        for probability in (
            config.silence_warning_probability(),
            config.silence_failure_probability(),
        )
    )


def silence_rhythm(facts: SessionFacts, history: SessionHistory, now: datetime) -> Verdict | None:
    """
    WARN, then FAIL: a silence the session's own rhythm makes unlikely.

    Follows ``src/Defaults/index.ts`` and ``src/Socket/socket.ts`` as the flat ``silence``
    rule does (the keepalive writes nothing; keys are written as messages are encrypted and
    decrypted), and ``shared/baileys-facts.md``: only the session's own rhythm tells a quiet
    salon from a dead one. The rhythm's minutes with a write per hour of the week give the
    writes expected since the last one (:func:`hazards`); :func:`silence_probability` turns
    them into the chance of such a silence on a day like today. WARN below
    ``silence_warning_probability``, FAIL below ``silence_failure_probability``. A salon quiet
    every night expects nothing at night and is not flagged then.
    """
    if history.rates is None or not facts.paired or facts.last_write is None:
        return None
    expected = expected_writes(hazards(history.rates), facts.last_write, now)
    warn_at, fail_at = silence_thresholds(history.pace)
    if expected >= fail_at:
        status = Status.FAIL
    elif expected >= warn_at:
        status = Status.WARN
    else:
        return None
    quiet = now - facts.last_write
    usual = expected_writes(history.rates, facts.last_write, now)
    return Verdict(
        "silence_rhythm",
        status,
        f"Unusual silence: nothing written for {_minutes(quiet)}, while this session usually "
        f"writes in about {usual:.0f} of those minutes (probability of such a silence today "
        f"{silence_probability(expected, history.pace):.0e}). The bot has probably lost this "
        "salon's WhatsApp connection without saying so: check the bot's logs and the salon's "
        "phone.",
    )


def next_silence_change(
    facts: SessionFacts, history: SessionHistory, now: datetime
) -> datetime | None:
    """When :func:`silence_rhythm` would next change its verdict if nothing is written."""
    if history.rates is None or not facts.paired or facts.last_write is None:
        return None
    rates = hazards(history.rates)
    expected = expected_writes(rates, facts.last_write, now)
    pending = [t for t in silence_thresholds(history.pace) if t > expected]
    if not pending or not any(rates):
        return None
    target, cursor = pending[0], now
    while expected < target and cursor < now + timedelta(weeks=5):
        hour_end = cursor.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        rate = rates[hour_index(cursor)]
        span = (hour_end - cursor).total_seconds() / 3600
        if rate > 0 and expected + rate * span >= target:
            return cursor + timedelta(hours=(target - expected) / rate)
        expected += rate * span
        cursor = hour_end
    return None


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    if minutes < 120:
        return f"{minutes:.0f} min"
    return _age(delta)


#: Every history detector; each reads the refreshes' recorded changes and the rhythm.
HISTORY_RULES: tuple[HistoryRule, ...] = (
    reconnect_loop,
    decryption_failures,
    session_rows_lost,
    paired_again,
    silence_rhythm,
)


def history_window() -> timedelta:
    """The longest window any history detector reads events from."""
    return max(
        config.reconnect_window(),
        config.decrypt_window(),
        config.rows_lost_window(),
        config.paired_again_window(),
    )


@dataclass(frozen=True)
class Judgement:
    """
    The verdict on one session.

    Attributes:
        status: the worst status of the verdicts.
        verdicts: every verdict that applies, worst first (notes last).

    """

    status: Status
    verdicts: tuple[Verdict, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        """The WARN and FAIL sentences, worst first."""
        return tuple(v.sentence for v in self.verdicts if v.status is not Status.OK)

    @property
    def notes(self) -> tuple[str, ...]:
        """Sentences that are shown but never change the status."""
        return tuple(v.sentence for v in self.verdicts if v.status is Status.OK)

    @property
    def rules(self) -> tuple[str, ...]:
        """Names of the rules that fired with WARN or FAIL, worst first."""
        return tuple(v.rule for v in self.verdicts if v.status is not Status.OK)


def judge(facts: SessionFacts, now: datetime, history: SessionHistory | None = None) -> Judgement:
    """
    Apply every rule to one session's facts, and the history detectors to its history.

    Once the session's rhythm is known (``history.rates``), :func:`silence_rhythm` replaces
    the flat :func:`silence` rule.
    """
    verdicts = [verdict for rule in RULES if (verdict := rule(facts, now)) is not None]
    if history is not None:
        if history.rates is not None:
            verdicts = [verdict for verdict in verdicts if verdict.rule != "silence"]
        verdicts += [
            verdict for rule in HISTORY_RULES if (verdict := rule(facts, history, now)) is not None
        ]
    # Stable sort: most severe first, then the order of RULES.
    verdicts.sort(key=lambda verdict: -verdict.status.severity)
    return Judgement(worst(*(v.status for v in verdicts)), tuple(verdicts))
