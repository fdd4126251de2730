"""App configuration."""

from __future__ import annotations

from django.apps import AppConfig, apps


class ObservabilityConfig(AppConfig):
    """The observability app: admin, health checks, cleanup jobs and Sentry for the bot's data."""

    name = "observability"
    verbose_name = "Observability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register system checks; make every admin page refuse lookups it does not offer."""
        from observability import checks  # noqa: F401

        if apps.is_installed("django.contrib.admin"):
            # The admin app (listed before this one) has imported every admin module by now.
            from django.contrib import admin

            from observability.admin.base import harden_site

            harden_site(admin.site)
