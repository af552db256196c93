"""Tokens and sessions die when they should (issue 13.3): a logout, "log out everywhere",
a password change or reset, deactivation and role removal stop every token and session of
the user on the very next request."""

import time
from datetime import datetime, timedelta, timezone

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.test import Client
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from rest_framework.test import APIClient

from accounts.models import ApiLogin, AuditEvent
from accounts.services import api_login_create, user_end_sessions, user_update
from core import authentication
from tests import factories

NEW_PASSWORD = "another-long-passphrase-77"


def _bearer(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _login(username="owner", password=factories.PASSWORD):
    response = APIClient().post("/api/token/", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.data
    return response.data["access"], response.data["refresh"]


def _refresh(refresh):
    return APIClient().post("/api/token/refresh/", {"refresh": refresh}, format="json")


@pytest.fixture
def portal(owner):
    client = Client()
    client.force_login(owner)
    assert client.get("/portal/").status_code == 200
    return client


def _all_dead(access, refresh, portal):
    assert _bearer(access).get("/api/organizations/").status_code == 401
    assert _refresh(refresh).status_code == 401
    assert portal.get("/portal/").status_code == 302  # back to the login page


def test_a_remembered_token_stops_working_when_it_expires(owner):
    token = api_login_create(user=owner).access_token
    # "exp" is whole seconds and counted from the token's own creation time, so a one-second
    # lifetime could end before the first request on a busy machine: two seconds from now
    # leave at least one.
    token.set_exp(from_time=datetime.now(timezone.utc), lifetime=timedelta(seconds=2))
    client = _bearer(token)
    assert client.get("/api/organizations/").status_code == 200
    assert str(token).encode() in authentication._verified
    time.sleep(max(0.0, token["exp"] - time.time()) + 0.1)
    response = client.get("/api/organizations/")
    assert (response.status_code, response.data["detail"].code) == (401, "token_not_valid")


def test_a_token_with_a_changed_signature_is_refused(owner):
    genuine = factories.access_token(owner)
    assert _bearer(genuine).get("/api/organizations/").status_code == 200
    head, payload, signature = genuine.split(".")
    assert _bearer(f"{head}.{payload}.{signature[:-4]}AAAA").get("/api/organizations/").status_code == 401


def test_the_cache_of_verified_tokens_stays_bounded(owner, monkeypatch):
    monkeypatch.setattr(authentication, "VERIFIED_TOKENS_MAX", 3)
    monkeypatch.setattr(authentication, "_verified", {})
    for _ in range(5):
        assert _bearer(factories.access_token(owner)).get("/api/organizations/").status_code == 200
    assert len(authentication._verified) <= 3


def test_a_remembered_token_is_refused_once_its_login_ends(owner):
    access, _refresh_token = _login()
    client = _bearer(access)
    for _ in range(3):
        assert client.get("/api/organizations/").status_code == 200
    assert access.encode() in authentication._verified
    ApiLogin.objects.filter(user=owner).delete()
    assert client.get("/api/organizations/").status_code == 401


def test_a_token_without_a_login_is_refused(owner):
    from rest_framework_simplejwt.tokens import AccessToken

    response = _bearer(AccessToken.for_user(owner)).get("/api/organizations/")
    assert (response.status_code, response.data["detail"].code) == (401, "token_revoked")


def test_a_refresh_token_is_not_an_access_token(owner):
    _access, refresh = _login()
    assert _bearer(refresh).get("/api/organizations/").status_code == 401


def test_logout_ends_this_login_only(owner):
    access, refresh = _login()
    other_access, other_refresh = _login()
    response = _bearer(access).post("/api/logout/")
    assert response.status_code == 200
    assert _bearer(access).get("/api/organizations/").status_code == 401
    assert _refresh(refresh).status_code == 401
    assert _bearer(other_access).get("/api/organizations/").status_code == 200
    assert _refresh(other_refresh).status_code == 200
    assert AuditEvent.objects.filter(verb="user.logged_out", target_id=str(owner.pk)).count() == 1


def test_an_access_token_minted_by_refresh_dies_with_its_login(owner):
    access, refresh = _login()
    minted = _refresh(refresh).data["access"]
    assert _bearer(minted).get("/api/organizations/").status_code == 200
    assert _bearer(access).post("/api/logout/").status_code == 200
    assert _bearer(minted).get("/api/organizations/").status_code == 401


def test_logout_everywhere_ends_every_token_and_session(owner, portal):
    access, refresh = _login()
    other_access, _other_refresh = _login()
    response = _bearer(other_access).post("/api/logout/everywhere/")
    assert (response.status_code, response.data["api_logins"]) == (200, 2)
    _all_dead(access, refresh, portal)
    assert _bearer(other_access).get("/api/organizations/").status_code == 401
    event = factories.last_event("user.sessions_ended")
    assert (event.target_id, event.details["reason"]) == (str(owner.pk), "logout_everywhere")
    assert not ApiLogin.objects.filter(user=owner).exists()


def test_logout_needs_a_user(anon, node_a, api_for):
    assert anon.post("/api/logout/").status_code == 401
    assert api_for(node_a).post("/api/logout/everywhere/").status_code == 403


def test_a_password_change_ends_every_token_and_session(owner, portal):
    access, refresh = _login()
    user_update(actor=None, user=owner, password=NEW_PASSWORD)
    _all_dead(access, refresh, portal)
    assert _login(password=NEW_PASSWORD)  # the new password opens a new login
    assert factories.last_event("user.sessions_ended").details["reason"] == "password_changed"


def test_a_password_reset_ends_every_token_and_session(owner, portal):
    access, refresh = _login()
    owner.refresh_from_db()
    response = APIClient().post("/api/password-reset/confirm/", {
        "uid": urlsafe_base64_encode(force_bytes(owner.pk)), "token": default_token_generator.make_token(owner),
        "password": NEW_PASSWORD,
    }, format="json")
    assert response.status_code == 200
    _all_dead(access, refresh, portal)


def test_deactivation_ends_every_token_and_session(owner, portal):
    access, refresh = _login()
    user_update(actor=None, user=owner, is_active=False)
    _all_dead(access, refresh, portal)


def test_removing_a_role_ends_every_token_and_session(owner, portal):
    access, refresh = _login()
    user_update(actor=None, user=owner, roles=["viewer"])
    _all_dead(access, refresh, portal)
    assert factories.last_event("user.sessions_ended").details["reason"] == "role_removed"


def test_adding_a_role_or_editing_a_name_keeps_the_sessions(owner, portal):
    access, refresh = _login()
    user_update(actor=None, user=owner, roles=["researcher", "viewer"], first_name="Olga")
    assert _bearer(access).get("/api/organizations/").status_code == 200
    assert _refresh(refresh).status_code == 200
    assert portal.get("/portal/").status_code == 200


def test_a_role_change_takes_effect_on_the_next_request(api_for, owner):
    client = api_for(owner)
    assert client.get("/api/tasks/").status_code == 200
    user_update(actor=None, user=owner, roles=[])
    assert client.get("/api/tasks/").status_code == 401


def test_a_rotated_node_key_revokes_node_tokens(api_for, node_a):
    from collaborations.services import node_rotate_key

    client = api_for(node_a)
    assert client.get("/api/runs/").status_code == 200
    node_rotate_key(actor=None, node=node_a)
    assert client.get("/api/runs/").status_code == 401


def test_ending_sessions_is_audited_with_the_actor(owner, root):
    user_end_sessions(actor=root, user=owner, reason="logout_everywhere")
    event = AuditEvent.objects.filter(verb="user.sessions_ended").latest("id")
    assert (event.actor_id, event.target_id) == (root.pk, str(owner.pk))
