"""URLs of the observability app (health checks, metrics), included by the project."""

from __future__ import annotations

app_name = "observability"

urlpatterns: list = []
