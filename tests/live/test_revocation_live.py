"""Revocation across server processes (issue 13.3): two servers sharing the database and
Redis, as behind a load balancer. What one process revokes, the other refuses on its very
next request: no process keeps its own copy of a user or a token."""

import pytest
import requests

from tests import factories

pytestmark = pytest.mark.slow


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only
    return session


def _login(server) -> dict:
    response = _session().post(f"{server.url}/api/token/", json={"username": "live-logouts",
                                                                 "password": factories.PASSWORD}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _get(server, access: str) -> int:
    return _session().get(f"{server.url}/api/organizations/", headers={"Authorization": f"Bearer {access}"},
                          timeout=30).status_code


def _refresh(server, refresh: str) -> int:
    return _session().post(f"{server.url}/api/token/refresh/", json={"refresh": refresh}, timeout=30).status_code


def test_a_logout_in_one_process_is_refused_by_the_other_on_the_next_request(redis_api_servers):
    one, other = redis_api_servers
    tokens, kept = _login(one), _login(one)
    for server in (one, other):
        for _ in range(3):  # each process has seen the tokens several times
            assert _get(server, tokens["access"]) == 200
    response = _session().post(f"{one.url}/api/logout/", headers={"Authorization": f"Bearer {tokens['access']}"},
                               timeout=30)
    assert response.status_code == 200
    assert _get(other, tokens["access"]) == 401
    assert _refresh(other, tokens["refresh"]) == 401
    assert _get(other, kept["access"]) == 200  # another login of the same user goes on

    response = _session().post(f"{other.url}/api/logout/everywhere/",
                               headers={"Authorization": f"Bearer {kept['access']}"}, timeout=30)
    assert response.status_code == 200
    assert _get(one, kept["access"]) == 401
    assert _refresh(one, kept["refresh"]) == 401
