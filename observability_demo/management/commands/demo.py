"""Run the whole demo for a newcomer: embedded database, demo data, admin login, server, worker."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands

from observability import config, schema, snapshot
from observability.exceptions import BadInput
from observability.management.base import ObservabilityCommand
from observability_demo import demo_data

ADMIN_USERNAME = "admin"
_WORKER_STOP_SECONDS = 15


class Command(ObservabilityCommand):
    """``manage.py demo [--port 8000] [--no-worker] [--no-serve]``."""

    help = (
        "Set up and serve the demo on the embedded PostgreSQL: migrate, create the bot tables "
        "and demo data if absent, create an admin login, then serve the admin on 127.0.0.1 with "
        "the django-q2 worker beside it. Ctrl-C stops both."
    )

    def add_arguments(self, parser):
        """Declare the options."""
        parser.add_argument(
            "--port", type=int, default=8000, help="Port on 127.0.0.1 to serve on (default 8000)."
        )
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Do not start the django-q2 worker (scheduled jobs will not run).",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Set everything up, then exit without serving (for tests and scripts).",
        )

    def handle(self, *args, port=8000, no_worker=False, no_serve=False, **options):
        """Refuse outside the embedded database, set up what is missing, then serve."""
        if not settings.EMBEDDED_DATABASE:
            raise BadInput(
                "The demo runs only on the embedded PostgreSQL: unset DATABASE_URL and "
                "BOT_DATABASE_URL (it must never write demo data into a real database)."
            )
        if not 1 <= port <= 65535:
            raise BadInput(f"--port must be between 1 and 65535, not {port}.")
        if not no_serve:
            _ensure_port_free(port)

        self._set_up()

        if no_serve:
            self.stdout.write("Demo set up. Serve it with: manage.py demo", self.style.SUCCESS)
            return
        self._serve(port, with_worker=not no_worker)

    def _step(self, message: str) -> None:
        self.stdout.write(f"- {message}")

    def _set_up(self) -> None:
        self._step(f"Embedded PostgreSQL in {settings.EMBEDDED_DATA_DIR}")
        self._step("Migrating the project's database")
        call_command("migrate", interactive=False, verbosity=0)

        alias = config.bot_database_alias()
        present = schema.existing_bot_tables(alias)
        if not present:
            self._step("Creating the bot tables")
            schema.create_bot_tables(alias)
        elif len(present) < len(schema.BOT_TABLES):
            raise BadInput(
                f"Only some bot tables exist ({', '.join(present)}). Recreate them with: "
                "python manage.py create_bot_schema --replace"
            )
        summary = demo_data.seed_demo_data(demo_data.SIZES["small"], alias=alias, if_empty=True)
        given = None
        if summary.skipped:
            self._step("Demo data present: kept as it is")
        else:
            self._step(
                f"Demo data written: {summary.companies} salons, {summary.clients:,} clients, "
                f"{summary.sessions} WhatsApp sessions, {summary.keys:,} keys"
            )
            given = self._seed_history()

        self._ensure_admin()
        if "setup_schedules" in get_commands():
            self._step("Creating the scheduled jobs (the snapshot is refreshed every minute)")
            call_command("setup_schedules", verbosity=0)
        first = snapshot.latest() is None
        self._step("Taking the first session health snapshot (pages read it)")
        result = snapshot.refresh(full=True)
        self._step(f"Snapshot: {result.sessions_total} sessions in {result.duration:.1f} s")
        if first and given is not None:
            from observability_demo import demo_history

            days = demo_history.HISTORY_DAYS
            demo_history.seed_state_history(result.taken_at, given)
            self._step(
                f"Session history written for the {days} days before it: the live snapshots "
                "continue it (no session reads new; each status since its fault began)"
            )

    def _seed_history(self) -> dict[str, str]:
        """The history the detectors read, so the first snapshot catches one session each."""
        from django.utils import timezone

        from observability import sessions
        from observability_demo import demo_history

        chosen = demo_history.pick(sessions.list_sessions())
        if not chosen:
            return {}
        given = demo_history.seed_demo_history(chosen, timezone.now())
        shown = ", ".join(f"{detector} ({sid})" for sid, detector in given.items())
        self._step(f"Demo history written: the first snapshot catches {shown}")
        return given

    def _ensure_admin(self) -> None:
        """Create the ``admin`` superuser once and print its random password that one time."""
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self._step(
                "An admin login exists already (its password was shown when it was created; "
                f"reset it with: python manage.py changepassword {ADMIN_USERNAME})"
            )
            return
        if user_model.objects.filter(username=ADMIN_USERNAME).exists():
            raise BadInput(
                f"A user named {ADMIN_USERNAME!r} exists but is not a superuser. Create one "
                "with: python manage.py createsuperuser"
            )
        password = secrets.token_urlsafe(12)
        # create_superuser stores only the password's hash.
        user_model.objects.create_superuser(username=ADMIN_USERNAME, email="", password=password)
        self.stdout.write(
            "Admin login created. The password is shown this once and stored only as a "
            f"hash:\n    username: {ADMIN_USERNAME}\n    password: {password}",
            self.style.WARNING,
        )

    def _serve(self, port: int, *, with_worker: bool) -> None:
        # Ctrl-C (SIGINT) and a plain `kill` (SIGTERM) both end runserver through
        # KeyboardInterrupt, so the worker below is always stopped with it. SIGINT is set
        # explicitly because a shell that starts us in the background may have ignored it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        worker = None
        if with_worker:
            self._step("Starting the django-q2 worker (qcluster, pooling off)")
            # The worker forks its processes, which must not share pooled connections.
            environment = {**os.environ, "DB_POOL": "0"}
            worker = subprocess.Popen(  # noqa: S603 (our own interpreter and manage.py)
                [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"],
                env=environment,
            )
        self.stdout.write(
            f"Serving the admin on http://127.0.0.1:{port}/admin/ (Ctrl-C stops everything)",
            self.style.SUCCESS,
        )
        try:
            call_command(
                "runserver",
                f"127.0.0.1:{port}",
                insecure_serving=True,
                use_reloader=False,
            )
        finally:
            if worker is not None:
                _stop(worker)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _ensure_port_free(port: int) -> None:
    """Fail early with a clear message (runserver would exit without stopping the worker)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As runserver does: connections of a server just stopped (TIME_WAIT) do not count,
        # a live listener still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise BadInput(
                f"Port {port} on 127.0.0.1 is in use: stop what uses it or pass --port."
            ) from error


def _stop(worker: subprocess.Popen) -> None:
    """Ask the worker to stop (it finishes its current task), then kill it if it hangs."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=_WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
