"""The sessions admin: the changelist worst first, each session's page, its key browser."""

from __future__ import annotations

import csv
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from observability import config, phones, sessions
from observability.admin import display
from observability.admin.base import ReadOnlyModelAdmin, refuse_unoffered_params
from observability.exceptions import BadInput
from observability.models import WhatsAppAuth
from observability.session_ids import Spelling
from observability.sessions import SessionHealth, Status

logger = logging.getLogger(__name__)

#: Rows per page of the key browser.
KEYS_PER_PAGE = 100


#: Query parameter that makes the changelist and the overview compute the health again.
REFRESH_PARAM = "refresh"

#: The key browser's parameters: key type, expired ("yes"/"no"/""), page number.
KEYS_PARAMS = ("type", "expired", "p")
#: The ``expired`` values of the key browser: all keys, expired ones, live ones.
EXPIRED_CHOICES = {"": None, "yes": True, "no": False}
#: The session page's parameters: the changelist filters the admin carries along.
SESSION_PAGE_PARAMS = ("_changelist_filters",)


@dataclass(frozen=True)
class _Computed:
    at: datetime
    monotonic: float
    by_id: dict[str, SessionHealth]


_shared: dict[str, _Computed] = {}
_shared_lock = threading.Lock()


def _computed(*, refresh: bool = False) -> _Computed:
    """
    Every session's health, reused for ``admin_health_cache_seconds`` within this process.

    The whole-store computation reads every key once; clicking through filters, searches and
    pages within a few seconds need not repeat it. Nothing leaves the process (no phone is
    written to a shared cache), and ``refresh`` forces a new computation.
    """
    ttl = config.admin_health_cache_seconds()
    with _shared_lock:
        entry = _shared.get("entry")
    if not refresh and ttl > 0 and entry and time.monotonic() - entry.monotonic < ttl:
        return entry
    listed = sessions.list_sessions()
    entry = _Computed(
        at=timezone.now(),
        monotonic=time.monotonic(),
        by_id={health.session_id: health for health in listed},
    )
    if ttl > 0:
        with _shared_lock:
            _shared["entry"] = entry
    return entry


def forget_cached_health() -> None:
    """Drop this process's reused health computation (after a change such as a cleanup)."""
    with _shared_lock:
        _shared.pop("entry", None)


def _request_computed(request: HttpRequest) -> _Computed:
    cached = getattr(request, "_observability_health", None)
    if cached is None:
        cached = _computed()
        request._observability_health = cached
    return cached


def health_by_id(request: HttpRequest) -> dict[str, SessionHealth]:
    """
    Every session's health, computed at most once per request (three aggregate queries).

    The changelist's filters, search, ordering and columns all read this one result, so the
    number of queries does not depend on the number of sessions.
    """
    return _request_computed(request).by_id


def _freshness(request: HttpRequest) -> dict:
    """Template context saying when the health shown was computed, with a refresh link."""
    computed = _request_computed(request)
    query = request.GET.copy()
    query[REFRESH_PARAM] = "1"
    return {
        "health_computed_at": computed.at,
        "health_age": display.duration(timezone.now() - computed.at),
        "health_refresh_url": f"{request.path}?{query.urlencode()}",
    }


def _keys_only_sessions(request: HttpRequest) -> list[dict]:
    """
    Sessions that have keys but no auth row, worst first, with their pages' URLs.

    The changelist lists ``whatsapp_auth`` rows, so these would otherwise be missing from it;
    the page names them above the list instead.
    """
    orphans = [h for h in health_by_id(request).values() if not h.has_auth]
    orphans.sort(key=lambda h: (-h.status.severity, h.session_id))
    return [{"health": h, "url": session_url(h.session_id)} for h in orphans]


def _without_refresh(request: HttpRequest) -> HttpResponseRedirect | None:
    """Compute again and redirect to the same page without the refresh parameter."""
    if REFRESH_PARAM not in request.GET:
        return None
    forget_cached_health()
    query = request.GET.copy()
    del query[REFRESH_PARAM]
    return HttpResponseRedirect(f"{request.path}?{query.urlencode()}" if query else request.path)


def session_url(session_id: str) -> str:
    """The admin page of one session (works for keys-only sessions too)."""
    return reverse("admin:observability_whatsappauth_change", args=[quote(session_id)])


def keys_url(session_id: str, **params) -> str:
    """The key browser of one session, with optional filters."""
    url = reverse("admin:observability_whatsappauth_keys", args=[quote(session_id)])
    query = {name: value for name, value in params.items() if value not in (None, "")}
    return f"{url}?{urlencode(query)}" if query else url


def overview_url() -> str:
    """The store overview page."""
    return reverse("admin:observability_whatsappauth_overview")


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


# --- Filters (all answered from the one health computation) ---------------------------------


class _HealthFilter(admin.SimpleListFilter):
    """A filter that selects session ids from the request's health computation."""

    def matches(self, health: SessionHealth, value: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        ids = [sid for sid, health in health_by_id(request).items() if self.matches(health, value)]
        return queryset.filter(company_id__in=ids)


class StatusFilter(_HealthFilter):
    """OK / WARN / FAIL."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(status.value, status.value) for status in Status]

    def matches(self, health, value):
        return health.status.value == value


class SpellingFilter(_HealthFilter):
    """Bare ``962302`` or prefixed ``company_962302``."""

    title = "spelling"
    parameter_name = "spelling"

    def lookups(self, request, model_admin):
        return [
            (Spelling.BARE.value, "bare (962302)"),
            (Spelling.PREFIXED.value, "prefixed (company_962302)"),
            ("none", "neither"),
        ]

    def matches(self, health, value):
        return (health.spelling.value if health.spelling else "none") == value


class DuplicateFilter(_HealthFilter):
    """Salons stored under both spellings."""

    title = "stored under both spellings"
    parameter_name = "duplicate"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def matches(self, health, value):
        return health.is_duplicate == (value == "yes")


class PlatformFilter(_HealthFilter):
    """``creds.platform`` (android, smba, iphone, ...)."""

    title = "platform"
    parameter_name = "platform"

    def lookups(self, request, model_admin):
        found = sorted({h.platform for h in health_by_id(request).values() if h.platform})
        return [(platform, platform) for platform in found]

    def matches(self, health, value):
        return health.platform == value


# --- Actions -----------------------------------------------------------------------------------


@admin.action(description="Download the health of the selected sessions (CSV, phones masked)")
def export_health_csv(modeladmin, request, queryset):
    """A CSV of the selected sessions' health, for a ticket or a spreadsheet."""
    health = health_by_id(request)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="session-health.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["session_id", "salon_id", "salon", "status", "phone", "keys", "expired", "reasons"]
    )
    for session_id in queryset.values_list("company_id", flat=True):
        h = health.get(session_id)
        if h is None:
            continue
        writer.writerow(
            [
                h.session_id,
                h.salon_id or "",
                h.salon_title or "",
                h.status.value,
                h.phone_masked or "",
                h.total_keys,
                h.expired_keys,
                " ".join(h.reasons),
            ]
        )
    return response


# --- The admin -------------------------------------------------------------------------------


@admin.register(WhatsAppAuth)
class SessionAdmin(ReadOnlyModelAdmin):
    """
    WhatsApp sessions, worst first.

    The changelist lists the sessions that have an auth row (the bot's ``whatsapp_auth``);
    sessions that exist only as keys are listed on the overview page, and every session,
    keys-only included, has its page at ``<session id>/change/``. ``actions`` is a plain list
    so other modules (cleanup) can append theirs.
    """

    change_list_template = "admin/observability/session_change_list.html"
    list_display = (
        "status_badge",
        "session",
        "salon",
        "phone",
        "key_counts",
        "expired",
        "last_write",
        "reasons",
    )
    list_display_links = None
    list_filter = (StatusFilter, SpellingFilter, DuplicateFilter, PlatformFilter)
    search_fields = ("company_id",)
    search_help_text = "Salon id (either spelling), salon title, or phone number in any spelling."
    sortable_by = ()
    list_per_page = 100
    actions = [export_health_csv]

    # -- queryset, ordering, search --------------------------------------------------------

    def get_queryset(self, request):
        """Never load ``creds``: the columns come from the health computation."""
        return super().get_queryset(request).only("company_id", "updated_at")

    def get_ordering(self, request):
        """Worst first, in the order the health service ranked the sessions."""
        ranked = list(health_by_id(request))
        return [RawSQL("array_position(%s::text[], whatsapp_auth.company_id)", (ranked,)).asc()]

    def get_search_results(self, request, queryset, search_term):
        """Match salon id (either spelling), title, or phone (any spelling) via the health."""
        term = (search_term or "").strip()
        if not term:
            return queryset, False
        digits = phones.normalize(term) if phones.looks_like_phone(term) else None
        lowered = term.casefold()
        ids = []
        for sid, health in health_by_id(request).items():
            if (
                sid.casefold() == lowered
                or (health.salon_id is not None and str(health.salon_id) == term)
                or (health.salon_title and lowered in health.salon_title.casefold())
                or (
                    digits
                    and health.phone_digits
                    and phones.normalize(health.phone_digits) == digits
                )
            ):
                ids.append(sid)
        return queryset.filter(company_id__in=ids), False

    # -- columns -----------------------------------------------------------------------------

    @admin.display(description="status")
    def status_badge(self, obj):
        health = getattr(obj, "health", None)
        if health is None:
            # Stored after the reused health computation: "Compute again" judges it.
            return format_html("<small>{}</small>", "not computed yet")
        return display.badge(health.status)

    @admin.display(description="session")
    def session(self, obj):
        health = getattr(obj, "health", None)
        spelling = health.spelling.value if health and health.spelling else "unparsed"
        twin = " ⚠ twin" if health and health.is_duplicate else ""
        return format_html(
            '<a href="{}"><strong>{}</strong></a><br><small>{}{}</small>',
            session_url(obj.company_id),
            obj.company_id,
            spelling,
            twin,
        )

    @admin.display(description="salon")
    def salon(self, obj):
        health = getattr(obj, "health", None)
        if not health or health.salon_id is None:
            return "—"
        return format_html(
            "{}<br><small>{}</small>", health.salon_id, health.salon_title or "no companies row"
        )

    @admin.display(description="phone")
    def phone(self, obj):
        health = getattr(obj, "health", None)
        return (health and health.phone_masked) or "—"

    @admin.display(description="keys")
    def key_counts(self, obj):
        health = getattr(obj, "health", None)
        if not health or not health.key_counts:
            return "none"
        return format_html(
            "<strong>{}</strong> ({} session)<br><small>{}</small>",
            health.total_keys,
            health.session_keys,
            ", ".join(f"{kind} {count}" for kind, count in health.key_counts.items()),
        )

    @admin.display(description="past expires_at")
    def expired(self, obj):
        health = getattr(obj, "health", None)
        if not health:
            return "—"
        return f"{display.percent(health.expired_share)} ({health.expired_keys})"

    @admin.display(description="last key write")
    def last_write(self, obj):
        health = getattr(obj, "health", None)
        return display.age(health.newest_key_write) if health else "—"

    @admin.display(description="reasons")
    def reasons(self, obj):
        health = getattr(obj, "health", None)
        if not health or not health.reasons:
            return "—"
        # The headline of each reason (before its colon); the whole sentence on hover and on
        # the session page.
        return format_html(
            '<ul class="obs-list">{}</ul>',
            format_html_join(
                "",
                '<li title="{}">{}</li>',
                ((reason, reason.split(":", 1)[0]) for reason in health.reasons),
            ),
        )

    # -- views -------------------------------------------------------------------------------

    def get_urls(self):
        """Add the overview, the key browser and the session page to the admin's URLs."""
        wrap = self.admin_site.admin_view
        custom = [
            path(
                "overview/", wrap(self.overview_view), name="observability_whatsappauth_overview"
            ),
            path(
                "<path:object_id>/keys/",
                wrap(self.keys_view),
                name="observability_whatsappauth_keys",
            ),
        ]
        return custom + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        """The changelist, rendered inside the error translation (querysets run lazily)."""
        redirect = _without_refresh(request)
        if redirect is not None:
            return redirect
        extra_context = {
            **(extra_context or {}),
            "overview_url": overview_url(),
            "keys_only_sessions": _keys_only_sessions(request),
            **_freshness(request),
        }
        return super().changelist_view(request, extra_context)

    def prepare_changelist(self, request, response) -> None:
        """Attach each listed session's health (one computation for the whole page)."""
        cl = response.context_data.get("cl") if response.context_data else None
        if cl is not None:
            health = health_by_id(request)
            for obj in cl.result_list:
                obj.health = health.get(obj.company_id)

    def history_view(self, request, object_id, extra_context=None):
        """No history: nothing is ever changed here. Go to the session page."""
        return HttpResponseRedirect(session_url(unquote(object_id)))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The session's page: health, creds summary (secrets masked), keys, charts, links."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        if not self.has_view_permission(request):
            raise PermissionDenied
        refuse_unoffered_params(request, SESSION_PAGE_PARAMS)
        session_id = unquote(object_id)
        detail = sessions.session_detail(session_id)
        health = detail.health
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Session {session_id}",
            "subtitle": health.salon_title,
            "health": health,
            "detail": detail,
            "badge": display.badge(health.status),
            "last_write": display.age(health.newest_key_write, now),
            "auth_write": display.age(health.auth_updated_at, now),
            "expired_share": display.percent(health.expired_share),
            "writes_chart": display.bars(detail.writes_per_day),
            "expiries_chart": display.bars(detail.expiries_per_day),
            "key_types": [
                {
                    "stats": stats,
                    "oldest": display.age(stats.oldest_write, now),
                    "newest": display.age(stats.newest_write, now),
                    "next_expiry": stats.next_expiry,
                    "url": keys_url(session_id, type=stats.key_type),
                    "expired_url": keys_url(session_id, type=stats.key_type, expired="yes"),
                }
                for stats in detail.key_types
            ],
            "keys_url": keys_url(session_id),
            "twin_url": session_url(health.twin_session_id) if health.twin_session_id else None,
            "salon_url": salon_url(health),
            "clients_url": clients_url(health.salon_id),
            "overview_url": overview_url(),
            "changelist_url": reverse("admin:observability_whatsappauth_changelist"),
        }
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
        health = sessions.get_session(session_id)
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
            "health": health,
            "badge": display.badge(health.status),
            "page": page,
            "key_type": key_type or "",
            "expired": expired_param,
            "key_types": list(health.key_counts),
            "session_url": session_url(session_id),
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

    def overview_view(self, request):
        """The whole store: counts per status, shared logins, duplicates, orphans, worst ten."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        refuse_unoffered_params(request, (REFRESH_PARAM,))
        redirect = _without_refresh(request)
        if redirect is not None:
            return redirect
        store = sessions.summarize(list(health_by_id(request).values()))
        context = {
            **_freshness(request),
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "WhatsApp session store overview",
            "store": store,
            "badge": display.badge(store.status),
            "by_status": [
                (display.badge(status), count, self._changelist_link(status=status.value))
                for status, count in store.sessions_by_status.items()
            ],
            "duplicates": [
                (salon_id, self._changelist_link(q=str(salon_id)))
                for salon_id in store.duplicate_salon_ids
            ],
            "orphans": [(sid, session_url(sid)) for sid in store.orphan_session_ids],
            "worst": [
                {
                    "health": health,
                    "badge": display.badge(health.status),
                    "url": session_url(health.session_id),
                    "last_write": display.age(health.newest_key_write),
                }
                for health in store.worst
            ],
            "changelist_url": reverse("admin:observability_whatsappauth_changelist"),
        }
        return TemplateResponse(request, "admin/observability/overview.html", context)

    @staticmethod
    def _changelist_link(**params) -> str:
        return reverse("admin:observability_whatsappauth_changelist") + "?" + urlencode(params)
