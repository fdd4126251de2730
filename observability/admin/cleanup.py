"""Cleanup in the admin: the run records (read-only) and the queue-cleanup session action."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from observability import config
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


def preview_rows(report) -> list[tuple[str, str, int, int]]:
    """A dry run's counts as rows: (session, key type, rows to delete, rows kept)."""
    pairs = {
        (session_id, key_type)
        for counts in (report.rows_seen, report.rows_kept)
        for session_id, by_type in counts.items()
        for key_type in by_type
    }
    return [
        (
            session_id,
            key_type,
            report.rows_seen.get(session_id, {}).get(key_type, 0),
            report.rows_kept.get(session_id, {}).get(key_type, 0),
        )
        for session_id, key_type in sorted(pairs)
    ]


def started_by(request) -> str:
    """``admin:<username>``: who queued it, for the run record."""
    return f"admin:{request.user.get_username()}"


@admin.action(description="Queue cleanup of expired keys for the selected sessions")
def queue_expired_keys_cleanup(modeladmin, request, queryset):
    """
    Show the dry-run counts of the selected sessions, then queue the cleanup when confirmed.

    Only a confirmation carrying this user's dry run of the same sessions queues anything
    (:func:`_previewed`); any other ``post=yes`` gets the dry-run page first.

    The first step is itself a recorded dry run (the counts shown are exactly what the
    queued run would delete now); the confirmation queues
    ``observability.tasks.cleanup_expired_keys_task`` with django-q2, whose result shows up
    in the cleanup runs and in django-q2's own admin.
    """
    from django_q.tasks import async_task

    from observability import cleanup, tasks

    if not request.user.has_perm(CLEANUP_PERMISSION):
        modeladmin.message_user(
            request,
            "You may not start cleanups (permission “Can add cleanup run” is needed).",
            messages.ERROR,
        )
        return None
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


@admin.register(CleanupRun)
class CleanupRunAdmin(ReadOnlyModelAdmin):
    """Every cleanup run, dry or applied, newest first; nothing here can be changed."""

    list_display = (
        "started",
        "operation",
        "mode",
        "outcome",
        "started_by",
        "total_seen",
        "total_deleted",
        "total_kept",
        "duration",
    )
    list_filter = ("operation", "outcome", "dry_run")
    search_fields = ("started_by", "error", "backup_path")
    date_hierarchy = "started_at"
    fields = (
        "operation",
        "mode",
        "outcome",
        "started_by",
        "started",
        "finished",
        "duration",
        "total_seen",
        "total_deleted",
        "rows_seen_pretty",
        "rows_deleted_pretty",
        "total_kept",
        "rows_kept_pretty",
        "kept_reasons_pretty",
        "parameters_pretty",
        "size_before",
        "size_after",
        "backup_path",
        "error",
    )
    readonly_fields = fields

    @admin.display(description="started", ordering="started_at")
    def started(self, obj):
        return display.when(obj.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj):
        return display.when(obj.finished_at)

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

    @admin.display(description="rows seen")
    def rows_seen_pretty(self, obj):
        return _pretty(obj.rows_seen)

    @admin.display(description="rows deleted")
    def rows_deleted_pretty(self, obj):
        return _pretty(obj.rows_deleted)

    @admin.display(description="rows kept")
    def rows_kept_pretty(self, obj):
        return _pretty(obj.rows_kept)

    @admin.display(description="why kept")
    def kept_reasons_pretty(self, obj):
        return format_html_join(
            "", "<p><strong>{}</strong>: {}</p>", sorted(obj.kept_reasons.items())
        )

    @admin.display(description="parameters")
    def parameters_pretty(self, obj):
        return _pretty(obj.parameters)


def _register_session_action() -> None:
    """Offer the action on the sessions changelist (its ``actions`` is a plain list)."""
    from observability.admin.sessions import SessionAdmin

    if queue_expired_keys_cleanup not in SessionAdmin.actions:
        SessionAdmin.actions = [*SessionAdmin.actions, queue_expired_keys_cleanup]


_register_session_action()
