"""A real Sentry ingestion endpoint on 127.0.0.1 for tests: receives and decodes envelopes."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sentry_sdk


@dataclass
class Envelope:
    """One received envelope: its raw (decoded) bytes, its header and its items."""

    raw: bytes
    headers: dict
    items: list[tuple[dict, bytes]] = field(default_factory=list)

    def payloads(self, item_type: str) -> list[dict]:
        """The JSON payloads of the items of one type (``event``, ``check_in``, ...)."""
        return [
            json.loads(body)
            for header, body in self.items
            if header.get("type") == item_type and body.strip()
        ]


def parse_envelope(raw: bytes) -> Envelope:
    """Split an envelope (header line, then item header + payload pairs) into its parts."""
    header_line, _, rest = raw.partition(b"\n")
    envelope = Envelope(raw=raw, headers=json.loads(header_line))
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_line)
        length = item_header.get("length")
        if length is None:
            body, _, rest = rest.partition(b"\n")
        else:
            body, rest = rest[:length], rest[length + 1 :]
        envelope.items.append((item_header, body))
    return envelope


class SentryServer:
    """
    A threading HTTP server that answers like Sentry's ingestion and keeps what it received.

    Args:
        dsn_secret: put this (legacy) secret key in the DSN, to prove it never leaks.

    Attributes:
        dsn: a DSN pointing at this server (project 1, public key ``public``).
        envelopes: every envelope received, in order of arrival.

    """

    def __init__(self, dsn_secret: str | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "br":
                    import brotli  # only when the SDK found it installed

                    body = brotli.decompress(body)
                with server._lock:
                    server.envelopes.append(parse_envelope(body))
                payload = b'{"id": "ok"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return  # keep test output quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        # A legacy secret key in the DSN travels in the auth header only, never in a body.
        key = f"public:{dsn_secret}" if dsn_secret else "public"
        self.dsn = f"http://{key}@127.0.0.1:{self.port}/1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> SentryServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def clear(self) -> None:
        """Forget what was received so far."""
        with self._lock:
            self.envelopes.clear()

    @property
    def raw(self) -> bytes:
        """Every received envelope's bytes, concatenated (to search for leaked secrets)."""
        with self._lock:
            return b"\n".join(envelope.raw for envelope in self.envelopes)

    def payloads(self, item_type: str) -> list[dict]:
        """All received payloads of one item type, in order of arrival."""
        with self._lock:
            envelopes = list(self.envelopes)
        return [payload for envelope in envelopes for payload in envelope.payloads(item_type)]

    def events(self) -> list[dict]:
        """Received error and message events."""
        return self.payloads("event")

    def check_ins(self) -> list[dict]:
        """Received cron check-ins."""
        return self.payloads("check_in")

    def wait_for(self, predicate: Callable[[SentryServer], bool], timeout: float = 5.0) -> bool:
        """Flush the SDK and wait until ``predicate(self)`` holds; return whether it did."""
        deadline = time.monotonic() + timeout
        while True:
            sentry_sdk.flush(timeout=1)
            if predicate(self):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


@contextlib.contextmanager
def sentry_initialised(dsn: str, **options: object) -> Iterator[None]:
    """
    Initialise Sentry the project's way (``init_sentry``) for one test, and switch it off after.

    Closing the client stops its transport thread; resetting the global scope's client leaves
    later tests with Sentry off, as they are without a DSN.
    """
    from observability.sentry import init_sentry

    init_sentry(
        dsn=dsn,
        environment=str(options.pop("environment", "test")),
        release=str(options.pop("release", "observability@test")),
        **options,  # type: ignore[arg-type]
    )
    try:
        yield
    finally:
        client = sentry_sdk.get_client()
        client.flush(timeout=2)
        client.close()
        sentry_sdk.get_global_scope().set_client(None)
        sentry_sdk.get_isolation_scope().clear()
        sentry_sdk.get_current_scope().clear()
