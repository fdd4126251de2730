"""The client's address behind the reverse proxy that terminates TLS (for login throttling)."""

from __future__ import annotations

from django.http import HttpRequest


def forwarded_client_ip(request: HttpRequest) -> str | None:
    """
    The address the proxy saw: the last ``X-Forwarded-For`` entry, which the proxy appended.

    Entries before it come from the client and may be forged; the last one cannot be, as long
    as only the proxy reaches this server (``BEHIND_TLS_PROXY=1`` says so). Without the header,
    the connection's own address.
    """
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last or request.META.get("REMOTE_ADDR")
