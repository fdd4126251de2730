"""The ops admin: read-only pages over the bot's tables, and the project's own records.

Each submodule registers one area; importing them here is what registers them.
"""

from __future__ import annotations
