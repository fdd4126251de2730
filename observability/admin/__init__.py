"""The ops admin: read-only pages over the bot's tables, and the project's own records.

Each submodule registers one area; importing them here is what registers them.
"""

from __future__ import annotations

from django.contrib import admin as _django_admin
from django.urls import reverse_lazy

# --- Sessions, salons, clients and the store overview (issue 4) -------------------------------
from observability.admin import clients, salons, sessions  # noqa: E402, F401

# The index links to the store overview (observability/templates/admin/observability/index.html).
_django_admin.site.index_template = "admin/observability/index.html"
# The admin's "View site" link: there is no public site, so it leads to the store overview
# (Django's default "/" answers 404).
_django_admin.site.site_url = reverse_lazy("admin:observability_sessionstate_overview")

# --- Cleanup runs (read-only) and the sessions' queue-cleanup action (issue 6) ----------------
# --- Alert deliveries (read-only): the transition stream and its webhook (issue 14) ----------
from observability.admin import alerts, cleanup  # noqa: E402, F401
