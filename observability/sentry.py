"""
Sentry: initialised from settings, tagged per salon and operation, scrubbed before sending.

``project/settings.py`` calls :func:`init_sentry` with values it read from the environment;
with no DSN nothing is initialised and every helper here is a cheap no-op. Everything that leaves
the process passes through the scrubbers below first: the SDK's ``EventScrubber`` (with the
Baileys field names added to its denylist) for the parts it knows, then :func:`before_send`,
:func:`before_send_transaction` and :func:`before_breadcrumb`, which walk the whole payload,
including tags, contexts and messages, which the SDK's scrubber leaves alone.

What is removed: every field of ``creds`` and key ``value`` s, Node Buffers
(``{"type": "Buffer", "data": ...}``) anywhere, ``api_key``, ``webhook_secret``, passwords,
tokens, cookies and auth headers, passwords inside URLs (``scheme://user:pass@``), the values of
the configured secrets (database passwords, the health token, the secret key), and text that
looks like key material (base64, hex, byte lists, Python ``bytes``). Phone numbers are masked
(``7900***4567``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sentry_sdk
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

FILTERED = "[Filtered]"

#: Field names whose values never leave the process (matched whole, case-insensitively).
BAILEYS_FIELDS = [
    "creds",
    "value",
    "noiseKey",
    "private",
    "advSecretKey",
    "signature",
    "account",
    "pairingCode",
    "routingInfo",
    "signedIdentityKey",
    "signedPreKey",
    "pairingEphemeralKeyPair",
    "keyPair",
    "keyData",
    "identifierKey",
    "signalIdentities",
    "accountSignatureKey",
    "accountSignature",
    "deviceSignature",
    "details",
]
PROJECT_FIELDS = [
    "api_key",
    "webhook_secret",
    "whatsapp_session_data",
    "whatsapp_config",
    "raw_data",
    "email",
    "marketplace_user_email",
    "health_token",
    "x-health-token",
    "x_health_token",
    "http_x_health_token",
    "http_authorization",
    "http_cookie",
    "secret_key",
    "dsn",
    "sentry_dsn",
    "database_url",
    "bot_database_url",
    "pgpassword",
    "proxy_authorization",
]
#: The denylist given to the SDK's EventScrubber and applied to keys by the walkers here.
DENYLIST = DEFAULT_DENYLIST + BAILEYS_FIELDS + PROJECT_FIELDS
_DENIED = frozenset(name.lower() for name in DENYLIST)

#: Names whose values are filtered where they appear inside text (``name: value``,
#: ``name=value``, ``"name": {...}``). Narrower than the key denylist: generic words such as
#: ``session`` would swallow useful text.
_TEXT_KEYS = sorted(
    {name.lower() for name in BAILEYS_FIELDS + PROJECT_FIELDS}
    | {
        "password",
        "passwd",
        "secret",
        "apikey",
        "token",
        "auth",
        "authorization",
        "credentials",
        "cookie",
        "set-cookie",
        "sessionid",
        "csrftoken",
        "private_key",
        "privatekey",
    },
    key=len,
    reverse=True,
)

#: Keys whose values are the SDK's own identifiers (hex ids, thread ids): never rewritten.
_ID_KEYS = frozenset(
    {
        "event_id",
        "trace_id",
        "span_id",
        "parent_span_id",
        "check_in_id",
        "profile_id",
        "segment_id",
        "exception_id",
        "parent_id",
        "thread_id",
        "thread.id",
        "profiler_id",
        "replay_id",
    }
)
#: Top-level event fields written by the SDK from its own options: left as they are.
_SDK_FIELDS = frozenset(
    {
        "timestamp",
        "start_timestamp",
        "platform",
        "sdk",
        "modules",
        "measurements",
        "release",
        "environment",
        "server_name",
        "dist",
        "level",
        "logger",
        "type",
    }
)

# --- Text scrubbing ---------------------------------------------------------------------------

_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@'\"]*:)([^\s@/'\"]+)@")
_TEXT_KEY = re.compile(
    r"(?i)(?<![\w])([\"']?)(" + "|".join(re.escape(k) for k in _TEXT_KEYS) + r")\1\s*[:=]\s*"
)
_BUFFER_TEXT = re.compile(r"([\"']?)type\1\s*:\s*([\"'])Buffer\2\s*,\s*([\"']?)data\3\s*:\s*")
_BYTES_REPR = re.compile(r"(?<![\w])b([\"'])(?:\\.|(?!\1).)*?\\x[0-9a-fA-F]{2}(?:\\.|(?!\1).)*?\1")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{20,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])")
_BYTE_LIST = re.compile(r"(?<![\d.])\d{1,3}(?:\s*,\s*\d{1,3}){7,}(?![\d.])")
_PHONE = re.compile(r"(?<![\w.+])\+?\d(?:[ ()\-]{0,2}\d){10,14}(?![\w])")
_VALUE_END = " \t\r\n,;&}])\"'"
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "negotiate"})


def mask_phone_digits(digits: str) -> str:
    """``79001234567`` -> ``7900***4567`` (the project's one phone mask)."""
    return f"{digits[:4]}***{digits[-4:]}"


def _mask_phone(match: re.Match) -> str:
    return mask_phone_digits(re.sub(r"\D", "", match.group(0)))


def _value_end(text: str, start: int) -> int:
    """Index just past the value starting at ``start`` (quoted, bracketed or a bare token)."""
    n = len(text)
    if start >= n:
        return start
    first = text[start]
    if first in "\"'":
        i = start + 1
        while i < n:
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == first:
                return i + 1
            i += 1
        return n
    if first in "{[(":
        depth, quote, i = 0, None, start
        while i < n:
            char = text[i]
            if quote:
                if char == "\\":
                    i += 2
                    continue
                if char == quote:
                    quote = None
            elif char in "\"'":
                quote = char
            elif char in "{[(":
                depth += 1
            elif char in "}])":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    i = start
    while i < n and text[i] not in _VALUE_END:
        i += 1
    if text[start:i].lower() in _AUTH_SCHEMES:
        # "Authorization: Bearer <token>": the secret is the word after the scheme.
        while i < n and text[i] in " \t":
            i += 1
        return _value_end(text, i) if i < n else i
    return i


def _filter_values_after(pattern: re.Pattern, text: str) -> str:
    """Replace the value following each match of ``pattern`` (a ``name:`` prefix)."""
    pieces, position = [], 0
    for match in pattern.finditer(text):
        if match.start() < position:
            continue  # inside a value already filtered
        end = _value_end(text, match.end())
        if end == match.end():
            continue
        pieces.append(text[position : match.end()])
        pieces.append(FILTERED)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _looks_like_base64(match: re.Match) -> str:
    run = match.group(0)
    body = run.rstrip("=")
    mixed = (
        any(c.isupper() for c in body)
        and any(c.islower() for c in body)
        and any(c.isdigit() for c in body)
    )
    # Paths and URLs are runs of letters separated by many slashes; random base64 is not.
    if mixed and body.count("/") * 8 <= len(body):
        return FILTERED
    return run


def _byte_list(match: re.Match) -> str:
    numbers = [int(n) for n in re.findall(r"\d+", match.group(0))]
    return FILTERED if all(n <= 255 for n in numbers) else match.group(0)


def _known_secrets() -> list[str]:
    """Values configured as secrets (passwords, tokens, keys, the webhook's, DSN's)."""
    from django.conf import settings

    values: list[str] = []
    if not settings.configured:
        return values
    for name in (
        "HEALTH_TOKEN",
        "OBSERVABILITY_HEALTH_TOKEN",
        "SECRET_KEY",
        "OBSERVABILITY_ALERT_WEBHOOK_SECRET",  # signs the alert webhook (observability.webhook)
    ):
        values.append(str(getattr(settings, name, "") or ""))
    for database in getattr(settings, "DATABASES", {}).values():
        values.append(str(database.get("PASSWORD") or ""))
    dsn = sentry_sdk.get_client().dsn
    if dsn:
        values.append(urlsplit(dsn).password or "")  # a legacy DSN's secret key
    webhook = urlsplit(str(getattr(settings, "OBSERVABILITY_ALERT_WEBHOOK_URL", "") or ""))
    # Slack's and Telegram's webhook URLs carry their token in the path or the query
    # (/services/T0/B0/<token>, /bot<token>/sendMessage): a URL in a frame's variables or a
    # message must not hand it over. The host stays readable.
    values.extend([webhook.password or "", webhook.path, webhook.query])
    if webhook.query:
        values.append(f"{webhook.path}?{webhook.query}")
    values.extend(_extra_secrets)
    # Short values would match ordinary text; none of the real secrets is that short.
    return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)


_extra_secrets: list[str] = []


def register_secret(value: str) -> None:
    """Add a value that must never leave the process (e.g. a token read at runtime)."""
    if value and value not in _extra_secrets:
        _extra_secrets.append(value)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    """
    Remove secrets from free text and mask phone numbers in it.

    Args:
        text: a message, exception value, tag, SQL statement or variable's repr.
        secrets: the configured secret values (default: read from settings).

    Returns:
        The text with every secret replaced by ``[Filtered]`` and phones masked.

    """
    if not text:
        return text
    for secret in _known_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, FILTERED)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + FILTERED + "@", text)
    text = _filter_values_after(_TEXT_KEY, text)
    text = _filter_values_after(_BUFFER_TEXT, text)
    text = _BYTES_REPR.sub(FILTERED, text)
    text = _BASE64.sub(_looks_like_base64, text)
    text = _HEX.sub(FILTERED, text)
    text = _BYTE_LIST.sub(_byte_list, text)
    return _PHONE.sub(_mask_phone, text)


# --- Payload scrubbing ------------------------------------------------------------------------


def _is_buffer(node: dict) -> bool:
    return node.get("type") == "Buffer" and "data" in node


def _is_byte_list(node: list) -> bool:
    return len(node) >= 8 and all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 255 for n in node
    )


def scrub(node: Any, secrets: list[str] | None = None, *, keys: bool = True) -> Any:
    """
    Scrub any JSON-like value in place where possible; return the cleaned value.

    Args:
        node: a dict, list, string or number from an event, breadcrumb or transaction.
        secrets: the configured secret values (default: read from settings).
        keys: filter values whose key is on the denylist (off for the parts of an event whose
            keys are the event format's own, such as an exception's ``value``).

    """
    secrets = _known_secrets() if secrets is None else secrets
    if isinstance(node, str):
        return scrub_text(node, secrets)
    if isinstance(node, bool) or node is None or isinstance(node, float):
        return node
    if isinstance(node, int):
        return mask_phone_digits(str(node)) if 10**10 <= abs(node) < 10**15 else node
    if isinstance(node, dict):
        if _is_buffer(node):
            return FILTERED
        for key, value in list(node.items()):
            name = str(key).lower()
            if keys and name in _DENIED:
                node[key] = FILTERED
            elif name in _ID_KEYS and not isinstance(value, dict | list):
                continue
            else:
                node[key] = scrub(value, secrets)
        return node
    if isinstance(node, list | tuple):
        if _is_byte_list(list(node)):
            return FILTERED
        cleaned = [scrub(item, secrets, keys=keys) for item in node]
        return cleaned if isinstance(node, list) else tuple(cleaned)
    return node


def _scrub_stacktrace(stacktrace: Any, secrets: list[str]) -> None:
    if not isinstance(stacktrace, dict):
        return
    for frame in stacktrace.get("frames") or []:
        if not isinstance(frame, dict):
            continue
        if "vars" in frame:
            frame["vars"] = scrub(frame["vars"], secrets)
        for field in ("context_line", "pre_context", "post_context"):
            if field in frame:
                frame[field] = scrub(frame[field], secrets, keys=False)


def _scrub_exception_like(container: Any, secrets: list[str]) -> None:
    """Exceptions and threads: their own keys stay, their messages and frames are scrubbed."""
    values = container.get("values") if isinstance(container, dict) else None
    for entry in values or []:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("value"), str):
            entry["value"] = scrub_text(entry["value"], secrets)
        _scrub_stacktrace(entry.get("stacktrace"), secrets)


def scrub_event(event: dict) -> dict:
    """Scrub a whole error event or transaction (already serialized by the SDK)."""
    secrets = _known_secrets()
    for key, value in list(event.items()):
        if key in ("exception", "threads"):
            _scrub_exception_like(value, secrets)
        elif key == "stacktrace":
            _scrub_stacktrace(value, secrets)
        elif key in _SDK_FIELDS or key in _ID_KEYS:
            continue
        elif key == "spans" and isinstance(value, list):
            for span in value:
                if isinstance(span, dict):
                    for field in ("description", "data", "tags"):
                        if field in span:
                            span[field] = scrub(span[field], secrets)
        else:
            event[key] = scrub(value, secrets)
    return event


def _exception_tags(hint: dict) -> dict[str, str]:
    """Tags that :func:`sentry_scope` attached to the exception (innermost scope wins)."""
    from observability.exceptions import _causes

    exc_info = hint.get("exc_info") if hint else None
    error = exc_info[1] if exc_info else None
    tags: dict[str, str] = {}
    if error is None:
        return tags
    for cause in _causes(error):  # outermost first, so the innermost tags win
        tags.update(getattr(cause, "_sentry_tags", None) or {})
    return tags


def _operation_from_frames(event: dict) -> str | None:
    """``task:<function>`` or ``command:<name>`` from the outermost frame of ours that ran."""
    for entry in (event.get("exception") or {}).get("values") or []:
        for frame in (entry.get("stacktrace") or {}).get("frames") or []:
            module = str(frame.get("module") or "")
            if module == "observability.tasks":
                return f"task:{frame.get('function')}"
            if module.startswith("observability.management.commands."):
                return f"command:{module.rsplit('.', 1)[1]}"
    return None


def _fallback_tags(event: dict, hint: dict) -> dict[str, str]:
    """``operation`` and ``alias`` for events raised outside any :func:`sentry_scope`."""
    from observability import config
    from observability.exceptions import (
        BotDatabaseUnavailable,
        QueryTimedOut,
        SchemaDrift,
        _causes,
    )

    tags: dict[str, str] = {}
    operation = _operation_from_frames(event)
    if operation is None and event.get("transaction"):
        operation = f"view:{event['transaction']}"
    if operation:
        tags["operation"] = operation
    exc_info = hint.get("exc_info") if hint else None
    if exc_info and exc_info[1] is not None:
        bot_errors = BotDatabaseUnavailable | QueryTimedOut | SchemaDrift
        if any(isinstance(cause, bot_errors) for cause in _causes(exc_info[1])):
            tags["alias"] = config.bot_database_alias()
    return tags


def before_send(event: dict, hint: dict) -> dict | None:
    """Tag and scrub an error or message event; return other events (check-ins) unchanged."""
    if event.get("type") not in (None, "error", "default"):
        return event
    tags = {**_fallback_tags(event, hint), **(event.get("tags") or {}), **_exception_tags(hint)}
    if tags:
        event["tags"] = tags
    return scrub_event(event)


def before_send_transaction(event: dict, hint: dict) -> dict | None:
    """Scrub a performance transaction (span descriptions hold SQL; data may hold values)."""
    return scrub_event(event)


def before_breadcrumb(crumb: dict, hint: dict) -> dict | None:
    """Scrub a breadcrumb when it is recorded (log lines, SQL, HTTP calls)."""
    secrets = _known_secrets()
    for key in list(crumb):
        if key in ("message", "data"):
            crumb[key] = scrub(crumb[key], secrets)
    return crumb


# --- Initialisation ---------------------------------------------------------------------------


def init_sentry(
    dsn: str | None,
    environment: str,
    release: str,
    traces_sample_rate: float = 0.0,
    profiles_sample_rate: float = 0.0,
) -> bool:
    """
    Initialise the Sentry SDK, or do nothing when no DSN is configured.

    ``send_default_pii`` is not passed at all: it defaults to off, and passing it (even False)
    is deprecated in sentry-sdk 2.x. Profiling uses the continuous profiler bound to sampled
    transactions (transaction-based profiling is deprecated).

    Args:
        dsn: the project's DSN; empty or None leaves Sentry off.
        environment: e.g. ``production``, ``staging``.
        release: the release name, e.g. ``observability@0.1.0``.
        traces_sample_rate: share of requests and tasks traced (0 to 1).
        profiles_sample_rate: share of profiling sessions (0 to 1); needs traces.

    Returns:
        True when Sentry is on.

    Raises:
        ImproperlyConfigured: a sample rate outside 0..1.

    """
    from django.core.exceptions import ImproperlyConfigured

    if not dsn:
        return False
    for name, rate in (
        ("SENTRY_TRACES_SAMPLE_RATE", traces_sample_rate),
        ("SENTRY_PROFILES_SAMPLE_RATE", profiles_sample_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            raise ImproperlyConfigured(f"{name} must be between 0 and 1, not {rate}.")

    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    profiling: dict[str, Any] = {}
    if profiles_sample_rate > 0:
        profiling = {
            "profile_session_sample_rate": profiles_sample_rate,
            "profile_lifecycle": "trace",
        }
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        traces_sample_rate=traces_sample_rate,
        integrations=[
            DjangoIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        event_scrubber=EventScrubber(denylist=list(DENYLIST), recursive=True),
        before_send=before_send,
        before_send_transaction=before_send_transaction,
        before_breadcrumb=before_breadcrumb,
        max_breadcrumbs=50,
        **profiling,
    )
    return True


def is_enabled() -> bool:
    """True when a Sentry client with a DSN is active in this process."""
    client = sentry_sdk.get_client()
    return client.is_active() and bool(client.dsn)


# --- Tags, captures, tasks and cron monitors --------------------------------------------------


def _tags(salon_id: Any, operation: str | None, alias: str | None) -> dict[str, str]:
    from observability.session_ids import describe

    tags: dict[str, str] = {}
    if salon_id is not None and salon_id != "":
        parsed = describe(str(salon_id).strip())
        tags["salon"] = str(parsed.salon_id) if parsed.salon_id is not None else "unparseable"
    if operation:
        tags["operation"] = operation
    if alias:
        tags["alias"] = alias
    return tags


def _attach_tags(error: BaseException, tags: dict[str, str]) -> None:
    existing = getattr(error, "_sentry_tags", None) or {}
    with contextlib.suppress(AttributeError, TypeError):
        # The innermost scope saw the failure first and is the most precise: keep its tags.
        error._sentry_tags = {**tags, **existing}  # type: ignore[attr-defined]


@contextlib.contextmanager
def sentry_scope(
    *, salon_id: int | str | None = None, operation: str | None = None, alias: str | None = None
) -> Iterator[None]:
    """
    Tag everything reported inside the block, and any exception escaping it, for Sentry.

    The tags travel on the exception too, so an error caught and reported far from here (by
    Django, the middleware or a task wrapper) still carries them.

    Args:
        salon_id: the salon, in either spelling (tagged in the bare form, ``962302``).
        operation: what the code was doing, e.g. ``sessions.detail`` or ``cleanup.expired``.
        alias: the database alias it talked to.

    """
    tags = _tags(salon_id, operation, alias)
    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            scope.set_tag(key, value)
        try:
            yield
        except BaseException as error:
            _attach_tags(error, tags)
            raise


def capture_error(
    error: BaseException,
    *,
    salon_id: int | str | None = None,
    operation: str | None = None,
    alias: str | None = None,
) -> str | None:
    """Report ``error`` with the project's tags; return the event id (None when Sentry is off)."""
    _attach_tags(error, _tags(salon_id, operation, alias))
    if not is_enabled():
        # The SDK builds (and serialises the frames' locals of) an event even without a
        # client; without the Django integration a QuerySet local is evaluated by its repr,
        # i.e. the failing database is queried again, once per frame.
        return None
    return sentry_sdk.capture_exception(error)


def capture_alert(
    message: str,
    *,
    cause: str,
    action: str,
    level: str = "error",
    operation: str = "health.alert",
    **context: Any,
) -> str | None:
    """
    Report an alert (e.g. a failing store-health cause) as a Sentry message.

    Args:
        message: what is wrong, for a person.
        cause: a stable name of the cause; the fingerprint, so each cause is one issue.
        action: the recommended action, shown with the event.
        level: ``warning`` or ``error``.
        operation: the ``operation`` tag.
        **context: extra facts (numbers, counts; never secrets or phones).

    Returns:
        The event id, or None when Sentry is off.

    """
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["observability-alert", cause]
        scope.set_tag("operation", operation)
        scope.set_tag("cause", cause)
        scope.set_context("alert", {"cause": cause, "recommended_action": action, **context})
        return sentry_sdk.capture_message(f"{message} Recommended action: {action}", level=level)


def report_task_failures(operation: str | None = None) -> Callable[[F], F]:
    """
    Decorate a django-q2 task so its exceptions reach Sentry before django-q2 records them.

    django-q2 only stores a failed task's traceback; without this, nobody is told. The
    exception is re-raised, so the task still fails and a ``Failure`` row is written.

    Args:
        operation: the ``operation`` tag (default: ``task:<module>.<function>``).

    """

    def decorate(func: F) -> F:
        name = operation or f"task:{func.__module__}.{func.__qualname__}"

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with sentry_scope(operation=name):
                try:
                    return func(*args, **kwargs)
                except Exception as error:
                    sentry_sdk.capture_exception(error)
                    # A warning, not an error: an error record would reach Sentry twice.
                    logger.warning("task %s failed: %s", name, type(error).__name__)
                    raise

        return wrapper  # type: ignore[return-value]

    return decorate


def cron_monitor(
    slug: str,
    crontab: str,
    *,
    max_runtime_minutes: int = 30,
    checkin_margin_minutes: int = 5,
) -> sentry_sdk.monitor:
    """
    A Sentry cron monitor for a scheduled task (decorator or ``with``).

    It checks in ``in_progress`` when the task starts and ``ok`` or ``error`` when it ends, and
    sends the schedule along (upsert), so Sentry alerts when a run is missed or runs too long.

    Args:
        slug: the monitor's name in Sentry, e.g. ``cleanup-expired-keys``.
        crontab: the schedule, e.g. ``"0 3 * * *"`` (UTC).
        max_runtime_minutes: a run longer than this is marked failed.
        checkin_margin_minutes: how late a run may start before it counts as missed.

    """
    return sentry_sdk.monitor(
        monitor_slug=slug,
        monitor_config={
            "schedule": {"type": "crontab", "value": crontab},
            "timezone": "UTC",
            "checkin_margin": checkin_margin_minutes,
            "max_runtime": max_runtime_minutes,
        },
    )
