"""Admin base classes shared by every page over the bot's tables."""

from __future__ import annotations

from django.contrib import admin


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """A model admin that never adds, changes or deletes, for anyone, superusers included.

    The bot's tables belong to the bot; the only writes this project makes are the audited
    cleanup operations (observability.cleanup), never a form in the admin.
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
