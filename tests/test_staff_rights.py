"""Issue 15 §2: health details and /metrics need a named permission; Sentry test: superusers."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from tests.health_support import real_connections

pytestmark = pytest.mark.django_db(databases=["default", "bot"])

TOKEN = "staff-rights-token-0123456789abcdef"  # noqa: S105 (a test value)


@pytest.fixture(autouse=True)
def _health_settings(settings):
    settings.OBSERVABILITY_HEALTH_TOKEN = TOKEN


def _staff(django_user_model, *codenames: str):
    """A staff user (not a superuser) holding only the given permissions."""
    user = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    assert user.user_permissions.count() == len(codenames)
    return user


def _details(client) -> str:
    with real_connections("svc-rights", 4):
        response = client.get("/health/connections/", headers={"Accept": "application/json"})
    return response.json()["ConnectionBudget()"]


def test_health_details__staff_without_the_permission_sees_statuses_only(
    client, django_user_model
):
    """A staff user without "Can see health check details" gets the status word only."""
    client.force_login(_staff(django_user_model))
    assert _details(client) == "Warning"


def test_health_details__the_permission_shows_the_messages(client, django_user_model):
    """With "Can see health check details" the messages show (service names, counts)."""
    client.force_login(_staff(django_user_model, "view_health_details"))
    assert "svc-rights 4/3" in _details(client)


def test_health_details__the_bearer_token_still_shows_them(client):
    """Monitors keep their way in: the bearer token shows the messages, no login needed."""
    with real_connections("svc-rights", 4):
        response = client.get(
            "/health/connections/",
            headers={"Accept": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
    assert "svc-rights 4/3" in response.json()["ConnectionBudget()"]


def test_metrics__staff_without_the_permission_is_refused(client, django_user_model):
    """A staff user without "Can read /metrics" gets 403 naming the permission."""
    client.force_login(_staff(django_user_model, "view_health_details"))
    response = client.get("/metrics")
    assert response.status_code == 403
    assert "Can read /metrics" in response.json()["error"]["message"]


def test_metrics__the_permission_or_the_token_may_scrape(client, django_user_model):
    """With "Can read /metrics", or with the bearer token, the scrape answers."""
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    client.force_login(_staff(django_user_model, "view_metrics"))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"observability_scrape_error" in response.content


def test_metrics__superuser_may_scrape(admin_client):
    """Superusers hold every permission."""
    assert admin_client.get("/metrics").status_code == 200


def test_sentry_test_page__staff_refused_superuser_allowed(
    client, admin_client, django_user_model
):
    """The Sentry test page is for superusers: any other staff user, whatever rights, gets 403."""
    every = Permission.objects.filter(content_type__app_label="observability")
    user = _staff(django_user_model)
    user.user_permissions.add(*every)
    client.force_login(user)
    client.raise_request_exception = False
    assert client.get("/admin/observability/sentry-test/").status_code == 403
    assert client.post("/admin/observability/sentry-test/").status_code == 403
    assert admin_client.get("/admin/observability/sentry-test/").status_code == 200
