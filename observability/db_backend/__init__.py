"""
The bot alias's database backend: Django's PostgreSQL one, failing fast when the server is down.

``ENGINE = "observability.db_backend"`` (project/settings.py, bot alias only). See ``base``.
"""
