"""Cached principals must never outlive a change to the user, their roles or the node."""

from accounts.services import user_update
from collaborations.services import node_rotate_key


def test_second_request_reads_no_principal_rows(api_for, owner, django_assert_num_queries):
    client = api_for(owner)
    assert client.get("/api/organizations/").status_code == 200
    with django_assert_num_queries(1):  # the page's rows only (a short first page is its own count)
        assert client.get("/api/organizations/").status_code == 200


def test_deactivation_takes_effect_on_the_next_request(api_for, owner):
    client = api_for(owner)
    assert client.get("/api/organizations/").status_code == 200
    user_update(actor=None, user=owner, is_active=False)
    assert client.get("/api/organizations/").status_code == 401


def test_role_change_takes_effect_on_the_next_request(api_for, owner, collab, org_a):
    client = api_for(owner)
    assert client.get("/api/tasks/").status_code == 200
    user_update(actor=None, user=owner, roles=[])
    assert client.get("/api/tasks/").status_code == 403


def test_rotated_node_key_revokes_cached_node_tokens(api_for, node_a):
    client = api_for(node_a)
    assert client.get("/api/runs/").status_code == 200
    node_rotate_key(actor=None, node=node_a)
    assert client.get("/api/runs/").status_code == 401
