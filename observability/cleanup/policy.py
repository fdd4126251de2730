"""
How long each key type may stay unwritten in ``whatsapp_keys`` before age may delete it, and why.

The one retention table. The bot team's job deleted any key not written for 30 days; Baileys'
own source says that destroys live keys: a pre-key, an app-state key, a LID mapping or an
identity key is written once and used for months, so its age says nothing about its use.
Only records that Baileys rewrites whenever it uses them (per-contact sessions, group sender
keys, device lists, trusted-contact tokens) have an age that means "unused": those get a
retention, long enough that a contact who comes back finds its session (a salon's clients
come back every few weeks). Everything else is never deleted for its age; whole dead
sessions (orphans, the stale spelling of a duplicated salon) have cleanups of their own.

Paths are those of WhiskeySockets/Baileys at v7.0.0-rc13 (``shared/baileys-facts.md``).

"Age" is the time since the row's last write. It is read from ``expires_at``: the bot sets it
at every write to the write time plus its TTL (:func:`observability.key_types.bot_expires_at`),
so "written before T" is ``expires_at < bot_expires_at(type, T)``: a range of the partial
index ``idx_whatsapp_keys_expires``. ``updated_at`` says the same but has no index, so each
batch would scan the table. A row without ``expires_at`` cannot be dated that way and is kept.

Settings: ``OBSERVABILITY_CLEANUP_RETENTION`` maps a key type to a period (a ``timedelta`` or a
number of days) or to None (never by age); see :func:`observability.config.cleanup_retention`.
Pre-keys and app-state sync keys cannot be given a retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from observability import config, key_types
from observability.cleanup import selection
from observability.exceptions import BadInput

#: The family of key types containing this word shares one rule (the bot's TTL does the same).
LID_MAPPING = "lid-mapping"

#: The rule of any key type this table does not name.
OTHER_TYPES = "(any other type)"

#: The name of the setting that changes retentions (for messages).
SETTING = "OBSERVABILITY_CLEANUP_RETENTION"


@dataclass(frozen=True)
class Retention:
    """
    One row of the policy: may age delete this key type, after how long unwritten, and why.

    Attributes:
        key_type: the key type (``lid-mapping`` stands for every type containing it;
            :data:`OTHER_TYPES` for the types nobody named).
        keep_for: how long since its last write a row is kept; None: never deleted for age.
        reason: why, in words an operator can check against the source.
        source: the Baileys source files the reason rests on.
        locked: True when no setting may give it a retention (pre-keys, app-state keys).
        configured: True when the retention comes from the setting, not from this table.

    """

    key_type: str
    keep_for: timedelta | None
    reason: str
    source: str
    locked: bool = False
    configured: bool = False

    @property
    def deletable(self) -> bool:
        """True when age may delete rows of this type."""
        return self.keep_for is not None

    @property
    def retention_days(self) -> float | None:
        """The retention in days (None: never by age)."""
        return None if self.keep_for is None else self.keep_for / timedelta(days=1)

    def kept_because(self) -> str:
        """Why a row of this type that a run did not delete is kept (shown per key type)."""
        if self.keep_for is None:
            return f"never deleted for its age: {self.reason}"
        return (
            f"written in the last {days_text(self.keep_for)} (or without expires_at, so its write "
            "time is unknown): still in use"
        )

    def as_dict(self) -> dict:
        """JSON-ready data (the run record, ``--json``, the README table)."""
        return {
            "key_type": self.key_type,
            "deletable_by_age": self.deletable,
            "retention_days": self.retention_days,
            "reason": self.reason,
            "baileys_source": self.source,
            "configured": self.configured,
        }


def days_text(period: timedelta) -> str:
    """``7 days``, ``1 day``, ``0.5 days``: a period as the cleanup's reasons word it."""
    days = period / timedelta(days=1)
    return f"{days:g} day{'s' if days != 1 else ''}"


#: The defaults, one row per key type. Retentions count from the row's last write.
DEFAULT_POLICY: tuple[Retention, ...] = (
    Retention(
        "pre-key",
        None,
        "uploaded to WhatsApp once and valid there until a new contact uses it; Baileys then "
        "deletes it itself (removePreKey) and never rewrites one, so a pre-key past its "
        "expires_at is still live: deleting it breaks the first message of the new contact "
        "who is handed it",
        "src/Signal/libsignal.ts (removePreKey), src/Utils/signal.ts (getNextPreKeys), "
        "src/Socket/socket.ts (uploadPreKeysToServerIfRequired)",
        locked=True,
    ),
    Retention(
        "app-state-sync-key",
        None,
        "arrives once from the phone and is never rewritten; creds.myAppStateKeyId names the "
        'one that encodes app-state patches (missing: Baileys throws "myAppStateKey not '
        'present") and each patch names the key it was encrypted with, so older keys still '
        "decode older patches",
        "src/Utils/chat-utils.ts",
        locked=True,
    ),
    Retention(
        "app-state-sync-version",
        None,
        "the version and hash of one app-state collection, rewritten only when that "
        "collection changes (some change a few times a year); losing one forces a full "
        "resync of the collection",
        "src/Socket/chats.ts (resyncAppState), src/Utils/chat-utils.ts",
    ),
    Retention(
        LID_MAPPING,
        None,
        "a contact's phone-number-to-LID mapping, written once when learned and skipped when "
        "already stored, yet read at every message: session addresses resolve through it "
        "(resolveLIDSignalAddress), so its age says nothing about its use",
        "src/Signal/lid-mapping.ts (storeLIDPNMappings), src/Signal/libsignal.ts",
    ),
    Retention(
        "identity-key",
        None,
        "a contact's identity key, saved at first contact (trust on first use) and rewritten "
        "only when it changes; Baileys compares it to notice a changed identity and reset the "
        "session (saveIdentity), so its age says nothing about its use",
        "src/Signal/libsignal.ts (saveIdentity), src/Types/Auth.ts",
    ),
    Retention(
        "session",
        timedelta(days=90),
        "rewritten at every message encrypted or decrypted with that contact (storeSession), "
        "so 90 days unwritten means no message either way for three months, longer than a "
        "salon client's usual gap between visits (the bot team used 30); deleting it costs the "
        "contact's next message a retry receipt and a new session from a pre-key",
        "src/Signal/libsignal.ts (storeSession), src/Socket/messages-recv.ts (retry receipts)",
    ),
    Retention(
        "sender-key",
        timedelta(days=90),
        "a group sender's key, rewritten whenever a group message is sent or received with it "
        "(storeSenderKey); 90 days unwritten means that sender was silent in the group for "
        "three months; losing it costs its next group message a retry",
        "src/Signal/libsignal.ts (storeSenderKey), src/Socket/messages-recv.ts",
    ),
    Retention(
        "sender-key-memory",
        timedelta(days=90),
        "which devices of a group already hold our sender key, rewritten at every send to "
        "the group; losing it only makes Baileys send the sender key to every device again",
        "src/Socket/messages-send.ts",
    ),
    Retention(
        "device-list",
        timedelta(days=90),
        "a contact's device list, rewritten each time Baileys fetches it to send to that "
        "contact (its in-memory copy lasts 5 minutes); kept as long as the sessions it helps "
        "migrate to LID addresses (migrateSession); lost, it is fetched again at the next send",
        "src/Socket/messages-send.ts, src/Signal/libsignal.ts (migrateSession), "
        "src/Defaults/index.ts (USER_DEVICES)",
    ),
    Retention(
        "tctoken",
        timedelta(days=60),
        "a contact's trusted-contact token; Baileys itself treats a token older than four "
        "weekly buckets (about 28 days) as expired and prunes it, so 60 days unwritten is "
        "twice past Baileys' own window",
        "src/Utils/tc-token-utils.ts (isTcTokenExpired), src/Socket/messages-recv.ts",
    ),
)

#: The rule of every type the table does not name (new Baileys types included).
DEFAULT_OTHER = Retention(
    OTHER_TYPES,
    None,
    "a key type this policy does not know (Baileys adds types: v7 added identity-key, "
    "lid-mapping, device-list, tctoken), so what losing one costs is unknown",
    "src/Types/Auth.ts (SignalDataTypeMap)",
)


class Policy:
    """
    The retention of every key type at one moment: the defaults with the setting applied.

    Args:
        rules: one :class:`Retention` per key type (and :data:`OTHER_TYPES`).
        now: the moment ages are measured from.

    """

    def __init__(self, rules: tuple[Retention, ...], now: datetime) -> None:
        self.rules = rules
        self.now = now
        self._by_type = {rule.key_type: rule for rule in rules}

    def for_type(self, key_type: str) -> Retention:
        """The rule of one key type (``lid-mapping`` variants share that rule)."""
        rule = self._by_type.get(key_type)
        if rule is None and LID_MAPPING in key_type:
            rule = self._by_type[LID_MAPPING]
        return rule or self._by_type[OTHER_TYPES]

    def written_before(self, rule: Retention) -> datetime:
        """The write time before which rows of a deletable rule may go."""
        return self.now - rule.keep_for

    def expires_cutoff(self, rule: Retention) -> datetime:
        """``expires_at`` below which a row of ``rule``'s type was written before its cutoff."""
        return key_types.bot_expires_at(rule.key_type, self.written_before(rule))

    def due_sql(self, table: str) -> tuple[str, list]:
        """
        The SQL condition "age may delete this row now", and its parameters.

        ``expires_at`` below the highest cut-off (an index range) and below its own type's
        cut-off. The deleting statement repeats it, so a row the bot rewrote meanwhile (a
        new ``expires_at``) is kept. Exact types come before the ``lid-mapping`` family,
        which comes before :data:`OTHER_TYPES`, as in :meth:`for_type`.
        """
        cases, params = [], []
        for rule in self.rules:  # every named type, so a kept one never falls into ELSE
            if rule.key_type in _FAMILIES:
                continue
            cases.append(f"WHEN {table}.key_type = %s THEN %s::timestamptz")
            params += [rule.key_type, self._cutoff_or_none(rule)]
        family = self._by_type[LID_MAPPING]
        cases.append(f"WHEN strpos({table}.key_type, %s) > 0 THEN %s::timestamptz")
        params += [LID_MAPPING, self._cutoff_or_none(family)]
        cases.append("ELSE %s::timestamptz")
        params.append(self._cutoff_or_none(self._by_type[OTHER_TYPES]))
        cutoffs = [self.expires_cutoff(rule) for rule in self.rules if rule.deletable]
        if not cutoffs:
            return "false", []
        return (
            f"{table}.expires_at < %s::timestamptz "
            f"AND {table}.expires_at < (CASE {' '.join(cases)} END)",
            [max(cutoffs), *params],
        )

    def _cutoff_or_none(self, rule: Retention) -> datetime | None:
        return self.expires_cutoff(rule) if rule.deletable else None

    def as_list(self) -> list[dict]:
        """Every rule as JSON-ready data, in table order."""
        return [rule.as_dict() for rule in self.rules]


_FAMILIES = (LID_MAPPING, OTHER_TYPES)


def current(now: datetime) -> Policy:
    """
    The policy in force: :data:`DEFAULT_POLICY` with ``OBSERVABILITY_CLEANUP_RETENTION`` applied.

    Raises:
        BadInput: the setting is malformed or gives pre-keys or app-state sync keys a
            retention (see :func:`problems`).

    """
    rules = {rule.key_type: rule for rule in (*DEFAULT_POLICY, DEFAULT_OTHER)}
    for key_type, value in config.cleanup_retention().items():
        key_type = str(key_type)
        keep_for = _period(key_type, value)
        base = rules.get(key_type)
        if base is not None and base.locked:
            raise BadInput(
                f"{SETTING} cannot give {key_type!r} a retention: it is never deleted for its "
                f"age ({base.reason}; {base.source})."
            )
        if base is None:
            base = Retention(key_type, None, DEFAULT_OTHER.reason, DEFAULT_OTHER.source)
        reason = f"set by {SETTING}; the default's ground: {base.reason}"
        rules[key_type] = Retention(key_type, keep_for, reason, base.source, configured=True)
    other = rules.pop(OTHER_TYPES)
    return Policy((*rules.values(), other), now)


def _period(key_type: str, value) -> timedelta | None:
    """A retention from the setting: a timedelta, a number of days, or None (never)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise BadInput(
            f"{SETTING}[{key_type!r}] must be a timedelta, a number of days or None, "
            f"not {value!r}."
        )
    period = value if isinstance(value, timedelta) else timedelta(days=value)
    if period < timedelta(days=1):
        raise BadInput(
            f"{SETTING}[{key_type!r}] must be at least one day (got {period}); use None for never."
        )
    return period


def problems() -> list[str]:
    """What is wrong with the setting, for the system check (empty when it is fine)."""
    from django.utils import timezone

    try:
        current(timezone.now())
    except BadInput as error:
        return [error.message]
    return []


# --- Orphan keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrphanGrace:
    """
    The orphan-key cleanup's grace: how long a key without an auth row must be unwritten.

    A session being paired writes keys before its ``whatsapp_auth`` row (``getNextPreKeys`` in
    ``src/Utils/signal.ts`` stores the pre-keys first and only then returns the creds update
    the bot saves), so a key without an auth row is an orphan only once it has been unwritten
    for the grace. ``cleanup_orphan_keys`` deletes by :attr:`cutoff`; the overview's advice
    says when a held-back session's keys pass it (:meth:`free_at`).

    Attributes:
        period: the grace (``OBSERVABILITY_CLEANUP_ORPHAN_AGE``, default 7 days, or the
            command's ``--min-age-days``).
        now: the moment it is measured from.

    """

    period: timedelta
    now: datetime

    @property
    def cutoff(self) -> datetime:
        """Orphan keys last written before this may be deleted now."""
        return self.now - self.period

    def due(self, written: datetime | None) -> bool:
        """True when a key written at ``written`` may be deleted now (undated keys: never)."""
        return written is not None and written < self.cutoff

    def free_at(self, written: datetime) -> datetime:
        """When a key written at ``written`` passes the grace."""
        return written + self.period

    @property
    def period_text(self) -> str:
        """The grace in words (``7 days``)."""
        return days_text(self.period)


def orphan_grace(now: datetime, period: timedelta | None = None) -> OrphanGrace:
    """
    The orphan-key grace in force at ``now`` (``period`` overrides the setting).

    Raises:
        BadInput: a negative period.

    """
    return OrphanGrace(selection.period(period, config.cleanup_orphan_age(), "minimum age"), now)
