"""Observability: see, check and clean the WhatsApp booking bot's PostgreSQL data."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("observability")
except metadata.PackageNotFoundError:  # running from a checkout that was not installed
    __version__ = "0.0.0+checkout"
