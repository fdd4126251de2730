"""Admin base classes shared by every page over the bot's tables."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied

from observability.exceptions import translate_database_errors


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """A model admin that never adds, changes or deletes, for anyone, superusers included.

    The bot's tables belong to the bot; the only writes this project makes are the audited
    cleanup operations (observability.cleanup), never a form in the admin.

    Pages are rendered inside :func:`translate_database_errors`: the admin's querysets run
    lazily, while the template renders, so a bot database that is down or slow must be caught
    there to become a clear 503/504 page rather than a traceback.
    """

    def has_add_permission(self, request, obj=None):
        """Nobody adds rows to the bot's tables here."""
        return False

    def has_change_permission(self, request, obj=None):
        """Nobody changes rows of the bot's tables here."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Nobody deletes rows here; cleanup goes through the audited operations."""
        return False

    def add_view(self, request, form_url="", extra_context=None):
        """Refuse at once (403), before any query: there is no form to add a bot row."""
        raise PermissionDenied

    def delete_view(self, request, object_id, extra_context=None):
        """Refuse at once (403), before any query: deletes go through cleanup only."""
        raise PermissionDenied

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Show the read-only page; refuse any POST (403) before it reaches a form."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        with translate_database_errors():
            return _rendered(super().change_view(request, object_id, form_url, extra_context))

    def changelist_view(self, request, extra_context=None):
        """The changelist, rendered inside the error translation."""
        with translate_database_errors():
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                self.prepare_changelist(request, response)
            return _rendered(response)

    def prepare_changelist(self, request, response) -> None:
        """Hook: adjust a changelist response's context before it renders (default: none)."""


def _rendered(response):
    """Render a template response now, so lazy queries run where errors are translated."""
    if hasattr(response, "render"):
        response.render()
    return response
