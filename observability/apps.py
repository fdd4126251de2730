"""App configuration."""

from __future__ import annotations

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """The observability app: admin, health checks, cleanup jobs and Sentry for the bot's data."""

    name = "observability"
    verbose_name = "Observability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register system checks (imported for their side effect)."""
        from observability import checks  # noqa: F401
