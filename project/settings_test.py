"""Test settings: the project's settings with django-q2 tasks run inline and fast hashing."""

from __future__ import annotations

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, Q_CLUSTER

# The tests seed demo data and create the bot tables with the demo app's commands.
if "observability_demo" not in INSTALLED_APPS:
    INSTALLED_APPS = [*INSTALLED_APPS, "observability_demo"]

# django-q2 reads Q_CLUSTER once at import, so override_settings cannot switch this on later.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
