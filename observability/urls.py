"""URLs of the observability app (health checks, metrics), included by the project."""

from __future__ import annotations

from django.urls import path

from observability import health_checks, health_views

app_name = "observability"

urlpatterns: list = []

# --- Health checks and metrics (observability.health_views) ----------------------------------
# `manage.py health_check observability:health` (or observability:health-db, ...) runs the
# same checks from the command line; add --no-http to run them in-process.
urlpatterns += [
    path("health/", health_views.HealthView.as_view(group="all"), name="health"),
    *(
        path(
            f"health/{group}/",
            health_views.HealthView.as_view(group=group),
            name=f"health-{group}",
        )
        for group in health_checks.GROUPS
    ),
    path("metrics", health_views.metrics_view, name="metrics"),
]
