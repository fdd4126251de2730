"""The /health/ endpoints and /metrics: who may see what, and warnings that do not page."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.generic import View
from health_check.base import HealthCheckResult
from health_check.exceptions import HealthCheckException, ServiceWarning
from health_check.views import HealthCheckView, MediaType

from observability import config, health_checks, metrics, moments

logger = logging.getLogger(__name__)


# --- Who is asking ----------------------------------------------------------------------------


#: Shows the health checks' messages to a logged-in user (superusers have every permission).
HEALTH_DETAILS_PERMISSION = "observability.view_health_details"
#: Lets a logged-in user read /metrics.
METRICS_PERMISSION = "observability.view_metrics"


class Access(enum.Enum):
    """What a caller may see."""

    REFUSED = "refused"  #: presented a wrong bearer token
    STATUS_ONLY = "status"  #: anonymous or without the permission: statuses, no messages
    DETAILS = "details"  #: the permission or the right bearer token: messages too


def _presented_token(request: HttpRequest) -> str | None:
    """The bearer token of the ``Authorization`` header, or None when there is none."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


def token_matches(presented: str) -> bool:
    """
    Compare a presented token with ``HEALTH_TOKEN`` in constant time.

    ``hmac.compare_digest`` takes as long for a token wrong in its first character as for one
    wrong in its last, so the token cannot be guessed a character at a time. With no token
    configured nothing matches.
    """
    expected = config.health_token()
    if not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def _access(request: HttpRequest, permitted: bool) -> Access:
    """A bearer token decides alone; otherwise the logged-in user's named permission."""
    presented = _presented_token(request)
    if presented is not None:
        return Access.DETAILS if token_matches(presented) else Access.REFUSED
    return Access.DETAILS if permitted else Access.STATUS_ONLY


def _refused(message: str = "The bearer token is not valid.") -> HttpResponse:
    response = JsonResponse({"error": {"code": "unauthorized", "message": message}}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="observability"'
    return response


# --- /health/ ---------------------------------------------------------------------------------


class _StatusOnly(HealthCheckException):
    """A check's error without its message, for callers who may not read messages."""

    def __init__(self, error: HealthCheckException) -> None:
        super().__init__("", timestamp=error.timestamp)
        self.message_type = error.message_type

    def __str__(self) -> str:
        return self.message_type


_last_states: dict[str, str] = {}
_last_states_lock = threading.Lock()


def _state(result: HealthCheckResult) -> str:
    if result.error is None:
        return "OK"
    return "WARN" if isinstance(result.error, ServiceWarning) else "FAIL"


def log_state_changes(results: list[HealthCheckResult]) -> None:
    """
    Log each check once per change of state (OK, WARN, FAIL), not on every poll.

    The first poll of a process logs what is not OK; later polls log only a check that
    turns WARN or FAIL (a warning, with the check's message, which never carries a secret)
    or recovers (info). Each process remembers its own last states: with several web
    workers each logs a change once.
    """
    for result in results:
        name = repr(result.check)
        state = _state(result)
        with _last_states_lock:
            before = _last_states.get(name, "OK")
            _last_states[name] = state
        if state == before:
            continue
        if state == "OK":
            logger.info("health check %s recovered: %s -> OK", name, before)
        else:
            logger.warning("health check %s: %s -> %s: %s", name, before, state, result.error)


class SharedResults:
    """
    The service checks' results, shared for a moment by the callers of one process.

    Why: monitors, load balancers and probes poll ``/health/`` together. Each request used to
    run every check (eight checks, about 18 SQL statements, a thread each): under 50
    concurrent callers one process spent its time running the same checks 50 times over and
    answered in a second. The answer is the same for all of them, so:

    - an answer is served for ``health_result_ttl`` (default 1 s) from its computation's
      start, never longer;
    - one computation at a time per answer (single flight): a caller that finds no valid
      answer waits for the computation in flight instead of starting its own;
    - from half the TTL on, the next caller computes the next answer while the others keep
      the still-valid one, so a busy process does not stall every second to refresh it.

    This is not the per-session caches issue 13 removed: those held the salons' verdicts,
    computed from the bot tables, for 10 and 30 s, so pages disagreed about a salon. This holds
    only the service's own liveness (this process, the databases, the pools, the snapshot's
    age, the job queue), for one second: a failure shows on the first request that arrives
    more than that after the last computation began (or on the computation it joins). The
    salons' verdict (``/health/whatsapp/``) is never shared here; it is read from the stored
    snapshot on every request.

    Results are kept per group and per list of checks (``/health/db/`` never answers with
    ``/health/``'s results, nor after a settings change with another alias list), with their
    messages: who may read the messages is decided per request. A computation that raises is
    not kept: its waiters get the error and the next caller computes again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[tuple, tuple[float, list[HealthCheckResult]]] = {}
        self._flights: dict[tuple, tuple[float, Future]] = {}

    def get(
        self, key: tuple, ttl: timedelta, compute: Callable[[], list[HealthCheckResult]]
    ) -> list[HealthCheckResult]:
        """The results for ``key``: a valid shared answer, the one in flight, or computed."""
        seconds = ttl.total_seconds()
        if seconds <= 0:
            return compute()
        now = time.monotonic()
        with self._lock:
            answer = self._answers.get(key)
            flight = self._flights.get(key)
            age = now - answer[0] if answer is not None else seconds
            # Valid, and either young or already being replaced: serve it.
            if age < seconds and (flight is not None or age < seconds / 2):
                return answer[1]
            owner = flight is None
            if owner:
                flight = (now, Future())
                self._flights[key] = flight
        if not owner:
            return flight[1].result()
        try:
            results = compute()
        except BaseException as error:
            self._land(key, flight, None)
            flight[1].set_exception(error)
            raise
        self._land(key, flight, results)
        flight[1].set_result(results)
        return results

    def _land(self, key: tuple, flight: tuple, results: list[HealthCheckResult] | None) -> None:
        """End ``flight``; keep its results unless it failed or was forgotten meanwhile."""
        with self._lock:
            if self._flights.get(key) is not flight:
                return
            del self._flights[key]
            if results is not None:
                self._answers[key] = (flight[0], results)

    def clear(self) -> None:
        """Forget every kept result (tests; a computation in flight still answers its callers)."""
        with self._lock:
            self._answers.clear()
            self._flights.clear()


#: This process's shared service results (see :class:`SharedResults`).
shared_results = SharedResults()

#: The library's ``?format=`` values, and the Accept media types it answers, by renderer.
_FORMATS = ("json", "text", "atom", "rss", "openmetrics")
_MEDIA_TYPES = {
    "text/plain": "text",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/*": "html",
    "*/*": "html",
    "application/json": "json",
    "application/*": "json",
    "application/atom+xml": "atom",
    "application/rss+xml": "rss",
    "application/openmetrics-text": "openmetrics",
}


#: The stored snapshot's moment (RFC 3339, UTC) and age in whole seconds, on every answer of a
#: group that judges the snapshot (``/health/``, ``/health/snapshot/``, ``/health/whatsapp/``).
SNAPSHOT_TAKEN_AT_HEADER = "X-Snapshot-Taken-At"
SNAPSHOT_AGE_HEADER = "X-Snapshot-Age"


def snapshot_taken_at(results: list[HealthCheckResult]) -> datetime | None:
    """The moment of the snapshot the checks judged (None: none judged one, or none exists)."""
    for result in results:
        taken_at = getattr(result.check, "snapshot_taken_at", None)
        if taken_at is not None:
            return taken_at
    return None


def snapshot_headers(response: HttpResponse, taken_at: datetime | None) -> None:
    """
    Say the snapshot's age on every answer, OK included (issue 13: every page shows it).

    The library's formats give an OK check no message (JSON ``"OK"``, which monitors match),
    so the age travels in headers, whatever the format and the caller's access (a moment is no
    secret); a WARN or FAIL message says it too. No header before the first snapshot: the
    check then fails saying so.
    """
    if taken_at is None:
        return
    taken_at = taken_at.astimezone(UTC)
    response[SNAPSHOT_TAKEN_AT_HEADER] = taken_at.isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )
    age = max(0, int((timezone.now() - taken_at).total_seconds()))
    response[SNAPSHOT_AGE_HEADER] = str(age)


class HealthView(HealthCheckView):
    """
    The library's view with this project's checks, access rules and status codes.

    - ``group`` picks the checks (``observability.health_checks.checks_for``).
    - HTTP 200 when nothing fails, warnings included (the library answers 500 on a warning);
      500 when a check fails, so a monitor pages on failures only.
    - Anonymous callers see each check's status only; staff and bearer-token callers see the
      messages; a wrong bearer token is refused with 401.
    - Checks run in a private thread pool that is not waited for, so a check stuck past its
      own timeout cannot hold the response.
    - The service groups' results are shared by concurrent and close callers
      (:class:`SharedResults`). The view is synchronous, unlike the library's: a shared answer
      then needs no event loop nor thread, which cost more than rendering it; only a
      computation runs the library's ``get_result`` on an event loop of its own.
    """

    group: str = "all"
    checks = ()
    show_messages: bool = False

    def get_checks(self) -> Iterator:
        yield from health_checks.checks_for(self.group)

    @contextlib.contextmanager
    def get_executor(self) -> Iterator[Executor]:
        executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health-check")
        try:
            yield executor
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def results(self) -> list[HealthCheckResult]:
        return self._results

    @results.setter
    def results(self, value: list[HealthCheckResult]) -> None:
        # Every format is rendered from these: the one place to decide what failed and what
        # the caller may read.
        self.has_failure = any(
            result.error is not None and not isinstance(result.error, ServiceWarning)
            for result in value
        )
        if not self.show_messages:
            value = [
                HealthCheckResult(
                    check=result.check,
                    error=_StatusOnly(result.error) if result.error else None,
                    time_taken=result.time_taken,
                )
                for result in value
            ]
        self._results = value

    def _run_checks(self, checks: list) -> list[HealthCheckResult]:
        """Run the checks as the library does (each with its timeout); log changes of state."""

        async def gather() -> list[HealthCheckResult]:
            with self.get_executor() as executor:
                return await asyncio.gather(*(check.get_result(executor) for check in checks))

        results = asyncio.run(gather())
        log_state_changes(results)
        return results

    def _service_results(self) -> list[HealthCheckResult]:
        checks = list(self.get_checks())
        if self.group != "all" and self.group not in health_checks.SERVICE_GROUPS:
            return self._run_checks(checks)  # the salons' verdict: never shared
        key = (self.group, tuple(repr(check) for check in checks))
        ttl = config.health_result_ttl()
        return shared_results.get(key, ttl, lambda: self._run_checks(checks))

    @method_decorator(transaction.non_atomic_requests)
    def dispatch(self, request, *args, **kwargs):
        # The library's dispatch, synchronous (see the class docstring).
        response = View.dispatch(self, request, *args, **kwargs)
        patch_vary_headers(response, ["Accept"])
        add_never_cache_headers(response)
        return response

    def get(self, request, *args, **kwargs):
        permitted = False
        if _presented_token(request) is None and settings.SESSION_COOKIE_NAME in request.COOKIES:
            # Only a logged-in browser carries a session; monitors skip the session lookup.
            # Staff status alone is not enough: the messages name services and salons.
            permitted = request.user.has_perm(HEALTH_DETAILS_PERMISSION)
        access = _access(request, permitted)
        if access is Access.REFUSED:
            return _refused()
        self.show_messages = access is Access.DETAILS
        self.results = self._service_results()
        response = self._render(request, 500 if self.has_failure else 200, **kwargs)
        snapshot_headers(response, snapshot_taken_at(self.results))
        # A failing check is an answer, not a server error: the library already logged each
        # failing check as a warning, so keep Django from logging "Internal Server Error" (and
        # Sentry's logging integration from raising an event) on every poll of a monitor.
        response._has_been_logged = True
        return response

    def get_context_data(self, **kwargs):
        """The library's page, with the snapshot's moment and age above the checks."""
        taken_at = snapshot_taken_at(self.results)
        return {
            **super().get_context_data(**kwargs),
            "snapshot_as_of": moments.text(taken_at) if taken_at else None,
        }

    def _render(self, request, status: int, **kwargs) -> HttpResponse:
        """The library's content negotiation (``HealthCheckView.get``) over these results."""
        chosen = request.GET.get("format")
        if chosen not in _FORMATS:
            chosen = None
            for media in MediaType.parse_header(request.headers.get("accept", "*/*")):
                chosen = _MEDIA_TYPES.get(media.mime_type)
                if chosen:
                    break
        match chosen:
            case "json":
                return self.render_to_response_json(status)
            case "text":
                return self.render_to_response_text(status)
            case "html":
                return self.render_to_response(self.get_context_data(**kwargs), status=status)
            case "atom":
                return self.render_to_response_atom()
            case "rss":
                return self.render_to_response_rss()
            case "openmetrics":
                return self.render_to_response_openmetrics()
        return HttpResponse(
            "Not Acceptable: Supported content types: text/plain, text/html, application/json, "
            "application/atom+xml, application/rss+xml, application/openmetrics-text",
            status=406,
            content_type="text/plain",
        )


# --- /metrics ---------------------------------------------------------------------------------


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition, for a user with the permission or the bearer token."""
    access = _access(request, request.user.has_perm(METRICS_PERMISSION))
    if access is Access.STATUS_ONLY and request.user.is_authenticated:
        return JsonResponse(
            {
                "error": {
                    "code": "forbidden",
                    "message": "Reading /metrics needs the permission “Can read /metrics”.",
                }
            },
            status=403,
        )
    if access is Access.STATUS_ONLY:
        return _refused("Present the health bearer token (Authorization: Bearer ...) or log in.")
    if access is Access.REFUSED:
        return _refused()
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
