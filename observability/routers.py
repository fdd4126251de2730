"""Database router: the bot's tables live in their own alias and are never migrated."""

from __future__ import annotations

from observability import config

#: The models that map the bot's existing tables (unmanaged, read from the bot alias).
BOT_MODELS = frozenset({"whatsappauth", "whatsappkey", "company", "client"})


def is_bot_model(model) -> bool:
    """Return True when ``model`` maps one of the bot's tables."""
    return model._meta.app_label == "observability" and model._meta.model_name in BOT_MODELS


class BotDatabaseRouter:
    """
    Send the bot's models to the bot alias and everything else to ``default``.

    No migration ever runs on the bot alias: production tables belong to the Node.js bot.
    Their copy in our own databases is created by ``create_bot_schema``, not by ``migrate``.
    """

    def db_for_read(self, model, **hints):
        """Bot models read from the bot alias."""
        return config.bot_database_alias() if is_bot_model(model) else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        """Relations are allowed only inside one database."""
        return is_bot_model(type(obj1)) == is_bot_model(type(obj2))

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        """Never migrate the bot alias; never put bot models anywhere else."""
        if db == config.bot_database_alias():
            return False
        if app_label == "observability" and model_name in BOT_MODELS:
            return False
        return None
