"""Issue 15 §2: staff logins are throttled (django-axes), logged without passwords, and expire."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import RequestFactory

from project.client_ip import forwarded_client_ip

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "the-right-password-4f1c"  # noqa: S105 (a test value)
WRONG = "wrong-password-9b7e-secret"  # noqa: S105 (a test value)


@pytest.fixture
def staff(django_user_model):
    """A staff user with a known password."""
    return django_user_model.objects.create_user("ops", password=PASSWORD, is_staff=True)


def _login(client, password: str, username: str = "ops", address: str = "10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def _logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_login__locked_after_the_failure_limit_right_password_refused_for_the_cool_off(
    client, staff, settings
):
    """After N wrong passwords the right one is refused (429) until the cool-off has passed."""
    settings.AXES_FAILURE_LIMIT = 5
    for _ in range(4):
        response = _login(client, WRONG)
        assert response.status_code == 200  # the form again, with its error
    assert _login(client, WRONG).status_code == 429  # the fifth locks
    refused = _login(client, PASSWORD)
    assert refused.status_code == 429
    assert b"Login locked" in refused.content
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still sent to the login page

    # Another address is not locked out by this one's failures (username + address).
    assert _logged_in(_login(client, PASSWORD, address="10.0.0.2"))
    client.logout()

    # Once the cool-off has passed, the right password works again.
    from axes.models import AccessAttempt

    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - settings.AXES_COOLOFF_TIME
    )
    assert _logged_in(_login(client, PASSWORD))


def test_login__success_forgets_earlier_failures(client, staff, settings):
    """Four failures, a success, four failures: never locked (the count starts again)."""
    settings.AXES_FAILURE_LIMIT = 5
    for _ in range(4):
        _login(client, WRONG)
    assert _logged_in(_login(client, PASSWORD))
    client.logout()
    for _ in range(4):
        assert _login(client, WRONG).status_code == 200
    assert _logged_in(_login(client, PASSWORD))


def test_login__failures_are_logged_without_the_password(client, staff, caplog):
    """Each failed login is logged with the username and address, never the password."""
    caplog.set_level(logging.DEBUG)
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        _login(client, WRONG)
    _login(client, PASSWORD)
    assert 'New login failure by {username: "ops", ip_address: "10.0.0.1"' in caplog.text
    assert 'Locking out {username: "ops", ip_address: "10.0.0.1"' in caplog.text
    assert WRONG not in caplog.text
    assert PASSWORD not in caplog.text
    # The stored attempt (shown in the admin) masks it too.
    from axes.models import AccessAttempt

    for attempt in AccessAttempt.objects.all():
        assert WRONG not in attempt.post_data and PASSWORD not in attempt.post_data


def test_settings__defaults_for_throttling_and_session_lifetime():
    """Five failures per username and address, a 15-minute cool-off, 12-hour staff sessions."""
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert settings.MIDDLEWARE[-1] == "axes.middleware.AxesMiddleware"
    assert settings.SESSION_COOKIE_AGE == 12 * 3600


def test_staff_session__cookie_lasts_the_configured_lifetime(client, staff):
    """The session cookie of a staff login expires after SESSION_COOKIE_AGE (12 h)."""
    response = _login(client, PASSWORD)
    assert _logged_in(response)
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert int(cookie["max-age"]) == 12 * 3600
    assert client.session.get_expiry_age() == 12 * 3600


def test_forwarded_client_ip__the_address_the_proxy_appended():
    """Behind the proxy: the last X-Forwarded-For entry (a forged first one is ignored)."""
    factory = RequestFactory()
    forged = factory.get("/", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7", REMOTE_ADDR="10.0.0.9")
    assert forwarded_client_ip(forged) == "203.0.113.7"
    direct = factory.get("/", REMOTE_ADDR="10.0.0.9")
    assert forwarded_client_ip(direct) == "10.0.0.9"
