"""URL configuration: the admin, health checks and metrics."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from observability.admin.sentry import sentry_test_view

#: A small icon (the admin's blue dot): browsers ask for /favicon.ico on every site, and a
#: 404 for it on each page view only fills the logs.
FAVICON_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<circle cx="8" cy="8" r="7" fill="#417690"/></svg>'
)


@require_GET
@cache_control(max_age=86400, public=True)
def favicon(request):
    """The site's icon, cached for a day."""
    return HttpResponse(FAVICON_SVG, content_type="image/svg+xml")


# No navigation sidebar: on a 1366 px laptop it takes 300 px from every list, and with the
# filters beside them the sessions, salons and clients tables no longer fit (columns scrolled
# out of sight). The breadcrumbs and the index lead everywhere it did.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
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
