"""
Load the settings at start-up so a configuration mistake is one line, not a traceback.

``project/settings.py`` raises ``ImproperlyConfigured`` with a sentence saying what to set (an
empty ``SECRET_KEY``, only one of ``DATABASE_URL`` / ``BOT_DATABASE_URL``, a malformed number).
Left alone, Django would show it at the bottom of a 40-line traceback; every entry point
(``manage.py``, ``project.wsgi``, ``project.asgi``) calls :func:`settings_or_exit` first.
"""

from __future__ import annotations

import os
import sys

#: The exit status of a configuration error (``EX_CONFIG`` of sysexits.h).
EXIT_CONFIGURATION = 78


def settings_or_exit() -> None:
    """
    Import the settings now; on a configuration error print it in one line and exit 78.

    Raises:
        SystemExit: the settings are not usable (status :data:`EXIT_CONFIGURATION`).

    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 (the import of the settings module is the point)
    except ImproperlyConfigured as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIGURATION) from None
