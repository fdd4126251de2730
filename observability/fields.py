"""
Model fields for column types Django has no exact field for.

The drift check compares ``field.db_type()`` with the live catalogue, so each field must name
the column's real PostgreSQL type.
"""

from __future__ import annotations

import datetime

from django.db import models
from django.utils import timezone


class NumericField(models.DecimalField):
    """An unconstrained PostgreSQL ``numeric`` (no precision or scale), read as ``Decimal``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", None)
        kwargs.setdefault("decimal_places", None)
        super().__init__(*args, **kwargs)

    def _check_decimal_places(self):
        return []

    def _check_max_digits(self):
        return []

    def _check_decimal_places_and_max_digits(self, **kwargs):
        return []

    @property
    def validators(self):
        """No digit limits: the column accepts any numeric."""
        return list(self._validators) + list(self.default_validators)

    def db_type(self, connection):
        """The bare ``numeric`` type."""
        return "numeric"


class NaiveDateTimeField(models.DateTimeField):
    """
    A ``timestamp without time zone`` column (the bot writes these in server time, UTC).

    Values read back naive. Aware values given to filters are converted to naive UTC, and
    naive values pass without Django's "naive datetime" warning: naive is this column's type.
    """

    def db_type(self, connection):
        """``timestamp`` rather than Django's default ``timestamp with time zone``."""
        return "timestamp"

    def get_prep_value(self, value):
        """Naive UTC for the database; aware values are converted, not warned about."""
        value = models.Field.get_prep_value(self, value)
        if isinstance(value, datetime.datetime) and timezone.is_aware(value):
            return timezone.make_naive(value, datetime.UTC)
        return value
