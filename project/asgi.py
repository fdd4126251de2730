"""ASGI entry point (a configuration error stops it with one line, exit 78)."""

import os

from django.core.asgi import get_asgi_application

from project.startup import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
settings_or_exit()
application = get_asgi_application()
