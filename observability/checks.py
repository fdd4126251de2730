"""Django system checks for the observability app's configuration."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from observability import config


@register()
def check_bot_database_alias(app_configs=None, **kwargs):
    """The bot's tables need their own alias; without it every bot query would hit ``default``."""
    alias = config.bot_database_alias()
    if alias not in settings.DATABASES:
        return [
            Error(
                f"DATABASES has no {alias!r} alias for the bot's tables.",
                hint="Set BOT_DATABASE_URL, or OBSERVABILITY_BOT_DATABASE to an existing alias.",
                id="observability.E001",
            )
        ]
    return []


@register()
def check_cleanup_retention(app_configs=None, **kwargs):
    """A malformed retention setting would stop every cleanup run: say so at startup."""
    from observability.cleanup import policy

    return [
        Error(message, hint="See observability/cleanup/policy.py.", id="observability.E002")
        for message in policy.problems()
    ]
