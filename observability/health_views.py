"""The /health/ endpoints and /metrics: who may see what, and warnings that do not page."""

from __future__ import annotations

import contextlib
import enum
import hmac
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from health_check.base import HealthCheckResult
from health_check.exceptions import HealthCheckException, ServiceWarning
from health_check.views import HealthCheckView

from observability import config, health_checks, metrics

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
        # The library assigns the gathered results here and renders every format from them:
        # this is the one place to decide what failed and what the caller may read.
        self.has_failure = any(
            result.error is not None and not isinstance(result.error, ServiceWarning)
            for result in value
        )
        log_state_changes(value)
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

    async def get(self, request, *args, **kwargs):
        permitted = False
        if _presented_token(request) is None and settings.SESSION_COOKIE_NAME in request.COOKIES:
            # Only a logged-in browser carries a session; monitors skip the session lookup.
            # Staff status alone is not enough: the messages name services and salons.
            user = await request.auser()
            permitted = await user.ahas_perm(HEALTH_DETAILS_PERMISSION)
        access = _access(request, permitted)
        if access is Access.REFUSED:
            return _refused()
        self.show_messages = access is Access.DETAILS
        response = await super().get(request, *args, **kwargs)
        if response.status_code == 500 and not self.has_failure:
            response.status_code = 200  # warnings only
        # A failing check is an answer, not a server error: the library already logged each
        # failing check as a warning, so keep Django from logging "Internal Server Error" (and
        # Sentry's logging integration from raising an event) on every poll of a monitor.
        response._has_been_logged = True
        return response


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
