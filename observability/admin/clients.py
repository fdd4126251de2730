"""The clients admin: read-only, searchable by name or any spelling of a phone."""

from __future__ import annotations

from django.contrib import admin
from django.core.cache import cache
from django.db.models import Q
from django.db.models.functions import Length

from observability import config, phones
from observability.admin import display
from observability.admin.base import ReadOnlyModelAdmin
from observability.exceptions import translate_database_errors
from observability.models import Client, Company

#: How long the filters' choices (salons, loyalty levels, segments) are cached.
CHOICES_TTL_SECONDS = 300
#: Above this many salons the salon filter lists only the chosen one.
MAX_SALON_CHOICES = 100


def _cached_choices(name: str, compute) -> list[tuple[str, str]]:
    """Filter choices from a cached query: scanning 100,000 clients per page view is waste."""
    key = f"observability:admin:choices:{name}"
    choices = cache.get(key)
    if choices is None:
        with translate_database_errors():
            choices = compute()
        cache.set(key, choices, CHOICES_TTL_SECONDS)
    return choices


class SalonFilter(admin.SimpleListFilter):
    """The salon (``clients.company_id``), by salon id and title."""

    title = "salon"
    parameter_name = "salon"

    def lookups(self, request, model_admin):
        def compute():
            rows = Company.objects.using(config.bot_database_alias()).values_list(
                "company_id", "title"
            )
            return [(str(salon), f"{salon} {title or ''}".strip()) for salon, title in rows]

        choices = _cached_choices("salons", compute)
        if len(choices) > MAX_SALON_CHOICES:
            # A thousand links help nobody: keep the chosen salon (to show and clear it);
            # salons are picked from their own page's "clients" link or by ?salon=<id>.
            return [choice for choice in choices if choice[0] == self.value()]
        return choices

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        try:
            return queryset.filter(company_id=int(value))
        except ValueError:
            return queryset.none()


class _ValuesFilter(admin.SimpleListFilter):
    """A filter over the distinct values of one column, with cached choices."""

    column = ""

    def lookups(self, request, model_admin):
        def compute():
            values = (
                Client.objects.using(config.bot_database_alias())
                .exclude(**{f"{self.column}__isnull": True})
                .order_by(self.column)
                .values_list(self.column, flat=True)
                .distinct()
            )
            return [(value, value) for value in values]

        return _cached_choices(self.column, compute)

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.column: value})


class LoyaltyFilter(_ValuesFilter):
    """``loyalty_level``."""

    title = "loyalty level"
    parameter_name = "loyalty"
    column = "loyalty_level"


class SegmentFilter(_ValuesFilter):
    """``client_segment``."""

    title = "segment"
    parameter_name = "segment"
    column = "client_segment"


_column = display.field_column
_array = display.array
_json = display.pretty_json
_when = display.when_column


@admin.register(Client)
class ClientAdmin(ReadOnlyModelAdmin):
    """Clients: phones masked, arrays and jsonb shown readably."""

    list_display = (
        "name",
        "phone_masked",
        "company_id",
        "loyalty_level",
        "client_segment",
        "visit_count",
        "last_visit_date_when",
        "blacklisted",
    )
    list_display_links = ("name", "phone_masked")
    list_filter = (SalonFilter, "blacklisted", LoyaltyFilter, SegmentFilter)
    date_hierarchy = "last_visit_date"
    search_fields = ("name",)
    search_help_text = (
        "Name; phone number in any spelling (+7 (900) 123-45-67, 8 900 ...); or its last 4+ "
        "digits (4567) or its mask (7900***4567). A phone finds every number its mask matches."
    )
    show_full_result_count = False
    list_per_page = 50
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "phone_masked",
                    "raw_phone_masked",
                    "email",
                    "company_id",
                    "yclients_id",
                    "status",
                    "source",
                    "blacklisted",
                    "notes",
                )
            },
        ),
        (
            "Visits",
            {
                "fields": (
                    "visit_count",
                    "first_visit_date_when",
                    "last_visit_date_when",
                    "total_spent",
                    "average_bill",
                    "discount",
                    "loyalty_level",
                    "client_segment",
                    "last_services_display",
                    "last_service_ids_display",
                    "favorite_staff_ids_display",
                    "preferred_time_slots_display",
                    "branch_ids_display",
                    "tags_display",
                    "visit_history_display",
                    "preferences_display",
                )
            },
        ),
        (
            "Goods and AI",
            {
                "fields": (
                    "services_amount",
                    "goods_amount",
                    "goods_count",
                    "goods_purchases_display",
                    "created_by_ai",
                    "last_ai_interaction_when",
                    "ai_messages_count",
                    "ai_satisfaction_score",
                    "ai_context_display",
                    "created_at_when",
                    "updated_at_when",
                    "last_sync_at_when",
                )
            },
        ),
    )
    readonly_fields = (
        "phone_masked",
        "first_visit_date_when",
        "last_visit_date_when",
        "last_ai_interaction_when",
        "created_at_when",
        "updated_at_when",
        "last_sync_at_when",
        "raw_phone_masked",
        "last_services_display",
        "last_service_ids_display",
        "favorite_staff_ids_display",
        "preferred_time_slots_display",
        "branch_ids_display",
        "tags_display",
        "visit_history_display",
        "preferences_display",
        "goods_purchases_display",
        "ai_context_display",
    )

    def get_search_results(self, request, queryset, search_term):
        """
        Find clients by name or by the digits of their phone that the mask shows.

        - A whole phone in any spelling is normalized and matched on the digits its mask
          shows, its first four and last four (``phones.shown``): an exact match would answer
          a guess of the three hidden digits, and a thousand searches would unmask a number.
        - 4 to 9 digits (``4567``) are the number's end, and a pasted mask
          (``7900***4567``) gives both ends. ``idx_clients_phone`` is a btree on the whole
          number and cannot answer a suffix, and we may not add an index to the bot's
          database, so this reads the table: about 25 ms at 100,000 clients (twice per page,
          rows and count), fine for an ops search. Choosing the salon first narrows it to the
          salon's clients (``idx_clients_company_id``). Only the last four digits are
          matched, the ones the masked column shows: a longer suffix would test the hidden
          digits (``phones.partial``).
        - Anything else searches the name (case-insensitive substring).
        """
        term = (search_term or "").strip()
        if not term:
            return queryset, False
        part = phones.shown(term)
        if part is not None:
            # A number shorter than MASK_WHOLE_FROM shows only its last two digits masked: a
            # four-digit suffix would test two hidden ones, so such numbers are not searched.
            found = queryset.alias(phone_length=Length("phone")).filter(
                phone_length__gte=phones.MASK_WHOLE_FROM, phone__endswith=part.suffix
            )
            if part.prefix:
                found = found.filter(phone__startswith=part.prefix)
            return found, False
        return queryset.filter(Q(name__icontains=term)), False

    phone_masked = _column("phone", display.masked_phone, "phone")
    raw_phone_masked = _column("raw_phone", display.masked_phone, "phone as typed")
    last_services_display = _column("last_services", _array, "last services")
    last_service_ids_display = _column("last_service_ids", _array, "last service ids")
    favorite_staff_ids_display = _column("favorite_staff_ids", _array, "favourite staff ids")
    preferred_time_slots_display = _column("preferred_time_slots", _array, "preferred time slots")
    branch_ids_display = _column("branch_ids", _array, "branch ids")
    tags_display = _column("tags", _array, "tags")
    visit_history_display = _column("visit_history", _json, "visit history")
    preferences_display = _column("preferences", _json, "preferences")
    goods_purchases_display = _column("goods_purchases", _json, "goods purchases")
    ai_context_display = _column("ai_context", _json, "AI context")
    first_visit_date_when = _when("first_visit_date", "first visit date")
    last_visit_date_when = _when("last_visit_date", "last visit date")
    last_ai_interaction_when = _when("last_ai_interaction", "last AI interaction")
    created_at_when = _when("created_at", "created at")
    updated_at_when = _when("updated_at", "updated at")
    last_sync_at_when = _when("last_sync_at", "last sync at")
