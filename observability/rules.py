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

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
            or ``noiseKey`` (compared in SQL by hash).
        shares_phone_with: other session ids logged in as the same number.
        salon_phone: the salon's ``companies.whatsapp_phone``, normalized (None: no signal).
        bot_connected: ``companies.whatsapp_connected`` (None: no signal).
        bot_disconnected_at: ``companies.disconnected_at`` (None: no signal).

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
    return Verdict(
        "orphan_keys",
        Status.WARN,
        "Keys exist without an auth row (creds): the session was logged out or deleted and "
        "no login can use them. Remove them with cleanup_orphan_keys.",
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
    The bot's own ``companies`` flags say the salon's WhatsApp is disconnected.

    FAIL when ``disconnected_at`` is later than the session's last write: Baileys writes the
    creds on every successful login (``src/Socket/socket.ts``, ``CB:success`` emits
    ``creds.update``), so no write since the recorded disconnect means the bot has not logged
    in again. WARN when only ``whatsapp_connected`` is false: the store shows writes after
    any recorded disconnect, so the flag may be stale, but the bot itself says it is down.
    NULL columns are no signal.
    """
    if not facts.has_auth:
        return None
    if (
        facts.bot_disconnected_at is not None
        and facts.last_write is not None
        and facts.bot_disconnected_at > facts.last_write
    ):
        return Verdict(
            "bot_flags",
            Status.FAIL,
            f"The bot recorded a disconnect {_age(now - facts.bot_disconnected_at)} ago "
            "(companies.disconnected_at) and nothing was written since, so it has not logged "
            "in again. Check the bot's logs for this salon and reconnect it.",
        )
    if facts.bot_connected is False:
        return Verdict(
            "bot_flags",
            Status.WARN,
            "The bot's own flag says WhatsApp is disconnected (companies.whatsapp_connected "
            "is false) although the session was written after its last recorded disconnect. "
            "Check the bot's connection for this salon; if it works, the bot's flag is stale.",
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


def judge(facts: SessionFacts, now: datetime) -> Judgement:
    """Apply every rule to one session's facts."""
    verdicts = [verdict for rule in RULES if (verdict := rule(facts, now)) is not None]
    # Stable sort: most severe first, then the order of RULES.
    verdicts.sort(key=lambda verdict: -verdict.status.severity)
    return Judgement(worst(*(v.status for v in verdicts)), tuple(verdicts))
