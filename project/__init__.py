"""The Django project that hosts the observability app."""
