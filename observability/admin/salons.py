"""The salons admin (``companies``): read-only, secrets never loaded, links to sessions."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from observability import session_ids
from observability.admin import display
from observability.admin.base import ReadOnlyModelAdmin
from observability.admin.sessions import clients_url, session_url
from observability.exceptions import MalformedSessionId
from observability.models import Company, SessionState

#: Columns never read from ``companies``: secrets, and jsonb blobs that may hold tokens.
WITHHELD_FIELDS = frozenset(
    {"api_key", "webhook_secret", "whatsapp_session_data", "whatsapp_config"}
)
#: Columns holding phone numbers: shown masked through a method, never raw.
PHONE_FIELDS = frozenset({"phone", "whatsapp_phone", "marketplace_user_phone"})
#: Every column the admin may load.
LOADED_FIELDS = tuple(
    field.attname for field in Company._meta.concrete_fields if field.name not in WITHHELD_FIELDS
)


_column = display.field_column
_array = display.array
_when = display.when_column


@admin.register(Company)
class SalonAdmin(ReadOnlyModelAdmin):
    """Salons: WhatsApp state and links; ``api_key`` and ``webhook_secret`` never loaded."""

    list_display = (
        "company_id",
        "title",
        "status",
        "whatsapp_enabled",
        "bot_says_connected",
        "health",
        "whatsapp_phone_masked",
        "disconnected",
        "links",
    )
    list_display_links = ("company_id", "title")
    list_filter = ("status", "whatsapp_enabled", "whatsapp_connected")
    search_fields = ("title",)
    search_help_text = "Salon id or title."
    show_full_result_count = False
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "company_id",
                    "title",
                    "status",
                    "address",
                    "phone_masked",
                    "email",
                    "website",
                    "timezone",
                    "working_hours",
                    "currency",
                    "links",
                )
            },
        ),
        (
            "WhatsApp",
            {
                "fields": (
                    "whatsapp_enabled",
                    "whatsapp_connected",
                    "whatsapp_phone_masked",
                    "whatsapp_connected_at_when",
                    "disconnected",
                    "whatsapp_channel_enabled",
                    "sessions_state",
                )
            },
        ),
        (
            "Integration",
            {
                "fields": (
                    "yclients_id",
                    "integration_status",
                    "connected_at_when",
                    "sync_enabled",
                    "last_sync_at_when",
                    "ai_enabled",
                    "sms_channel_enabled",
                    "sms_short_names_display",
                    "telegram_enabled",
                    "telegram_premium_until_when",
                    "last_payment_date_when",
                    "subscription_expires_at_when",
                    "marketplace_user_name",
                    "created_at_when",
                    "updated_at_when",
                )
            },
        ),
    )
    readonly_fields = (
        "phone_masked",
        "disconnected",
        "whatsapp_connected_at_when",
        "connected_at_when",
        "last_sync_at_when",
        "telegram_premium_until_when",
        "last_payment_date_when",
        "subscription_expires_at_when",
        "created_at_when",
        "updated_at_when",
        "whatsapp_phone_masked",
        "links",
        "sessions_state",
        "sms_short_names_display",
    )

    def get_queryset(self, request):
        """Never load the secret columns, not even into memory."""
        return super().get_queryset(request).only(*LOADED_FIELDS)

    def get_search_results(self, request, queryset, search_term):
        """A number searches the salon id exactly; anything else the title."""
        term = (search_term or "").strip()
        if term.removeprefix(session_ids.PREFIX).isdigit():
            try:
                return queryset.filter(company_id=session_ids.parse_salon_id(term)), False
            except MalformedSessionId:  # an out-of-range number matches no salon
                return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    phone_masked = _column("phone", display.masked_phone, "phone")
    whatsapp_phone_masked = _column("whatsapp_phone", display.masked_phone, "WhatsApp phone")
    sms_short_names_display = _column("sms_short_names", _array, "SMS short names")
    whatsapp_connected_at_when = _when("whatsapp_connected_at", "WhatsApp connected at")
    connected_at_when = _when("connected_at", "integration connected at")
    last_sync_at_when = _when("last_sync_at", "last sync at")
    telegram_premium_until_when = _when("telegram_premium_until", "Telegram premium until")
    last_payment_date_when = _when("last_payment_date", "last payment date")
    subscription_expires_at_when = _when("subscription_expires_at", "subscription expires at")
    created_at_when = _when("created_at", "created at")
    updated_at_when = _when("updated_at", "updated at")

    @admin.display(description="bot says connected", boolean=True, ordering="whatsapp_connected")
    def bot_says_connected(self, obj):
        """The bot's own flag (``companies.whatsapp_connected``): not our verdict, see health."""
        return obj.whatsapp_connected

    @admin.display(description="health (worst session)")
    def health(self, obj):
        """
        Our verdict: the salon's worst stored session, linked, beside the bot's flag.

        Salon 962302 showed "connected" while its sessions failed: the flag is what the bot
        last wrote, the verdict is what its sessions' keys say.
        """
        state = worst_session(obj.company_id)
        if state is None:
            return "no session"
        return format_html(
            '{} <a href="{}">{}</a>',
            display.badge(state.status),
            session_url(state.session_id),
            state.session_id,
        )

    @admin.display(description="disconnected at", ordering="disconnected_at")
    def disconnected(self, obj):
        """When the bot last saw the salon's WhatsApp disconnect, with zone and age."""
        return display.when(obj.disconnected_at)

    @admin.display(description="links")
    def links(self, obj):
        search = reverse("admin:observability_sessionstate_changelist") + f"?q={obj.company_id}"
        return format_html(
            '<a href="{}">sessions</a> · <a href="{}">clients</a>',
            search,
            clients_url(obj.company_id),
        )

    @admin.display(description="stored sessions")
    def sessions_state(self, obj):
        found = SessionState.objects.filter(
            session_id__in=session_ids.spellings(obj.company_id)
        ).defer("facts")
        if not found:
            return "No WhatsApp session stored for this salon."
        return format_html_join(
            mark_safe("<br>"),  # noqa: S308 - a constant
            '{} <a href="{}">{}</a> {}',
            (
                (
                    display.badge(h.status),
                    session_url(h.session_id),
                    h.session_id,
                    h.reasons[0] if h.reasons else "",
                )
                for h in found
            ),
        )


def worst_session(salon_id: int):
    """
    The salon's worst session from the stored snapshot (``SessionState``), or None.

    The one place the salons page asks for a salon's health: one indexed query on
    ``salon_id`` per listed salon (100 a page).
    """
    return (
        SessionState.objects.filter(salon_id=salon_id)
        .defer("facts")
        .order_by("-severity", "session_id")
        .first()
    )
