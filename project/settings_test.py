"""Test settings: the project's settings with django-q2 tasks run inline and fast hashing."""

from __future__ import annotations

from project.settings import *  # noqa: F403
from project.settings import Q_CLUSTER

# django-q2 reads Q_CLUSTER once at import, so override_settings cannot switch this on later.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
