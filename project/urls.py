"""URL configuration: the admin, health checks and metrics."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from observability.admin.sentry import sentry_test_view

urlpatterns = [
    # Before admin.site.urls: the admin's catch-all would answer this path with a 404.
    path(
        "admin/observability/sentry-test/",
        admin.site.admin_view(sentry_test_view),
        name="observability-sentry-test",
    ),
    path("admin/", admin.site.urls),
    path("", include("observability.urls")),
]

# A friendly 500 page with the Sentry event id, rendered without a request context.
handler500 = "observability.error_pages.server_error"
