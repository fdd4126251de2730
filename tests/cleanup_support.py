"""Helpers for the cleanup tests: real second connections and manage.py in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from django.db import connections

ROOT = Path(__file__).resolve().parent.parent

# A manage.py that points both aliases at the test databases of the running test session.
_MANAGE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings_test")
from django.conf import settings
settings.DATABASES["default"]["NAME"] = sys.argv[1]
settings.DATABASES["bot"]["NAME"] = sys.argv[2]
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", *sys.argv[3:]])
"""


def raw_bot_connection(autocommit: bool = True) -> psycopg.Connection:
    """A second, real connection to the test bot database."""
    settings_dict = connections["bot"].settings_dict
    return psycopg.connect(
        dbname=settings_dict["NAME"],
        host=settings_dict["HOST"],
        user=settings_dict["USER"],
        autocommit=autocommit,
    )


def manage_command(*args: str) -> list[str]:
    """The argv of ``manage.py <args>`` run against this test session's databases."""
    return [
        sys.executable,
        "-c",
        _MANAGE,
        connections["default"].settings_dict["NAME"],
        connections["bot"].settings_dict["NAME"],
        *args,
    ]


def run_manage(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``manage.py <args>`` in a real process and wait for it."""
    return subprocess.run(  # noqa: S603
        manage_command(*args),
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_manage(*args: str) -> subprocess.Popen:
    """Start ``manage.py <args>`` in a real process without waiting."""
    return subprocess.Popen(  # noqa: S603
        manage_command(*args),
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def duplicate_salon(*, stale_days: float = 5) -> None:
    """Salon 962302 written now under ``company_962302``, last written long ago bare."""
    from datetime import timedelta

    from django.utils import timezone

    from tests import factories

    now = timezone.now()
    stale = now - timedelta(days=stale_days)
    factories.make_auth("962302", written_at=stale, seed=1)
    factories.make_keys("962302", "session", 4, written_at=stale, seed=1)
    factories.make_keys("962302", "pre-key", 3, written_at=stale, seed=1, expires_at=None)
    factories.make_auth("company_962302", written_at=now, seed=2)
    factories.make_keys("company_962302", "session", 6, written_at=now, seed=2)
