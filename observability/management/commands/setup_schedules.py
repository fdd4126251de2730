"""Create or update the django-q2 schedules (idempotent: run it on every deploy)."""

from __future__ import annotations

from datetime import datetime

from croniter import croniter
from django.core.management.base import BaseCommand
from django.utils import timezone
from django_q.models import Schedule

from observability import moments, tasks

#: Schedule names: the key ``update_or_create`` matches on.
CLEANUP_SCHEDULE = "observability: cleanup expired keys (daily)"
HEALTH_SCHEDULE = "observability: store health check (every 5 minutes)"
SNAPSHOT_SCHEDULE = "observability: session health snapshot (every minute)"
TABLE_SIZES_SCHEDULE = "observability: bot table and index sizes (hourly)"


def _next_run(cron: str, now: datetime) -> datetime:
    return croniter(cron, now).get_next(datetime)


def ensure_schedule(name: str, func: str, cron: str) -> tuple[Schedule, str]:
    """
    Create or update one cron schedule by name; say whether it was created or updated.

    ``next_run`` is set to the next occurrence when the schedule is created or its cron
    changes (a new daily cleanup must not run the moment it is installed), and left alone
    otherwise, so rerunning this never skips or repeats a run.
    """
    existing = Schedule.objects.filter(name=name).first()
    defaults = {"func": func, "schedule_type": Schedule.CRON, "cron": cron, "repeats": -1}
    if existing is None or existing.cron != cron or existing.schedule_type != Schedule.CRON:
        defaults["next_run"] = _next_run(cron, timezone.now())
    schedule, created = Schedule.objects.update_or_create(name=name, defaults=defaults)
    if created:
        return schedule, "created"
    changed = existing.func != func or "next_run" in defaults or existing.repeats != -1
    return schedule, "updated" if changed else "unchanged"


class Command(BaseCommand):
    """Set up the queued jobs: daily cleanup, 5-minute store alert, every-minute snapshot."""

    help = (
        "Create or update the django-q2 schedules: the daily expired-key cleanup (at "
        "OBSERVABILITY_CLEANUP_SCHEDULE_HOUR, UTC), the store health check every 5 minutes and "
        "the session health snapshot every minute, and the bot tables' sizes every hour."
    )

    def handle(self, *args, **options):
        """Ensure every schedule exists with the configured timing."""
        for name, func, cron in (
            (CLEANUP_SCHEDULE, tasks.CLEANUP_EXPIRED_KEYS, tasks.cleanup_cron()),
            (HEALTH_SCHEDULE, tasks.CHECK_STORE_HEALTH, tasks.HEALTH_CRON),
            (SNAPSHOT_SCHEDULE, tasks.TAKE_SNAPSHOT, tasks.SNAPSHOT_CRON),
            (TABLE_SIZES_SCHEDULE, tasks.CAPTURE_TABLE_SIZES, tasks.TABLE_SIZES_CRON),
        ):
            schedule, what = ensure_schedule(name, func, cron)
            self.stdout.write(
                f"{what}: {name} [{cron} UTC], next run {moments.text(schedule.next_run)}"
            )
