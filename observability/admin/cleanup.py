"""Cleanup in the admin: the run records (read-only) and the queue-cleanup session action."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Q
from django.template.defaultfilters import filesizeformat, pluralize
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from observability import config, session_ids
from observability.admin import display
from observability.admin.base import ReadOnlyModelAdmin
from observability.exceptions import ObservabilityError
from observability.models import CleanupRun

logger = logging.getLogger(__name__)

#: The permission that lets a staff user start a cleanup from the admin (superusers have it).
CLEANUP_PERMISSION = "observability.add_cleanuprun"


#: A confirmation counts only within this long of its dry run (the counts shown are that old).
PREVIEW_VALID_FOR = timedelta(minutes=30)


def _previewed(request, session_ids: list[str]) -> bool:
    """The confirmation names this user's recent dry run of exactly these sessions."""
    return previewed_run(request, "expired_keys", "session_ids", session_ids) is not None


def previewed_run(request, operation: str, parameter: str, selection: list) -> CleanupRun | None:
    """
    This user's recent dry run of ``operation`` over ``selection`` that the form names.

    The confirmation form carries its dry run's id (``preview``): a POST that skips the dry
    run (``post=yes`` alone, or with another user's or another selection's run) gets None and
    queues nothing. ``parameter`` is the run parameter that holds the selection.
    """
    try:
        run_id = int(request.POST.get("preview", ""))
    except ValueError:
        return None
    run = CleanupRun.objects.filter(
        pk=run_id,
        operation=operation,
        dry_run=True,
        started_by=started_by(request),
        started_at__gte=timezone.now() - PREVIEW_VALID_FOR,
    ).first()
    if run is None or sorted(run.parameters.get(parameter) or []) != sorted(selection):
        return None
    return run


def breakdown(*counts: dict) -> list[tuple]:
    """
    Per-session counts side by side: ``(session id, key type, n in counts[0], n in ...)``.

    Each of ``counts`` has the run record's shape, ``{"<session id>": {"<key type>": n}}``
    (``rows_seen``, ``rows_deleted``, ``rows_kept``); a pair absent from one counts 0. Sorted
    by session id, then key type.
    """
    pairs = {
        (session_id, key_type)
        for by_session in counts
        for session_id, by_type in (by_session or {}).items()
        for key_type in by_type
    }
    return [
        (
            session_id,
            key_type,
            *((by_session or {}).get(session_id, {}).get(key_type, 0) for by_session in counts),
        )
        for session_id, key_type in sorted(pairs)
    ]


def preview_rows(report) -> list[tuple[str, str, int, int]]:
    """A dry run's counts as rows: (session, key type, rows to delete, rows kept)."""
    return breakdown(report.rows_seen, report.rows_kept)


def started_by(request) -> str:
    """``admin:<username>``: who queued it, for the run record."""
    return f"admin:{request.user.get_username()}"


@admin.action(
    description="Queue cleanup of expired keys for the selected sessions",
    permissions=["cleanup"],
)
def queue_expired_keys_cleanup(modeladmin, request, queryset):
    """
    Show the dry-run counts of the selected sessions, then queue the cleanup when confirmed.

    Offered only to holders of :data:`CLEANUP_PERMISSION` (``permissions=["cleanup"]``:
    ``SessionAdmin.has_cleanup_permission``). Only a confirmation carrying this user's dry
    run of the same sessions queues anything (:func:`_previewed`); any other ``post=yes``
    gets the dry-run page first.

    The first step is itself a recorded dry run (the counts shown are exactly what the
    queued run would delete now); the confirmation queues
    ``observability.tasks.cleanup_expired_keys_task`` with django-q2, whose result shows up
    in the cleanup runs and in django-q2's own admin.
    """
    from django_q.tasks import async_task

    from observability import cleanup, tasks

    session_ids = sorted(queryset.values_list("pk", flat=True))
    confirmed = request.POST.get("post") == "yes"
    if confirmed and not _previewed(request, session_ids):
        modeladmin.message_user(
            request,
            "Nothing was queued: confirm the cleanup on its dry-run page, shown again here.",
            messages.WARNING,
        )
    elif confirmed:
        task_id = async_task(
            tasks.CLEANUP_EXPIRED_KEYS,
            sessions=session_ids,
            started_by=started_by(request),
            task_name=f"cleanup expired keys of {len(session_ids)} session(s)",
        )
        modeladmin.message_user(
            request,
            f"Queued the cleanup of expired keys for {len(session_ids)} session(s) "
            f"(task {task_id}). Its result appears under Cleanup runs.",
            messages.SUCCESS,
        )
        return None
    try:
        preview = cleanup.cleanup_expired_keys(
            sessions=session_ids, started_by=started_by(request)
        )
    except ObservabilityError as error:
        modeladmin.message_user(request, error.message, messages.ERROR)
        return None
    rows = preview_rows(preview)
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Queue cleanup of expired keys?",
        "opts": modeladmin.model._meta,
        "session_ids": session_ids,
        "rows": rows,
        "total": preview.total_seen,
        "total_kept": preview.total_kept,
        "kept_reasons": preview.kept_reasons,
        "retention": preview.parameters["retention"],
        "batch_size": config.cleanup_batch_size(),
        "preview_run_id": preview.run_id,
        "action_name": "queue_expired_keys_cleanup",
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/observability/cleanup_confirm.html", context)


def _pretty(data) -> str:
    return format_html("<pre>{}</pre>", json.dumps(data, indent=2, sort_keys=True, default=str))


#: Salons named in a cleanup runs' row; more are summed up as "+N more".
SALONS_SHOWN = 3


@admin.register(CleanupRun)
class CleanupRunAdmin(ReadOnlyModelAdmin):
    """
    Every cleanup run, dry or applied, newest first; nothing here can be changed.

    Each row says which salons the run touched (or, dry, would touch), its outcome with the
    reason when it was refused or failed, its counts, and the tables' sizes in human units.
    """

    list_display = (
        "started",
        "run",
        "outcome_shown",
        "salons",
        "started_by",
        "rows",
        "sizes",
        "duration",
    )
    list_filter = ("outcome", "operation", "dry_run")
    search_fields = ("started_by", "error", "backup_path")
    search_help_text = (
        "A salon id (either spelling) finds the runs that counted, deleted or chose its "
        "sessions; anything else searches who started a run, its error and its backup path."
    )
    date_hierarchy = "started_at"
    fields = (
        "operation",
        "mode",
        "outcome_shown",
        "salons",
        "started_by",
        "started",
        "finished",
        "duration",
        "total_seen",
        "total_deleted",
        "total_kept",
        "per_session",
        "kept_reasons_pretty",
        "parameters_pretty",
        "size_before",
        "size_after",
        "backup_path",
    )
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        """A salon id finds the runs over its sessions (both spellings); else the text fields."""
        term = (search_term or "").strip()
        parsed = session_ids.describe(term)
        if parsed.salon_id is None:
            return super().get_search_results(request, queryset, search_term)
        spellings = session_ids.spellings(parsed.salon_id)
        return (
            queryset.filter(
                Q(rows_seen__has_any_keys=list(spellings))
                | Q(rows_deleted__has_any_keys=list(spellings))
                | Q(parameters__salon_ids__contains=[parsed.salon_id])
                | Q(parameters__session_ids__contains=[spellings[0]])
                | Q(parameters__session_ids__contains=[spellings[1]])
            ),
            False,
        )

    @admin.display(description="started", ordering="started_at")
    def started(self, obj):
        return display.when(obj.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj):
        return display.when(obj.finished_at)

    @admin.display(description="run", ordering="operation")
    def run(self, obj):
        """The operation, and whether it only counted."""
        return format_html("{}<br><small>{}</small>", obj.operation, self.mode(obj))

    @admin.display(description="outcome", ordering="outcome")
    def outcome_shown(self, obj):
        """
        The outcome, and the reason of a refused or failed run (or of pairs refused in one).

        A duplicates run whose every pair was refused is recorded ``refused`` by
        ``observability.cleanup.duplicates``; it reads so here, with the salons' reasons.
        """
        if not obj.error:
            return obj.get_outcome_display()
        return format_html(
            '<strong class="obs-outcome-{}">{}</strong><br><small>{}</small>',
            obj.outcome,
            obj.get_outcome_display(),
            obj.error,
        )

    @admin.display(description="salons")
    def salons(self, obj):
        """
        The salons whose sessions the run counted or deleted, linked to their sessions.

        Read from the run's per-session counts and its selection (``parameters``); a session
        id that names no salon (an orphan's odd spelling) is counted apart.
        """
        chosen = obj.parameters or {}
        session_ids_seen = {
            *obj.rows_seen,
            *obj.rows_deleted,
            *obj.rows_kept,
            *(chosen.get("session_ids") or ()),
        }
        parsed = [session_ids.describe(str(session_id)) for session_id in session_ids_seen]
        salon_ids = sorted(
            {found.salon_id for found in parsed if found.salon_id is not None}
            | {int(salon_id) for salon_id in chosen.get("salon_ids") or ()}
        )
        unnamed = sum(1 for found in parsed if found.salon_id is None)
        if not salon_ids and not unnamed:
            return "—"
        sessions_list = reverse("admin:observability_sessionstate_changelist")
        shown = format_html_join(
            ", ",
            '<a href="{}?q={}">{}</a>',
            ((sessions_list, salon_id, salon_id) for salon_id in salon_ids[:SALONS_SHOWN]),
        )
        more = len(salon_ids) - SALONS_SHOWN
        notes = []
        if more > 0:
            notes.append(f"+{more} more")
        if unnamed:
            notes.append(f"{unnamed} session{pluralize(unnamed)} with no salon id")
        if notes:
            return format_html("{} <small>{}</small>", shown, " · ".join(notes))
        return shown

    @admin.display(description="rows seen / deleted / kept", ordering="total_seen")
    def rows(self, obj):
        return f"{obj.total_seen} / {obj.total_deleted} / {obj.total_kept}"

    @admin.display(description="tables' size")
    def sizes(self, obj):
        """Before → after in human units (``filesizeformat``); a dry run has only before."""
        if obj.bytes_before is None:
            return "—"
        if obj.bytes_after is None:
            return filesizeformat(obj.bytes_before)
        return f"{filesizeformat(obj.bytes_before)} → {filesizeformat(obj.bytes_after)}"

    @admin.display(description="tables' size before")
    def size_before(self, obj):
        return "—" if obj.bytes_before is None else filesizeformat(obj.bytes_before)

    @admin.display(description="tables' size after")
    def size_after(self, obj):
        return "—" if obj.bytes_after is None else filesizeformat(obj.bytes_after)

    @admin.display(description="mode", ordering="dry_run")
    def mode(self, obj):
        return "dry run" if obj.dry_run else "applied"

    @admin.display(description="duration")
    def duration(self, obj):
        if obj.finished_at is None:
            return "—"
        return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"

    @admin.display(description="per session")
    def per_session(self, obj):
        """Seen, deleted and kept per session and key type, as a table."""
        rows = breakdown(obj.rows_seen, obj.rows_deleted, obj.rows_kept)
        if not rows:
            return "No rows matched."
        return format_html(
            '<table class="obs-table obs-breakdown"><thead><tr><th>session</th><th>key type</th>'
            '<th class="num">seen</th><th class="num">deleted</th><th class="num">kept</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            format_html_join(
                "",
                '<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td>'
                '<td class="num">{}</td></tr>',
                rows,
            ),
        )

    @admin.display(description="why kept")
    def kept_reasons_pretty(self, obj):
        return format_html_join(
            "", "<p><strong>{}</strong>: {}</p>", sorted(obj.kept_reasons.items())
        )

    @admin.display(description="parameters")
    def parameters_pretty(self, obj):
        return _pretty(obj.parameters)


def has_cleanup_permission(modeladmin, request) -> bool:
    """The cleanup actions' ``permissions=["cleanup"]``: the permission every cleanup needs."""
    return request.user.has_perm(CLEANUP_PERMISSION)


def _register_session_action() -> None:
    """Offer the action on the sessions changelist (its ``actions`` is a plain list)."""
    from observability.admin.sessions import SessionAdmin

    SessionAdmin.has_cleanup_permission = has_cleanup_permission
    if queue_expired_keys_cleanup not in SessionAdmin.actions:
        SessionAdmin.actions = [*SessionAdmin.actions, queue_expired_keys_cleanup]


_register_session_action()
