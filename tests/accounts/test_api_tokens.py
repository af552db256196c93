"""User tokens: login with username and password, refresh."""

from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import api_login_create
from collaborations.authentication import node_access_token
from tests import factories


def _login(username: str, password: str):
    return APIClient().post("/api/token/", {"username": username, "password": password})


def _refresh(token: str):
    return APIClient().post("/api/token/refresh/", {"refresh": token})


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_login_gives_an_access_token_that_works_and_a_refresh_token(owner):
    response = _login("owner", factories.PASSWORD)
    assert response.status_code == 200
    assert set(response.data) == {"access", "refresh"}
    me = _bearer(response.data["access"]).get(f"/api/users/{owner.pk}/")
    assert me.status_code == 200
    assert me.data["username"] == "owner"


def test_login_with_a_wrong_password_is_401_with_a_clear_message(owner):
    wrong = _login("owner", "not-the-password")
    assert wrong.status_code == 401
    assert "username or password" in wrong.data["detail"]
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    unknown = _login("nobody", factories.PASSWORD)
    assert unknown.status_code == 401
    assert unknown.data == wrong.data


def test_login_of_a_deactivated_user_is_401(owner):
    User.objects.filter(pk=owner.pk).update(is_active=False)
    assert _login("owner", factories.PASSWORD).status_code == 401


def test_login_names_the_missing_field(db):
    response = APIClient().post("/api/token/", {"username": "owner"})
    assert response.status_code == 400
    assert "password" in response.data
    response = APIClient().post("/api/token/", {"password": "x"})
    assert response.status_code == 400
    assert "username" in response.data


def test_login_ignores_a_stale_authorization_header(owner):
    response = _bearer("expired-or-garbage").post("/api/token/", {"username": "owner", "password": factories.PASSWORD})
    assert response.status_code == 200


def test_refresh_gives_a_new_access_token(owner):
    refresh = _login("owner", factories.PASSWORD).data["refresh"]
    response = _refresh(refresh)
    assert response.status_code == 200
    assert _bearer(response.data["access"]).get(f"/api/users/{owner.pk}/").status_code == 200


def test_refresh_refuses_garbage_and_access_tokens(owner, node_a):
    access = _login("owner", factories.PASSWORD).data["access"]
    for token in ("garbage", access, str(node_access_token(node_a))):
        assert _refresh(token).status_code == 401


def test_refresh_of_a_deleted_user_is_401_not_500(owner):
    refresh = str(api_login_create(user=owner))
    owner.delete()
    assert _refresh(refresh).status_code == 401


def test_refresh_of_a_deactivated_user_is_401(owner):
    refresh = str(api_login_create(user=owner))
    User.objects.filter(pk=owner.pk).update(is_active=False)
    assert _refresh(refresh).status_code == 401


def test_refresh_names_the_missing_field(db):
    response = APIClient().post("/api/token/refresh/", {})
    assert response.status_code == 400
    assert "refresh" in response.data


def test_a_refresh_token_is_not_an_access_token(owner):
    refresh = _login("owner", factories.PASSWORD).data["refresh"]
    assert _bearer(refresh).get(f"/api/users/{owner.pk}/").status_code == 401
