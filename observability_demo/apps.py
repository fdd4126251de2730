"""App configuration."""

from __future__ import annotations

from django.apps import AppConfig


class ObservabilityDemoConfig(AppConfig):
    """The demo's commands: demo, seed_demo_data, create_bot_schema and embedded_db."""

    name = "observability_demo"
    verbose_name = "Observability demo"
