"""
What each of the store's findings asks of ops, when it can be done, and what holds it back.

The overview's advice. A finding such as "keys without an auth row" is only worth an
instruction when the cleanup it names would act: the orphan cleanup's grace
(:func:`observability.cleanup.policy.orphan_grace`) keeps every key written in the last 7 days,
and the duplicates cleanup refuses a stale spelling written in the last 24 hours
(:func:`observability.cleanup.duplicates.decide`). The advice applies those same functions to
the stored snapshot (never a second copy of their rules, never a read of the bot's tables), so
"can be deleted now" here means the cleanup would delete it now.

The snapshot keeps each session's newest key write, not each key's: a session whose newest
write is past the grace is wholly deletable now, while for one written within it only the
moment its last key passes the grace is known (its older keys may already go; the dry run
counts them exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q

from observability import config, moments
from observability.cleanup import policy
from observability.cleanup.duplicates import decide
from observability.cleanup.report import DuplicatePair, SessionSide
from observability.models import SessionState
from observability.sessions import StoreFinding, StoreHealth
from observability.snapshot.read import state_health

#: The commands the advice names (a dry run unless ``--apply``).
ORPHAN_COMMAND = "manage.py cleanup_orphan_keys"
DUPLICATES_COMMAND = "manage.py cleanup_duplicates"


@dataclass(frozen=True)
class Step:
    """
    One thing an operator can do about a finding, or is held back from doing.

    Attributes:
        text: what to do (or what waits), with counts and session ids, never a phone.
        command: the command that does it (shown as code), or empty.
        held_until: when the step becomes possible (None: possible now, or never by itself).
        held_by: what holds it back until then (empty when nothing does).

    """

    text: str
    command: str = ""
    held_until: datetime | None = None
    held_by: str = ""

    @property
    def now(self) -> bool:
        """True when the step can be taken now."""
        return not self.held_by


@dataclass(frozen=True)
class Advice:
    """
    A finding of the store with the steps it asks for.

    Attributes:
        finding: the store's finding (status, what is wrong, its generic action).
        steps: what can be done now and what waits, in that order.
        url: an admin page where the steps can be taken, when there is one.

    """

    finding: StoreFinding
    steps: tuple[Step, ...] = field(default_factory=tuple)
    url: str = ""

    @property
    def actionable(self) -> bool:
        """True when at least one step can be taken now."""
        return any(step.now for step in self.steps)


def store_advice(store: StoreHealth, now: datetime) -> list[Advice]:
    """
    The store's findings, worst first, each with the steps it asks for as of ``now``.

    Orphan keys and duplicated salons get their cleanup's verdict on the stored snapshot (two
    narrow reads of the project's own database, whatever the number of sessions); every other
    finding keeps its own action, which can be taken now.
    """
    # One read of the candidates for both cleanups, whichever findings there are.
    states = list(_candidates())
    advice = []
    for finding in store.findings:
        if finding.cause == "orphan_sessions":
            steps = orphan_steps(now, states)
        elif finding.cause == "one_login_twice":
            steps = (Step(finding.action), *duplicate_steps(now, states))
        else:
            steps = (Step(finding.action),)
        advice.append(Advice(finding, tuple(steps)))
    return advice


def _candidates():
    """The stored sessions either cleanup may act on: keys-only, or one of two spellings."""
    return SessionState.objects.filter(
        Q(has_auth=False, total_keys__gt=0) | Q(is_duplicate=True)
    ).order_by("session_id")


def orphan_steps(now: datetime, states: list[SessionState] | None = None) -> tuple[Step, ...]:
    """
    What the orphan-key cleanup would do now with the stored keys-only sessions, and when.

    Sessions whose newest key was written before the grace's cut-off: every key can go now.
    Sessions written within the grace: their last key passes it at its write plus the grace.
    Sessions without a dated key: the cleanup never deletes them (no ``updated_at``).
    """
    grace = policy.orphan_grace(now)
    states = _candidates() if states is None else states
    rows = [
        (state.session_id, state.total_keys, state.newest_key_write)
        for state in states
        if not state.has_auth and state.total_keys > 0
    ]
    due, held, undated = [], [], []
    for session_id, keys, written in rows:
        if written is None:
            undated.append((session_id, keys, written))
        elif grace.due(written):
            due.append((session_id, keys, written))
        else:
            held.append((session_id, keys, written))
    steps: list[Step] = []
    if due:
        steps.append(
            Step(
                f"{_keys(due)} of {_sessions(due)} ({_ids(due)}) were last written more than "
                f"{grace.period_text} ago and can be deleted now: run the dry run, then the "
                "same with --apply.",
                command=ORPHAN_COMMAND,
            )
        )
    if held:
        free_at = grace.free_at(max(written for _, _, written in held))
        steps.append(
            Step(
                f"{_keys(held)} of {_sessions(held)} ({_ids(held)}): those written in the last "
                f"{grace.period_text} wait",
                held_until=free_at,
                held_by=(
                    f"the orphan cleanup's grace of {grace.period_text} "
                    "(OBSERVABILITY_CLEANUP_ORPHAN_AGE): a session being paired writes its "
                    "keys before its auth row"
                ),
            )
        )
        if not due:
            steps.append(
                Step(
                    "Their keys written before "
                    f"{moments.text(grace.cutoff, now)} may already go: the dry run counts them.",
                    command=ORPHAN_COMMAND,
                )
            )
    if undated:
        steps.append(
            Step(
                f"{_keys(undated)} of {_sessions(undated)} ({_ids(undated)}) have no write time",
                held_by="the orphan cleanup keeps keys it cannot date (no updated_at): "
                "remove them by hand if the bot no longer uses the session",
            )
        )
    return tuple(steps)


def duplicate_steps(now: datetime, states: list[SessionState] | None = None) -> tuple[Step, ...]:
    """
    What the duplicates cleanup would do now with each salon stored under both spellings.

    The cleanup's verdict on every salon stored under both spellings, from the
    snapshot: which spelling it would remove now, until when it waits, or why it refuses.
    """
    min_idle = config.cleanup_duplicate_min_idle()
    sides: dict[int, dict[str, SessionSide]] = {}
    states = _candidates() if states is None else states
    for state in (s for s in states if s.is_duplicate and s.salon_id is not None):
        health = state_health(state)
        sides.setdefault(state.salon_id, {})[state.spelling] = SessionSide(
            session_id=state.session_id,
            # The snapshot keeps the auth row's last write, not its creation: the decision
            # reads only whether a row exists and when it was last written.
            auth_created_at=health.auth_updated_at if health.has_auth else None,
            auth_updated_at=health.auth_updated_at,
            keys=dict(health.key_counts),
            total_keys=health.total_keys,
            newest_key_write=health.newest_key_write,
        )
    steps = []
    for salon_id, by_spelling in sorted(sides.items()):
        if set(by_spelling) != {"bare", "prefixed"}:
            continue
        pair = DuplicatePair(salon_id, by_spelling["bare"], by_spelling["prefixed"])
        decide(pair, now, min_idle)
        command = f"{DUPLICATES_COMMAND} --salon {salon_id}"
        if pair.verdict == "remove-stale":
            steps.append(
                Step(
                    f"Salon {salon_id}: the duplicates cleanup removes the stale {pair.stale!r} "
                    f"and keeps {pair.live!r} ({pair.reason}); run the dry run, then --apply.",
                    command=command,
                )
            )
        elif pair.held_until is not None:
            steps.append(
                Step(
                    f"Salon {salon_id}: the duplicates cleanup can decide",
                    command=command,
                    held_until=pair.held_until,
                    held_by=(
                        f"the duplicates cleanup's rule: {pair.reason} "
                        "(OBSERVABILITY_CLEANUP_DUPLICATE_MIN_IDLE)"
                    ),
                )
            )
        else:
            steps.append(
                Step(
                    f"Salon {salon_id}: the duplicates cleanup will not choose a side",
                    held_by=(
                        f"the duplicates cleanup's rule: {pair.reason}; decide by hand which "
                        "spelling the bot uses"
                    ),
                )
            )
    return tuple(steps)


def _keys(rows) -> str:
    total = sum(keys for _, keys, _ in rows)
    return f"{total:,} key{'s' if total != 1 else ''}"


def _sessions(rows) -> str:
    return f"{len(rows)} session{'s' if len(rows) != 1 else ''}"


def _ids(rows, limit: int = 5) -> str:
    ids = [session_id for session_id, _, _ in rows]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more
