"""The ops admin: read-only pages over the bot's tables, and the project's own records.

Each submodule registers one area; importing them here is what registers them:
sessions, salons, clients and the store overview (issue 4); cleanup runs and the cleanup
actions (issue 6); alert deliveries (issue 14); the insights page over the bot's database
(issue 16).
"""

from __future__ import annotations

from django.contrib import admin as _django_admin
from django.urls import reverse_lazy

from observability.admin import (  # noqa: F401
    alerts,
    cleanup,
    cleanup_actions,
    clients,
    insights,
    salons,
    sessions,
)

# The index links to the store overview (observability/templates/admin/observability/index.html).
_django_admin.site.index_template = "admin/observability/index.html"
# The admin's "View site" link: there is no public site, so it leads to the store overview
# (Django's default "/" answers 404).
_django_admin.site.site_url = reverse_lazy("admin:observability_sessionstate_overview")
