"""The sessions admin, read from the stored snapshot: list, session page, keys, overview."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from urllib.parse import urlencode

from defusedcsv import csv
from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, ExpressionWrapper, F, Q
from django.db.models.fields.json import KT
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from observability import moments, phones, session_ids, sessions, snapshot
from observability.admin import display
from observability.admin.base import ReadOnlyModelAdmin, refuse_unoffered_params
from observability.cleanup import advice
from observability.exceptions import (
    BadInput,
    ObservabilityError,
    SessionNotFound,
    SnapshotMissing,
)
from observability.models import SessionState
from observability.session_ids import Spelling
from observability.sessions import SessionHealth, Status
from observability.snapshot import history

#: Rows per page of the key browser.
KEYS_PER_PAGE = 100

#: "New" means first seen by a snapshot within this long.

#: The key browser's parameters: key type, expired ("yes"/"no"/""), page number.
KEYS_PARAMS = ("type", "expired", "p")
#: The ``expired`` values of the key browser: all keys, expired ones, live ones.
EXPIRED_CHOICES = {"": None, "yes": True, "no": False}
#: The session page's parameters: the changelist filters the admin carries along.
SESSION_PAGE_PARAMS = ("_changelist_filters",)


def session_url(session_id: str) -> str:
    """The admin page of one session (keys-only sessions too)."""
    return reverse("admin:observability_sessionstate_change", args=[quote(session_id)])


def keys_url(session_id: str, **params) -> str:
    """The key browser of one session, with optional filters."""
    url = reverse("admin:observability_sessionstate_keys", args=[quote(session_id)])
    query = {name: value for name, value in params.items() if value not in (None, "")}
    return f"{url}?{urlencode(query)}" if query else url


def overview_url() -> str:
    """The store overview page."""
    return reverse("admin:observability_sessionstate_overview")


def changelist_url(**params) -> str:
    """The sessions changelist, with optional filters."""
    url = reverse("admin:observability_sessionstate_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def salon_url(health: SessionHealth) -> str | None:
    """The salon's admin page, when the salon has a ``companies`` row."""
    if health.salon_pk is None:
        return None
    return reverse("admin:observability_company_change", args=[health.salon_pk])


def clients_url(salon_id: int | None) -> str | None:
    """The salon's clients in the clients changelist."""
    if salon_id is None:
        return None
    return reverse("admin:observability_client_changelist") + f"?salon={salon_id}"


# --- Filters (SQL over the stored state) ------------------------------------------------------


class _ValueFilter(admin.SimpleListFilter):
    """A filter whose value maps to one ``Q`` over the stored state."""

    def condition(self, value: str) -> Q:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(self.condition(value))


class StatusFilter(_ValueFilter):
    """OK / WARN / FAIL."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(status.value, status.value) for status in Status]

    def condition(self, value):
        return Q(status=value)


def _status_observed() -> Q:
    """
    The status began at its ``status_since``, not merely found so by the first snapshot.

    The first snapshot ever sets ``status_since`` to its own moment (the baseline): the
    status began then or earlier. A moment before the baseline comes from recorded history
    (the demo's seeded past), one after it from a change a snapshot saw.
    """
    first = snapshot.baseline()
    return ~Q(status_since=first) if first is not None else Q(pk__isnull=False)


class SinceFilter(_ValueFilter):
    """Sessions new, or whose status changed, within the last 24 hours."""

    title = "last 24 hours"
    parameter_name = "recent"

    def lookups(self, request, model_admin):
        return [("new", "new sessions"), ("changed", "status changed")]

    def condition(self, value):
        # Never what the first snapshot found: first observed, not new nor changed then.
        if value == "new":
            return Q(first_seen__gt=snapshot.new_after())
        return Q(status_since__gte=timezone.now() - snapshot.NEW_WITHIN) & _status_observed()


class SpellingFilter(_ValueFilter):
    """Bare ``962302`` or prefixed ``company_962302``."""

    title = "spelling"
    parameter_name = "spelling"

    def lookups(self, request, model_admin):
        return [
            (Spelling.BARE.value, "bare (962302)"),
            (Spelling.PREFIXED.value, "prefixed (company_962302)"),
            ("none", "neither"),
        ]

    def condition(self, value):
        return Q(spelling="" if value == "none" else value)


class DuplicateFilter(_ValueFilter):
    """Salons stored under both spellings."""

    title = "stored under both spellings"
    parameter_name = "duplicate"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def condition(self, value):
        return Q(is_duplicate=value == "yes")


class AuthFilter(_ValueFilter):
    """Sessions with an auth row, or keys only."""

    title = "auth row"
    parameter_name = "auth"

    def lookups(self, request, model_admin):
        return [("yes", "has creds"), ("no", "keys only")]

    def condition(self, value):
        return Q(has_auth=value == "yes")


class PlatformFilter(_ValueFilter):
    """``creds.platform`` (android, smba, iphone, ...)."""

    title = "platform"
    parameter_name = "platform"

    def lookups(self, request, model_admin):
        found = (
            SessionState.objects.exclude(platform="")
            .order_by("platform")
            .values_list("platform", flat=True)
            .distinct()
        )
        return [(platform, platform) for platform in found]

    def condition(self, value):
        return Q(platform=value)


# --- Actions -----------------------------------------------------------------------------------


@admin.action(description="Download the health of the selected sessions (CSV, phones masked)")
def export_health_csv(modeladmin, request, queryset):
    """
    A CSV of the selected sessions' stored health, for a ticket or a spreadsheet.

    Written with ``defusedcsv``: a salon title or session id comes from the bot's tables and
    may start with ``=``, ``+``, ``-`` or ``@``, which a spreadsheet would run as a formula
    (``=HYPERLINK(...)``) when the file is opened; such a cell is quoted with ``'``.
    """
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="session-health.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["session_id", "salon_id", "salon", "status", "since", "phone", "keys", "reasons"]
    )
    for state in queryset.order_by("session_id"):
        writer.writerow(
            [
                state.session_id,
                state.salon_id or "",
                state.salon_title,
                state.status,
                state.status_since.isoformat(),
                state.phone_masked,
                state.total_keys,
                " ".join(state.reasons),
            ]
        )
    return response


# --- The admin -------------------------------------------------------------------------------


@admin.register(SessionState)
class SessionAdmin(ReadOnlyModelAdmin):
    """
    WhatsApp sessions as of the stored snapshot, worst first: an ordinary changelist.

    Filters, search and ordering run in SQL over ``SessionState``; keys-only sessions are rows
    like the others. ``actions`` is a plain list so other modules (cleanup) can append theirs.
    """

    change_list_template = "admin/observability/session_change_list.html"
    list_display = (
        "status_badge",
        "session",
        "salon",
        "phone",
        "keys",
        "last_key_write",
        "reasons_short",
    )
    list_display_links = None
    list_filter = (
        StatusFilter,
        SinceFilter,
        AuthFilter,
        SpellingFilter,
        DuplicateFilter,
        PlatformFilter,
    )
    search_fields = ("=session_id",)
    search_help_text = (
        "Salon id (either spelling), salon title, or phone number in any spelling or its mask "
        "(7900***4567): a phone finds every number its mask matches."
    )
    list_per_page = 100
    actions = [export_health_csv]

    def get_queryset(self, request):
        """Load only the key counts of the facts: every other column shown is a column."""
        return (
            super()
            .get_queryset(request)
            .defer("facts")
            .annotate(
                key_counts=F("facts__key_counts"),
                # Seen first, or in this status, after the baseline (snapshot.new_after):
                # computed once per request, not per row.
                is_new=ExpressionWrapper(
                    Q(first_seen__gt=snapshot.new_after()), output_field=BooleanField()
                ),
                status_observed=ExpressionWrapper(_status_observed(), BooleanField()),
            )
        )

    def get_search_results(self, request, queryset, search_term):
        """
        Salon id (either spelling), exact session id, title, or phone in any spelling.

        A phone is matched on the digits its mask shows (``phones.shown``), so the search
        finds a number without being able to test the digits the page hides.
        """
        term = (search_term or "").strip()
        if not term:
            return queryset, False
        condition = Q(session_id__iexact=term) | Q(salon_title__icontains=term)
        parsed = session_ids.describe(term)
        if term.isdigit() and parsed.salon_id is not None:  # a salon number: both spellings
            condition |= Q(salon_id=parsed.salon_id)
        shown = phones.shown(term)
        if shown is not None and shown.prefix:
            # A whole number or a pasted mask matches the stored mask, never the digits: an
            # exact match on them would tell a true guess of the hidden digits from a false one.
            condition |= Q(
                phone_masked__startswith=shown.prefix, phone_masked__endswith=shown.suffix
            )
        return queryset.filter(condition), False

    # -- columns -----------------------------------------------------------------------------

    @admin.display(description="status", ordering="-severity")
    def status_badge(self, obj):
        if obj.status == Status.OK:
            return display.badge(obj.status)
        if not getattr(obj, "status_observed", True):
            # Status as the first snapshot found it: it began then or earlier.
            return format_html(
                '<span class="obs-nowrap" title="{}">{} <small>since ≥</small></span><br>{}',
                "as the first snapshot found it: it began then or earlier",
                display.badge(obj.status),
                display.when(obj.status_since),
            )
        return format_html(
            '<span class="obs-nowrap">{} <small>since</small></span><br>{}',
            display.badge(obj.status),
            display.when(obj.status_since),
        )

    @admin.display(description="session", ordering="session_id")
    def session(self, obj):
        notes = [obj.spelling or "unparsed"]
        if obj.is_duplicate:
            notes.append("⚠ twin")
        if not obj.has_auth:
            notes.append("keys only")
        if getattr(obj, "is_new", False):
            notes.append("new")
        return format_html(
            '<a href="{}"><strong>{}</strong></a><br><small>{}</small>',
            session_url(obj.session_id),
            obj.session_id,
            " · ".join(notes),
        )

    @admin.display(description="salon", ordering="salon_id")
    def salon(self, obj):
        if obj.salon_id is None:
            return "—"
        return format_html(
            "{}<br><small>{}</small>", obj.salon_id, obj.salon_title or "no companies row"
        )

    @admin.display(description="phone")
    def phone(self, obj):
        return obj.phone_masked or "—"

    @admin.display(description="keys", ordering="total_keys")
    def keys(self, obj):
        counts = getattr(obj, "key_counts", None) or {}
        breakdown = ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items()))
        return format_html('<span title="{}">{}</span>', breakdown or "no keys", obj.total_keys)

    # Not named last_write: the model's field of that name would shadow it (a long date).
    @admin.display(description="last key write", ordering="newest_key_write")
    def last_key_write(self, obj):
        if obj.newest_key_write is None:
            return "never"
        return display.when(obj.newest_key_write)

    @admin.display(description="reasons")
    def reasons_short(self, obj):
        if not obj.reasons:
            return "—"
        # The headline of the first reason (before its colon); every sentence on hover and on
        # the session page.
        more = len(obj.reasons) - 1
        return format_html(
            '<span title="{}">{}</span>{}',
            "\n".join(obj.reasons),
            display.headline(obj.reasons),
            format_html(" <small>+{} more</small>", more) if more else "",
        )

    # -- views -------------------------------------------------------------------------------

    def get_urls(self):
        """Add the overview and the key browser to the admin's URLs."""
        wrap = self.admin_site.admin_view
        custom = [
            path(
                "overview/", wrap(self.overview_view), name="observability_sessionstate_overview"
            ),
            path(
                "<path:object_id>/keys/",
                wrap(self.keys_view),
                name="observability_sessionstate_keys",
            ),
        ]
        return custom + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        """The changelist, with the snapshot's age above it."""
        extra_context = {
            **(extra_context or {}),
            "overview_url": overview_url(),
            **display.freshness_context(),
        }
        return super().changelist_view(request, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        """No history page of the admin's own: the session page shows the timeline."""
        return HttpResponseRedirect(session_url(unquote(object_id)))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The session's page: verdict and timeline from the snapshot, keys and creds live."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        if not self.has_view_permission(request):
            raise PermissionDenied
        refuse_unoffered_params(request, SESSION_PAGE_PARAMS)
        session_id = unquote(object_id)
        health = snapshot.session_health(session_id)
        state = SessionState.objects.get(session_id=session_id)
        now = timezone.now()
        detail, detail_error = None, None
        try:
            detail = sessions.session_detail(session_id, now=now)
        except SessionNotFound:
            detail_error = "The bot's tables no longer hold this session."
        except ObservabilityError as error:
            detail_error = error.message
        context = {
            **self.admin_site.each_context(request),
            **display.freshness_context(now),
            "opts": self.opts,
            "title": f"Session {session_id}",
            "subtitle": health.salon_title,
            "health": health,
            "state": state,
            # Found so by the first snapshot ever: it began then or earlier.
            "status_at_baseline": state.status_since == snapshot.baseline(),
            "detail": detail,
            "detail_error": detail_error,
            "badge": display.badge(health.status),
            "last_write": display.when(health.newest_key_write, now),
            "auth_write": display.when(health.auth_updated_at, now),
            "expired_share": display.percent(health.expired_share),
            "timelines": [
                _timeline_context(history.timeline(session_id, days=days, now=now))
                for days in (7, 30)
            ],
            "incidents": [
                # The duration as ops read it (``2 h``), not a timedelta with microseconds.
                {
                    "start": i.start,
                    "end": i.end,
                    "duration": display.duration(i.duration),
                    "cause": display.headline(i.reasons),
                    "reasons": "\n".join(i.reasons),
                }
                for i in history.incidents(
                    since=now - timedelta(days=30), now=now, session_id=session_id
                )
            ],
            "keys_url": keys_url(session_id),
            "twin_url": session_url(health.twin_session_id) if health.twin_session_id else None,
            "salon_url": salon_url(health),
            "clients_url": clients_url(health.salon_id),
            "overview_url": overview_url(),
            "changelist_url": changelist_url(),
        }
        if detail is not None:
            context.update(
                writes_chart=display.bars(detail.writes_per_day),
                expiries_chart=display.bars(detail.expiries_per_day),
                key_types=[
                    {
                        "stats": stats,
                        "oldest": display.when(stats.oldest_write, now),
                        "newest": display.when(stats.newest_write, now),
                        "next_expiry": stats.next_expiry,
                        "url": keys_url(session_id, type=stats.key_type),
                        "expired_url": keys_url(session_id, type=stats.key_type, expired="yes"),
                    }
                    for stats in detail.key_types
                ],
            )
        return TemplateResponse(request, "admin/observability/session.html", context)

    def keys_view(self, request, object_id):
        """The key browser of one session: type, id (phones masked), dates, value size only."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        refuse_unoffered_params(request, KEYS_PARAMS)
        session_id = unquote(object_id)
        key_type = request.GET.get("type") or None
        expired_param = request.GET.get("expired", "")
        if expired_param not in EXPIRED_CHOICES:
            raise BadInput("Expired must be 'yes', 'no' or empty (all keys).")
        expired = EXPIRED_CHOICES[expired_param]
        try:
            page_number = int(request.GET.get("p", "1"))
        except ValueError as error:
            raise BadInput("The page number must be a whole number.") from error
        if page_number < 1:
            raise BadInput("The page number must be 1 or more.")
        # The verdict (badge, counts) as of the snapshot, with its age; the keys are live.
        freshness = display.freshness_context()
        try:
            health = snapshot.session_health(session_id)
        except SessionNotFound:  # stored since the last snapshot: the key browser is live anyway
            health = sessions.get_session(session_id)
            freshness = {}
        page = sessions.browse_keys(
            session_id,
            key_type=key_type,
            expired=expired,
            page=page_number,
            per_page=KEYS_PER_PAGE,
        )

        def page_link(number: int) -> str:
            return keys_url(session_id, type=key_type, expired=expired_param, p=number)

        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Keys of session {session_id}",
            **freshness,
            "from_snapshot": bool(freshness),
            "health": health,
            "badge": display.badge(health.status),
            "page": page,
            "key_type": key_type or "",
            "expired": expired_param,
            "key_types": list(health.key_counts),
            "session_url": session_url(session_id),
            "changelist_url": changelist_url(),
            "type_links": [
                ("All types", keys_url(session_id, expired=expired_param), key_type is None)
            ]
            + [
                (kind, keys_url(session_id, type=kind, expired=expired_param), kind == key_type)
                for kind in health.key_counts
            ],
            "expired_links": [
                (label, keys_url(session_id, type=key_type, expired=value), value == expired_param)
                for label, value in (("All", ""), ("Expired", "yes"), ("Live", "no"))
            ],
            "previous_url": page_link(page.page - 1) if page.page > 1 else None,
            "next_url": page_link(page.page + 1) if page.page < page.pages else None,
            "first_row": (page.page - 1) * page.per_page + 1 if page.total else 0,
            "last_row": (page.page - 1) * page.per_page + len(page.rows),
        }
        return TemplateResponse(request, "admin/observability/keys.html", context)

    #: The admin actions that take a finding's steps (``observability.admin.cleanup_actions``),
    #: and the sessions list filter that shows the sessions they apply to.
    ADVICE_ACTIONS = {
        "orphan_sessions": ("clean_orphan_keys", {"auth": "no"}),
        "one_login_twice": ("clean_duplicate_spellings", {"duplicate": "yes"}),
    }

    def _advice_with_actions(self, request, found: list) -> list:
        """Link each piece of advice to the sessions list where its admin action is offered."""
        offered = self.get_actions(request)
        linked = []
        for item in found:
            action, params = self.ADVICE_ACTIONS.get(item.finding.cause, (None, {}))
            if action in offered:
                item = dataclasses.replace(item, url=changelist_url(**params))
            linked.append(item)
        return linked

    def overview_view(self, request):
        """The whole store as of the snapshot: counts, findings, worst ten, incidents, flapping."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        refuse_unoffered_params(request, ())
        now = timezone.now()
        try:
            store = snapshot.store_health()
        except SnapshotMissing:  # the banner says how to take the first one
            store = sessions.summarize([])
        states = SessionState.objects.defer("facts")
        since_30d = now - timedelta(days=30)
        incidents = history.incidents(since=since_30d, now=now)
        mttr = history.median_time_to_recovery(days=30, now=now)
        # Ongoing incidents are the failing sessions listed above them: only ended ones here.
        ended = [incident for incident in incidents if not incident.ongoing]
        context = {
            **display.freshness_context(now),
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "WhatsApp session store overview",
            "store": store,
            "advice": self._advice_with_actions(request, advice.store_advice(store, now)),
            "badge": display.badge(store.status),
            "by_status": [
                (display.badge(status), count, changelist_url(status=status.value))
                for status, count in store.sessions_by_status.items()
            ],
            "duplicates": [
                (salon_id, changelist_url(q=str(salon_id)))
                for salon_id in store.duplicate_salon_ids
            ],
            "orphans": [(sid, session_url(sid)) for sid in store.orphan_session_ids],
            "worst": [
                {
                    "health": health,
                    "badge": display.badge(health.status),
                    "url": session_url(health.session_id),
                    "last_write": display.when(health.newest_key_write, now),
                    "headline": display.headline(health.reasons),
                    "more": max(0, len(health.reasons) - 1),
                }
                for health in store.worst
            ],
            "reason_sections": [
                _reason_section(states, store, Status.FAIL, "failing", "Failing since"),
                _reason_section(states, store, Status.WARN, "warning", "Warning since"),
            ],
            "new_sessions": [
                {"state": state, "url": session_url(state.session_id), "badge": state.status}
                for state in states.filter(first_seen__gt=snapshot.new_after(now)).order_by(
                    "-first_seen"
                )[:20]
            ],
            "new_url": changelist_url(recent="new"),
            "incidents": [
                {
                    "incident": incident,
                    "url": session_url(incident.session_id),
                    "duration": display.duration(incident.duration),
                    # Why it entered FAIL: a detector's incident keeps its cause once ended.
                    "cause": display.headline(incident.reasons),
                    "reasons": "\n".join(incident.reasons),
                }
                for incident in ended[:INCIDENTS_SHOWN]
            ],
            "incident_count": len(incidents),
            "incidents_ended": len(ended),
            "incidents_ongoing": len(incidents) - len(ended),
            "mttr": display.duration(mttr) if mttr is not None else None,
            "flapping": [
                (sid, changes, session_url(sid)) for sid, changes in history.flapping(now=now)
            ],
            "changelist_url": changelist_url(),
        }
        return TemplateResponse(request, "admin/observability/overview.html", context)


#: Sessions listed per status on the overview (the sessions list has them all).
FAILING_SHOWN = 40
#: Ended incidents listed on the overview.
INCIDENTS_SHOWN = 10


def _reason_section(states, store, status: Status, section_id: str, title: str) -> dict:
    """One status's sessions grouped by reason, for the overview."""
    groups = _by_reason(states.filter(status=status), FAILING_SHOWN)
    return {
        "id": section_id,
        "title": title,
        "since": f"{status.value} since",
        "groups": groups,
        "total": store.sessions_by_status[status],
        "shown": sum(len(group["sessions"]) for group in groups),
        "url": changelist_url(status=status.value),
        "none": f"No session is {status.value}.",
    }


def _by_reason(states, limit: int) -> list[dict]:
    """
    Sessions grouped by the rule of their first reason, longest-standing first.

    One sentence per group (the longest-standing session's; the others' may name other ids or
    counts, which their pages show), then the group's sessions with the moment their status
    began: the overview says each reason once instead of once per session.
    """
    rows = (
        states.annotate(rule=KT("facts__rules__0"))
        .order_by("status_since", "session_id")
        .values("session_id", "salon_id", "salon_title", "status_since", "reasons", "rule")[:limit]
    )
    groups: dict[str, dict] = {}
    first = snapshot.baseline()
    for row in rows:
        # Found so by the first snapshot ever: it began then or earlier ("since ≥").
        row["or_earlier"] = row["status_since"] == first
        group = groups.setdefault(
            row["rule"] or "",
            {"sentence": (row["reasons"] or ["—"])[0], "sessions": [], "differ": False},
        )
        group["differ"] |= bool(row["reasons"]) and row["reasons"][0] != group["sentence"]
        group["sessions"].append({**row, "url": session_url(row["session_id"])})
    return sorted(groups.values(), key=lambda group: -len(group["sessions"]))


def _timeline_context(line: history.Timeline) -> dict:
    """A timeline as the session page draws it: band segments in percent, changes listed."""
    return {
        "days": round((line.until - line.since).total_seconds() / 86400),
        "segments": [
            {
                "segment": segment,
                "x": f"{(segment.start - line.since) / (line.until - line.since) * 1000:.2f}",
                "width": f"{segment.share * 1000:.2f}",
                "label": (
                    f"{segment.status or 'not stored'} from {moments.text(segment.start)} "
                    f"for {display.duration(segment.duration)}"
                ),
            }
            for segment in line.segments
        ],
        "changes": line.changes,
    }
