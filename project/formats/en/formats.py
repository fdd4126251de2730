"""
What Django writes for a date or time it formats itself: the absolute part of the one format.

The ops pages write every moment through ``observability.admin.display.when``
(``2026-11-30 19:40 UTC · 3 hours ago``), and list columns of other apps' admins through
``MomentColumnsMixin``. What is left to Django (a read-only field on a page of django-q2 or of
the auth app) reads ``2026-11-30 19:40 UTC`` here instead of ``Nov. 30, 2026, 7:40 p.m.``.
Input formats are Django's own (nothing here changes what a form accepts).
"""

DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"
# The admin's date drill-down names a day by it (``2026-11-30``, not ``November 30``).
MONTH_DAY_FORMAT = "Y-m-d"
