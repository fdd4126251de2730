"""Tests of the transition stream and its webhook, delivered to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from observability import alerts, snapshot, webhook
from observability.models import AlertDelivery, Company
from tests import factories

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

SECRET = "whsec-test-secret-never-sent"  # noqa: S105 - a test key
SID = "company_962302"
PHONE = "79001234567"
# Deliveries run on the worker with the wall clock: the transitions happen now.
T0 = timezone.now().replace(microsecond=0)
MIN = timedelta(minutes=1)


class Receiver:
    """A webhook receiver on 127.0.0.1: records each request, answers the statuses queued."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), raw))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/whatsapp"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    with Receiver() as running:
        settings.OBSERVABILITY_ALERT_WEBHOOK_URL = running.url
        settings.OBSERVABILITY_ALERT_WEBHOOK_SECRET = SECRET
        settings.OBSERVABILITY_PUBLIC_URL = "https://ops.example.com"
        yield running


def _salon_fails_then_recovers(*, recover: bool = True) -> None:
    """Refreshes at T0 (OK), T0+1 (the bot says disconnected: FAIL), T0+2 (reconnected: OK)."""
    factories.make_company(962302, title="Лотос", whatsapp_phone="+7 (900) 123-45-67")
    factories.make_session(SID, now=T0, phone=PHONE)
    snapshot.refresh(now=T0)
    Company.objects.filter(company_id=962302).update(whatsapp_connected=False)
    snapshot.refresh(full=True, now=T0 + MIN)
    if recover:
        Company.objects.filter(company_id=962302).update(whatsapp_connected=True)
        snapshot.refresh(full=True, now=T0 + 2 * MIN)


def test_webhook__fail_and_recovery_are_delivered_signed_to_a_local_server(receiver):
    """The FAIL and the recovery each reach the receiver once, signed with HMAC-SHA256."""
    _salon_fails_then_recovers()
    result = alerts.dispatch_transitions(now=T0 + 2 * MIN)
    assert result["transitions"] == 2 and result["sent"] == 2
    assert len(receiver.requests) == 2  # django-q2 runs the delivery tasks inline in tests
    for headers, raw in receiver.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers[webhook.SIGNATURE_HEADER], expected)
        assert SECRET not in raw.decode() and PHONE not in raw.decode()
    fail = json.loads(receiver.requests[0][1])
    assert fail["event"] == "session.status" and fail["session"] == SID
    assert fail["salon"] == {"id": 962302, "title": "Лотос"}
    assert fail["payload"]["status"] == "FAIL" and fail["payload"]["previous"] == "OK"
    assert fail["payload"]["cause"] == "bot_flags"
    assert "whatsapp_connected is false" in fail["payload"]["reasons"][0]
    assert fail["payload"]["since"] == (T0 + MIN).isoformat()
    assert (
        fail["url"]
        == "https://ops.example.com/admin/observability/sessionstate/company_962302/change/"
    )
    recovery = json.loads(receiver.requests[1][1])
    assert (recovery["payload"]["previous"], recovery["payload"]["status"]) == ("FAIL", "OK")
    assert recovery["payload"]["cause"] == "bot_flags"
    assert set(AlertDelivery.objects.values_list("outcome", flat=True)) == {"delivered"}


def _wait_for_retry() -> None:
    """Let the backoff pass (the worker's deliveries use the wall clock)."""
    AlertDelivery.objects.filter(outcome="pending").update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def test_webhook__retried_after_a_500_with_backoff_and_never_sent_twice(receiver):
    """A 500 is retried when its backoff is due; once delivered, nothing is sent again."""
    _salon_fails_then_recovers(recover=False)
    receiver.statuses = [500]
    alerts.dispatch_transitions(now=T0 + MIN)
    delivery = AlertDelivery.objects.get()
    assert (delivery.outcome, delivery.attempts, delivery.response_status) == ("pending", 1, 500)
    assert delivery.next_attempt_at - delivery.last_attempt_at == MIN  # the first backoff
    early = delivery.last_attempt_at + timedelta(seconds=30)
    assert webhook.deliver(delivery.pk, now=early) == "skipped"  # not due yet
    assert len(receiver.requests) == 1
    _wait_for_retry()
    alerts.dispatch_transitions()  # the retry is due: queued again
    delivery.refresh_from_db()
    assert (delivery.outcome, delivery.attempts, delivery.response_status) == (
        "delivered",
        2,
        200,
    )
    assert len(receiver.requests) == 2
    assert receiver.requests[0][1] == receiver.requests[1][1]  # the same body, resent
    alerts.dispatch_transitions()
    assert webhook.deliver(delivery.pk) == "skipped"
    assert len(receiver.requests) == 2


def test_webhook__gives_up_after_the_last_attempt(receiver, settings):
    """A receiver that keeps failing: the delivery is marked failed after the last attempt."""
    settings.OBSERVABILITY_ALERT_WEBHOOK_MAX_ATTEMPTS = 2
    _salon_fails_then_recovers(recover=False)
    receiver.statuses = [503, 503]
    alerts.dispatch_transitions(now=T0 + MIN)
    _wait_for_retry()
    alerts.dispatch_transitions()
    delivery = AlertDelivery.objects.get()
    assert (delivery.outcome, delivery.attempts, delivery.error) == ("failed", 2, "HTTP 503")
    assert delivery.next_attempt_at is None


def _worker_died_mid_send(ago: timedelta) -> None:
    """A worker claimed the pending delivery ``ago`` and died before recording the outcome."""
    AlertDelivery.objects.filter(outcome__in=["pending", "sending"]).update(
        outcome="sending", last_attempt_at=timezone.now() - ago
    )


def test_webhook__a_delivery_left_sending_by_a_dead_worker_is_sent_again(receiver):
    """Stuck 'sending' past twice the timeout plus a minute: the next run delivers it once."""
    _salon_fails_then_recovers(recover=False)
    receiver.statuses = [500]
    alerts.dispatch_transitions(now=T0 + MIN)
    _worker_died_mid_send(timedelta(seconds=30))  # maybe still sending: left alone
    alerts.dispatch_transitions()
    assert AlertDelivery.objects.get().outcome == "sending" and len(receiver.requests) == 1
    _worker_died_mid_send(webhook.stuck_after() + timedelta(seconds=1))
    alerts.dispatch_transitions()
    delivery = AlertDelivery.objects.get()
    assert (delivery.outcome, delivery.attempts, delivery.response_status) == (
        "delivered",
        3,  # the 500, the dead worker's, this one
        200,
    )
    assert len(receiver.requests) == 2
    alerts.dispatch_transitions()
    assert len(receiver.requests) == 2


def test_webhook__a_delivery_that_keeps_killing_workers_is_given_up(receiver, settings):
    """A stuck delivery at its last attempt is marked failed, with why, and not sent again."""
    settings.OBSERVABILITY_ALERT_WEBHOOK_MAX_ATTEMPTS = 2
    _salon_fails_then_recovers(recover=False)
    receiver.statuses = [500]
    alerts.dispatch_transitions(now=T0 + MIN)
    _worker_died_mid_send(webhook.stuck_after() + timedelta(seconds=1))
    alerts.dispatch_transitions()
    delivery = AlertDelivery.objects.get()
    assert (delivery.outcome, delivery.attempts) == ("failed", 2)
    assert "worker" in delivery.error and len(receiver.requests) == 1


def test_webhook__an_unreachable_receiver_is_an_attempt_with_its_error(settings):
    """A closed port: the attempt is recorded with the connection error, retried later."""
    settings.OBSERVABILITY_ALERT_WEBHOOK_URL = "http://127.0.0.1:9/nothing-listens"
    settings.OBSERVABILITY_ALERT_WEBHOOK_TIMEOUT = timedelta(seconds=2)
    _salon_fails_then_recovers(recover=False)
    alerts.dispatch_transitions(now=T0 + MIN)
    delivery = AlertDelivery.objects.get()
    assert delivery.outcome == "pending" and delivery.attempts == 1
    assert delivery.response_status is None and "URLError" in delivery.error


@pytest.mark.parametrize(
    "url",
    [
        "hooks.example.com/services/T0/B0/tok-Xy7Qz1",  # no scheme
        "http://127.0.0.1:9/services/tok-Xy7Qz1 x",  # a control character in the path
    ],
)
def test_webhook__a_malformed_url_is_named_not_echoed(settings, caplog, url):
    """A webhook URL urllib refuses: the error names the setting, not the URL's token."""
    settings.OBSERVABILITY_ALERT_WEBHOOK_URL = url
    _salon_fails_then_recovers(recover=False)
    alerts.dispatch_transitions(now=T0 + MIN)
    delivery = AlertDelivery.objects.get()
    assert delivery.outcome == "pending" and delivery.attempts == 1
    assert "ALERT_WEBHOOK_URL" in delivery.error
    assert "tok-Xy7Qz1" not in delivery.error
    assert "tok-Xy7Qz1" not in caplog.text


def test_webhook__a_receiver_answering_garbage_is_a_failed_attempt(settings):
    """A receiver whose answer is not HTTP: the attempt is recorded and retried, not stuck."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_garbage():
        connection, _ = server.accept()
        connection.recv(65536)
        connection.sendall(b"garbage\r\n\r\n")
        connection.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    settings.OBSERVABILITY_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.getsockname()[1]}/h"
    try:
        _salon_fails_then_recovers(recover=False)
        alerts.dispatch_transitions(now=T0 + MIN)
    finally:
        thread.join(timeout=5)
        server.close()
    delivery = AlertDelivery.objects.get()
    assert delivery.outcome == "pending" and delivery.attempts == 1
    assert delivery.error.startswith("BadStatusLine")


def test_transitions__a_repeat_within_the_cooldown_is_suppressed_with_its_recovery(receiver):
    """The same session and cause failing again within the cooldown goes out once only."""
    _salon_fails_then_recovers()
    alerts.dispatch_transitions(now=T0 + 2 * MIN)
    Company.objects.filter(company_id=962302).update(whatsapp_connected=False)
    snapshot.refresh(full=True, now=T0 + 3 * MIN)
    Company.objects.filter(company_id=962302).update(whatsapp_connected=True)
    snapshot.refresh(full=True, now=T0 + 4 * MIN)
    result = alerts.dispatch_transitions(now=T0 + 4 * MIN)
    assert (result["transitions"], result["sent"], result["suppressed"]) == (2, 0, 2)
    assert len(receiver.requests) == 2
    outcomes = list(AlertDelivery.objects.order_by("change_id").values_list("outcome", flat=True))
    assert outcomes == ["delivered", "delivered", "suppressed", "suppressed"]


def test_transitions__seen_long_ago_are_recorded_not_sent(receiver, sentry_server):
    """Transitions read 11 min after they were seen (seeded history, a backlog): not sent."""
    factories.make_company(962303, title="Роза")
    factories.make_session("company_962303", now=T0, phone="79001234500")
    _salon_fails_then_recovers()
    alerts.dispatch_transitions(now=T0 + 2 * MIN)
    assert len(receiver.requests) == 2
    sentry_server.wait_for(lambda server: len(server.events()) == 1)
    Company.objects.filter(company_id=962303).update(whatsapp_connected=False)
    snapshot.refresh(full=True, now=T0 + 3 * MIN)
    result = alerts.dispatch_transitions(now=T0 + 14 * MIN)  # snapshot_stale_failure: 10 min
    assert (result["transitions"], result["sent"], result["too_old"]) == (1, 0, 1)
    assert AlertDelivery.objects.get(session_id="company_962303").outcome == "too_old"
    assert len(receiver.requests) == 2
    sentry_server.wait_for(lambda server: False, timeout=0.3)
    assert len(sentry_server.events()) == 1  # the first salon's FAIL only


def test_transitions__without_a_webhook_are_recorded_and_reported_to_sentry(sentry_server):
    """No webhook configured: the transition is recorded and the FAIL reaches Sentry."""
    _salon_fails_then_recovers(recover=False)
    alerts.dispatch_transitions(now=T0 + MIN)
    delivery = AlertDelivery.objects.get()
    assert delivery.outcome == "no_webhook" and delivery.sentry
    assert sentry_server.wait_for(lambda server: server.events())
    event = sentry_server.events()[0]
    assert event["fingerprint"] == ["observability-alert", "session.bot_flags"]


def test_prune__alert_deliveries_past_retention_go_each_sessions_newest_stays(receiver):
    """The snapshot's retention prunes old deliveries; a session's newest one is kept."""
    _salon_fails_then_recovers()
    alerts.dispatch_transitions(now=T0 + 2 * MIN)
    assert AlertDelivery.objects.count() == 2
    later = T0 + timedelta(days=91)
    snapshot.refresh(full=True, now=later)
    kept = AlertDelivery.objects.get()
    assert (kept.old_status, kept.new_status) == ("FAIL", "OK")
    # The stream resumes after the kept delivery: the old transitions do not go out again.
    alerts.dispatch_transitions(now=later)
    resent = AlertDelivery.objects.exclude(pk=kept.pk).filter(at__lt=later)
    assert not resent.exists()


def test_admin__alert_deliveries_are_listed_read_only(admin_client, receiver):
    """The admin lists deliveries and shows one; nothing can be added, changed or deleted."""
    _salon_fails_then_recovers(recover=False)
    alerts.dispatch_transitions(now=T0 + MIN)
    delivery = AlertDelivery.objects.get()
    listing = admin_client.get("/admin/observability/alertdelivery/")
    assert listing.status_code == 200 and SID in listing.content.decode()
    page = admin_client.get(f"/admin/observability/alertdelivery/{delivery.pk}/change/")
    assert page.status_code == 200 and SECRET not in page.content.decode()
    assert admin_client.get("/admin/observability/alertdelivery/add/").status_code == 403
    post = admin_client.post(f"/admin/observability/alertdelivery/{delivery.pk}/change/", {})
    assert post.status_code == 403
    assert (
        admin_client.get("/admin/observability/alertdelivery/?payload__icontains=x").status_code
        == 400
    )
