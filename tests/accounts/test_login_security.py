"""Lockout after repeated failures, password reset by emailed token, and their emails."""

import re

import pytest
from django.core import mail
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import AuditEvent, User
from tests import factories

NEW_PASSWORD = "a-fresh-long-passphrase-42"


@pytest.fixture(autouse=True)
def _clean_throttles():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice(org_a):
    return factories.make_user(org_a, username="alice", email="alice@example.org")


def _login(password, username="alice"):
    return APIClient().post("/api/token/", {"username": username, "password": password}, format="json")


def test_account_locks_after_the_threshold_and_refuses_even_the_right_password(
    alice, settings, django_capture_on_commit_callbacks
):
    settings.VANTAGE_LOCKOUT_THRESHOLD = 3
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):
            assert _login("wrong-password").status_code == 401
    locked = _login(factories.PASSWORD)
    assert locked.status_code == 401
    assert "locked until" in str(locked.data["detail"])
    assert AuditEvent.objects.filter(verb="user.locked", target_id=str(alice.pk)).count() == 1
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.org"]
    assert "locked until" in mail.outbox[0].body


def test_a_successful_login_resets_the_failure_count(alice, settings):
    settings.VANTAGE_LOCKOUT_THRESHOLD = 3
    assert _login("wrong-password").status_code == 401
    assert _login("wrong-password").status_code == 401
    assert _login(factories.PASSWORD).status_code == 200
    assert _login("wrong-password").status_code == 401
    assert _login(factories.PASSWORD).status_code == 200
    assert User.objects.get(pk=alice.pk).locked_until is None


def test_the_lock_expires(alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    User.objects.filter(pk=alice.pk).update(locked_until=timezone.now() - timedelta(seconds=1))
    assert _login(factories.PASSWORD).status_code == 200


def test_unknown_usernames_answer_like_wrong_passwords(db):
    response = _login("whatever", username="nobody")
    assert response.status_code == 401
    assert "locked" not in str(response.data["detail"])


def _reset_link(body: str) -> tuple[str, str]:
    uid = re.search(r'"uid": "([^"]+)"', body).group(1)
    token = re.search(r'"token": "([^"]+)"', body).group(1)
    return uid, token


def test_password_reset_by_emailed_token_works_once_and_unlocks(alice, django_capture_on_commit_callbacks):
    User.objects.filter(pk=alice.pk).update(failed_logins=3)
    client = APIClient()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/password-reset/", {"email": "ALICE@example.org"}, format="json")
    assert response.status_code == 202
    assert len(mail.outbox) == 1
    uid, token = _reset_link(mail.outbox[0].body)

    confirm = {"uid": uid, "token": token, "password": NEW_PASSWORD}
    assert client.post("/api/password-reset/confirm/", confirm, format="json").status_code == 200
    assert _login(NEW_PASSWORD).status_code == 200
    assert _login(factories.PASSWORD).status_code == 401
    again = client.post("/api/password-reset/confirm/", {**confirm, "password": "yet-another-passphrase-1"},
                        format="json")
    assert again.status_code == 400 and "token" in again.data
    assert AuditEvent.objects.filter(verb="user.password_reset").count() == 1


def test_password_reset_answers_the_same_for_unknown_addresses(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post("/api/password-reset/", {"email": "nobody@example.org"}, format="json")
    assert response.status_code == 202
    assert mail.outbox == []


def test_password_reset_rejects_weak_passwords_and_bad_input(alice, django_capture_on_commit_callbacks):
    client = APIClient()
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/api/password-reset/", {"email": "alice@example.org"}, format="json")
    uid, token = _reset_link(mail.outbox[0].body)
    weak = client.post("/api/password-reset/confirm/", {"uid": uid, "token": token, "password": "123"}, format="json")
    assert weak.status_code == 400 and "password" in weak.data
    assert client.post("/api/password-reset/", {"email": "not-an-address"}, format="json").data.keys() == {"email"}
    forged = client.post("/api/password-reset/confirm/", {"uid": "MTIzNDU", "token": "x-y", "password": NEW_PASSWORD},
                         format="json")
    assert forged.status_code == 400 and "token" in forged.data


def test_password_reset_requests_are_throttled(db, settings):
    client = APIClient()
    statuses = [client.post("/api/password-reset/", {"email": "a@example.org"}, format="json").status_code
                for _ in range(6)]
    assert statuses == [202] * 5 + [429]
