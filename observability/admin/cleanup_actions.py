"""
The orphan-key and twin-spelling cleanups as session actions: a recorded dry run, then a queue.

Like the expired-keys action (:mod:`observability.admin.cleanup`): the first step is a dry run
by the very service the commands call (recorded as a ``CleanupRun`` by this user, run in the
web process under its read-only bot role: counting needs only SELECT); only a confirmation
naming that dry run queues the applied run with django-q2, whose worker holds the cleanup
role and runs it through the same engine (batched, a transaction per batch, recorded).
The actions are offered only to users with the cleanup permission.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.template.response import TemplateResponse

from observability import config, session_ids
from observability.admin.cleanup import (
    preview_rows,
    previewed_run,
    started_by,
)
from observability.cleanup import duplicates as duplicate_rules
from observability.cleanup.backup import TABLES as BACKUP_TABLES
from observability.cleanup.policy import days_text
from observability.exceptions import ObservabilityError
from observability.models import CleanupRun

#: Why a pair was decided as it was, in the words the confirmation page shows (by rule).
RULE_EXPLAINED = {
    duplicate_rules.RULE_OLDER_WRITE: (
        "The stale side is the spelling whose newest write (its auth row or any key) is the "
        "older one; it has been unwritten for at least the minimum idle time, and the live "
        "side keeps a whatsapp_auth row."
    ),
    duplicate_rules.RULE_UNDATED: (
        "Refused: a side has no dated write (no updated_at), so which one is stale cannot be told."
    ),
    duplicate_rules.RULE_SAME_INSTANT: (
        "Refused: both spellings were last written at the same instant."
    ),
    duplicate_rules.RULE_STILL_WRITTEN: (
        "Refused: the older spelling was written within the minimum idle time; the bot may "
        "still be writing both."
    ),
    duplicate_rules.RULE_ONLY_CREDENTIALS: (
        "Refused: the newer spelling has no whatsapp_auth row; removing the older one would "
        "remove the salon's only credentials."
    ),
}


#: Rules whose reason says no more than their explanation.
_SELF_EXPLAINED = (duplicate_rules.RULE_UNDATED, duplicate_rules.RULE_SAME_INSTANT)


def _context(modeladmin, request, **extra) -> dict:
    return {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        **extra,
    }


def _unconfirmed(modeladmin, request) -> None:
    modeladmin.message_user(
        request,
        "Nothing was queued: confirm the cleanup on its dry-run page, shown again here.",
        messages.WARNING,
    )


# --- Orphan keys -----------------------------------------------------------------------------


@admin.action(
    description="Clean up orphan keys of the selected sessions (dry run first)",
    permissions=["cleanup"],
)
def clean_orphan_keys(modeladmin, request, queryset):
    """
    Show what the orphan cleanup would delete now and what its grace period holds back.

    Confirming (with this user's dry run of the same sessions) queues
    ``observability.tasks.cleanup_orphan_keys_task`` with the dry run's moment, so the grace
    period counts back from the moment the page showed.
    """
    from django_q.tasks import async_task

    from observability import cleanup, tasks

    selected = sorted(queryset.values_list("pk", flat=True))
    if request.POST.get("post") == "yes":
        run = previewed_run(request, "orphan_keys", "session_ids", selected)
        if run is None or not run.total_seen:
            _unconfirmed(modeladmin, request)
        else:
            task_id = async_task(
                tasks.CLEANUP_ORPHAN_KEYS,
                sessions=selected,
                now=run.parameters["now"],
                started_by=started_by(request),
                task_name=f"cleanup orphan keys of {len(selected)} session(s)",
            )
            modeladmin.message_user(
                request,
                f"Queued the cleanup of {run.total_seen} orphan key(s) of {len(selected)} "
                f"session(s) (task {task_id}). Its result appears under Cleanup runs.",
                messages.SUCCESS,
            )
            return None
    try:
        preview = cleanup.cleanup_orphan_keys(sessions=selected, started_by=started_by(request))
    except ObservabilityError as error:
        modeladmin.message_user(request, error.message, messages.ERROR)
        return None
    rows = preview_rows(preview)
    context = _context(
        modeladmin,
        request,
        title="Clean up orphan keys?",
        session_ids=selected,
        rows=rows,
        total=preview.total_seen,
        grace=preview.grace,
        grace_text=days_text(preview.grace.grace),
        cutoff=_moment(preview.parameters["cutoff"]),
        kept_reasons=preview.kept_reasons,
        batch_size=config.cleanup_batch_size(),
        preview_run_id=preview.run_id,
        action_name="clean_orphan_keys",
    )
    return TemplateResponse(request, "admin/observability/cleanup_orphans_confirm.html", context)


def _moment(iso: str):
    from datetime import datetime

    return datetime.fromisoformat(iso)


# --- Twin spellings --------------------------------------------------------------------------


@admin.action(
    description="Remove the stale spelling of the selected salons (dry run first)",
    permissions=["cleanup"],
)
def clean_duplicate_spellings(modeladmin, request, queryset):
    """
    Show, per salon stored under both spellings, the stale side, why, and its backup's content.

    Confirming (with this user's dry run of the same salons) queues
    ``observability.tasks.cleanup_duplicates_task`` with the stale sides that dry run named:
    a pair decided otherwise by then is refused, never removed.
    """
    from django_q.tasks import async_task

    from observability import cleanup, tasks

    salons = sorted(
        {
            parsed.salon_id
            for parsed in map(session_ids.describe, queryset.values_list("pk", flat=True))
            if parsed.salon_id is not None
        }
    )
    if not salons:
        modeladmin.message_user(
            request,
            "None of the selected sessions names a salon (962302 or company_962302): "
            "there is no twin spelling to compare.",
            messages.ERROR,
        )
        return None
    if request.POST.get("post") == "yes":
        run = previewed_run(request, "duplicates", "salon_ids", salons)
        if run is None or not run.total_seen:
            _unconfirmed(modeladmin, request)
        else:
            task_id = async_task(
                tasks.CLEANUP_DUPLICATES,
                salons=salons,
                confirmed_stale=sorted(run.rows_seen),
                started_by=started_by(request),
                task_name=f"remove the stale spelling of {len(run.rows_seen)} salon(s)",
            )
            modeladmin.message_user(
                request,
                f"Queued the removal of {', '.join(sorted(run.rows_seen))} (task {task_id}), "
                "each backed up first. Its result appears under Cleanup runs.",
                messages.SUCCESS,
            )
            return None
    try:
        preview = cleanup.cleanup_duplicates(salons=salons, started_by=started_by(request))
    except ObservabilityError as error:
        modeladmin.message_user(request, error.message, messages.ERROR)
        return None
    min_idle = timedelta(hours=preview.parameters["min_idle_hours"])
    now = _moment(preview.parameters["now"])
    paired = {pair.salon_id for pair in preview.duplicates}
    context = _context(
        modeladmin,
        request,
        title="Remove the stale spelling?",
        salon_ids=salons,
        session_ids=sorted(queryset.values_list("pk", flat=True)),
        pairs=[_pair_view(pair) for pair in preview.duplicates],
        single=[salon for salon in salons if salon not in paired],
        refused=preview.outcome == CleanupRun.Outcome.REFUSED,
        refusal=CleanupRun.objects.get(pk=preview.run_id).error,
        total=preview.total_seen,
        min_idle_text=_hours_text(min_idle),
        idle_before=now - min_idle,
        backup_dir=config.cleanup_backup_dir(),
        preview_run_id=preview.run_id,
        action_name="clean_duplicate_spellings",
    )
    return TemplateResponse(
        request, "admin/observability/cleanup_duplicates_confirm.html", context
    )


def _hours_text(period: timedelta) -> str:
    hours = period / timedelta(hours=1)
    return f"{hours:g} hour{'s' if hours != 1 else ''}"


def _pair_view(pair) -> dict:
    """What the page shows of one pair: both sides, the rule, and the stale side's backup."""
    sides = [pair.bare, pair.prefixed]
    stale = next((side for side in sides if side.session_id == pair.stale), None)
    backup = None
    if stale is not None:
        backup = [
            (BACKUP_TABLES[0], 1 if stale.has_auth else 0, ""),
            (
                BACKUP_TABLES[1],
                stale.total_keys,
                ", ".join(f"{t} {n}" for t, n in sorted(stale.keys.items())),
            ),
        ]
    return {
        "salon_id": pair.salon_id,
        "sides": sides,
        "stale": pair.stale,
        "live": pair.live,
        "verdict": pair.verdict,
        "rule": pair.rule,
        "explained": RULE_EXPLAINED.get(pair.rule, ""),
        "reason": pair.reason,
        # The reason's own words, when they add to the rule's (names, ages).
        "detail": "" if pair.rule in _SELF_EXPLAINED else pair.reason,
        "held_until": pair.held_until,
        "backup": backup,
    }


def _register_session_actions() -> None:
    """Offer both actions on the sessions changelist (``cleanup.has_cleanup_permission``)."""
    from observability.admin.sessions import SessionAdmin

    for action in (clean_orphan_keys, clean_duplicate_spellings):
        if action not in SessionAdmin.actions:
            SessionAdmin.actions = [*SessionAdmin.actions, action]


_register_session_actions()
