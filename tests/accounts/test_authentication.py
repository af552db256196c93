"""Bearer tokens: a process remembers the tokens it verified, never past their expiry."""

import time
from datetime import timedelta

from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts import authentication
from accounts.services import user_update


def _client(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_remembered_token_stops_working_when_it_expires(owner):
    token = AccessToken.for_user(owner)
    token.set_exp(lifetime=timedelta(seconds=1))
    client = _client(token)
    assert client.get("/api/organizations/").status_code == 200
    assert str(token).encode() in authentication._verified
    time.sleep(1.1)
    response = client.get("/api/organizations/")
    assert (response.status_code, response.data["detail"].code) == (401, "token_not_valid")


def test_a_remembered_token_of_a_deactivated_user_is_refused(owner):
    client = _client(AccessToken.for_user(owner))
    assert client.get("/api/organizations/").status_code == 200
    user_update(actor=None, user=owner, is_active=False)
    assert client.get("/api/organizations/").status_code == 401


def test_a_token_with_a_changed_signature_is_refused_after_the_genuine_one_was_seen(owner):
    genuine = str(AccessToken.for_user(owner))
    assert _client(genuine).get("/api/organizations/").status_code == 200
    head, payload, signature = genuine.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    assert _client(forged).get("/api/organizations/").status_code == 401


def test_the_cache_of_verified_tokens_stays_bounded(owner, monkeypatch):
    monkeypatch.setattr(authentication, "VERIFIED_TOKENS_MAX", 3)
    monkeypatch.setattr(authentication, "_verified", {})
    for _ in range(5):
        token = AccessToken.for_user(owner)
        token["nonce"] = time.monotonic_ns()  # a distinct token each time
        assert _client(token).get("/api/organizations/").status_code == 200
    assert len(authentication._verified) <= 3
