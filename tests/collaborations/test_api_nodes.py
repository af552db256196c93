"""REST API for nodes: registration, key shown once, rotation, node tokens, the node's own endpoints."""

import pytest
from rest_framework.test import APIClient

from accounts.audit import verify_chain
from accounts.models import AuditEvent
from collaborations.models import Node
from collaborations.serializers import MAX_REPORTED_CONFIG_BYTES
from tests import factories

def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _node_token(api_key: str):
    return APIClient().post("/api/node/token/", {"api_key": api_key})


def _assert_no_key_material(body, node: Node) -> None:
    """Neither the stored hash nor the lookup prefix appears (the key itself holds the prefix)."""
    node.refresh_from_db()
    text = str({k: v for k, v in body.items() if k != "api_key"} if isinstance(body, dict) else body)
    assert node.api_key_hash not in text
    assert node.api_key_prefix not in text


def _create(client, org, collab, name="node-new"):
    return client.post("/api/nodes/", {"name": name, "organization": org.pk, "collaboration": collab.pk})


# --- list and detail -----------------------------------------------------------------


def test_node_list_shows_the_collaborations_nodes_without_key_material(api_for, owner, node_a, node_b):
    response = api_for(owner).get("/api/nodes/")
    assert response.status_code == 200
    assert [n["name"] for n in response.data["results"]] == ["node-a", "node-b"]
    first = response.data["results"][0]
    assert set(first) == {"id", "name", "organization", "collaboration", "status", "last_seen_at",
                          "reported_config", "key_created_at", "created_at"}
    assert first["status"] == "offline"
    _assert_no_key_material(response.data, node_a)
    _assert_no_key_material(response.data, node_b)


def test_node_list_filters_by_organisation_collaboration_and_status(api_for, root, node_a, node_b, org_b,
                                                                    org_c, other_collab):
    node_c, _ = factories.make_node(org_c, other_collab, name="node-c")
    Node.objects.filter(pk=node_b.pk).update(status=Node.Status.ONLINE)
    client = api_for(root)
    assert [n["id"] for n in client.get("/api/nodes/", {"organization": org_b.pk}).data["results"]] == [node_b.pk]
    assert [n["id"] for n in client.get("/api/nodes/", {"collaboration": other_collab.pk}).data["results"]] == [
        node_c.pk]
    assert [n["id"] for n in client.get("/api/nodes/", {"status": "online"}).data["results"]] == [node_b.pk]
    bad = client.get("/api/nodes/", {"status": "asleep"})
    assert bad.status_code == 400
    assert "status" in bad.data


def test_node_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/nodes/").status_code == 401


def test_node_detail_is_absent_for_an_outsider(api_for, outsider, node_a):
    assert api_for(outsider).get(f"/api/nodes/{node_a.pk}/").status_code == 404


def test_node_detail_is_refused_to_a_node(api_for, node_a):
    assert api_for(node_a).get(f"/api/nodes/{node_a.pk}/").status_code == 403


# --- create: the key is shown once ---------------------------------------------------


def test_node_create_shows_the_key_once_and_it_works(api_for, org_admin, org_a, collab):
    client = api_for(org_admin)
    response = _create(client, org_a, collab)
    assert response.status_code == 201
    api_key = response.data["api_key"]
    node = Node.objects.get(pk=response.data["id"])
    assert (response.data["organization"], response.data["collaboration"]) == (org_a.pk, collab.pk)
    assert "api_key_hash" not in response.data and "api_key_prefix" not in response.data
    _assert_no_key_material(response.data, node)

    again = client.get(f"/api/nodes/{node.pk}/")
    assert again.status_code == 200
    assert "api_key" not in again.data
    assert api_key not in str(again.data)
    assert "api_key" not in client.get("/api/nodes/").data["results"][0]

    assert _node_token(api_key).status_code == 200
    assert AuditEvent.objects.filter(verb="node.created", target_id=str(node.pk)).exists()
    assert api_key not in str(list(AuditEvent.objects.values()))
    assert verify_chain() is None


def test_node_create_is_forbidden_to_a_viewer(api_for, viewer, org_a, collab):
    assert _create(api_for(viewer), org_a, collab).status_code == 403
    assert not Node.objects.filter(name="node-new").exists()


def test_node_create_for_a_partner_organisation_is_forbidden_to_an_organisation_admin(api_for, org_admin, org_b,
                                                                                     collab):
    assert _create(api_for(org_admin), org_b, collab).status_code == 403


def test_node_create_refuses_anonymous_callers(anon, org_a, collab):
    assert _create(anon, org_a, collab).status_code == 401


@pytest.mark.parametrize("change, field", [
    ({"name": ""}, "name"),
    ({"organization": None}, "organization"),
    ({"organization": 999999}, "organization"),
    ({"collaboration": "abc"}, "collaboration"),
])
def test_node_create_names_the_bad_field(api_for, org_admin, org_a, collab, change, field):
    body = {"name": "node-new", "organization": org_a.pk, "collaboration": collab.pk, **change}
    response = api_for(org_admin).post("/api/nodes/", body)
    assert response.status_code == 400
    assert field in response.data


def test_node_create_refuses_an_organisation_outside_the_collaboration(api_for, root, org_c, collab):
    response = _create(api_for(root), org_c, collab)
    assert response.status_code == 400
    assert "organization" in response.data


def test_node_create_refuses_a_duplicate_name_in_the_collaboration(api_for, org_admin, org_a, collab, node_a):
    response = _create(api_for(org_admin), org_a, collab, name="node-a")
    assert response.status_code == 400
    assert "non_field_errors" in response.data


# --- rotate-key ----------------------------------------------------------------------


def test_rotate_key_revokes_the_old_key_and_its_tokens(api_for, org_admin, org_a, collab):
    node, old_key = factories.make_node(org_a, collab, name="node-rot")
    old_token = _node_token(old_key).data["access"]
    assert _bearer(old_token).get("/api/node/me/").status_code == 200

    response = api_for(org_admin).post(f"/api/nodes/{node.pk}/rotate-key/")
    assert response.status_code == 200
    new_key = response.data["api_key"]
    assert new_key != old_key
    _assert_no_key_material(response.data, node)

    assert _bearer(old_token).get("/api/node/me/").status_code == 401
    assert _node_token(old_key).status_code == 401
    new_token = _node_token(new_key)
    assert new_token.status_code == 200
    assert _bearer(new_token.data["access"]).get("/api/node/me/").data["id"] == node.pk
    assert "api_key" not in api_for(org_admin).get(f"/api/nodes/{node.pk}/").data
    assert AuditEvent.objects.filter(verb="node.key_rotated", target_id=str(node.pk)).exists()
    assert verify_chain() is None


def test_rotate_key_is_forbidden_to_a_viewer(api_for, viewer, node_a):
    prefix = node_a.api_key_prefix
    assert api_for(viewer).post(f"/api/nodes/{node_a.pk}/rotate-key/").status_code == 403
    node_a.refresh_from_db()
    assert node_a.api_key_prefix == prefix


def test_rotate_key_of_an_unseen_node_is_404(api_for, outsider_admin, node_a):
    assert api_for(outsider_admin).post(f"/api/nodes/{node_a.pk}/rotate-key/").status_code == 404


def test_rotate_key_refuses_anonymous_callers(anon, node_a):
    assert anon.post(f"/api/nodes/{node_a.pk}/rotate-key/").status_code == 401


# --- delete --------------------------------------------------------------------------


def test_node_delete_removes_it_and_its_tokens_stop_working(api_for, org_admin, node_a):
    node_client = api_for(node_a)
    assert api_for(org_admin).delete(f"/api/nodes/{node_a.pk}/").status_code == 204
    assert not Node.objects.filter(pk=node_a.pk).exists()
    assert node_client.get("/api/node/me/").status_code == 401
    assert AuditEvent.objects.filter(verb="node.deleted", target_id=str(node_a.pk)).exists()
    assert verify_chain() is None


def test_node_delete_is_forbidden_to_a_viewer(api_for, viewer, node_a):
    assert api_for(viewer).delete(f"/api/nodes/{node_a.pk}/").status_code == 403
    assert Node.objects.filter(pk=node_a.pk).exists()


def test_node_delete_of_a_partner_node_is_403_for_an_organisation_admin(api_for, org_admin, node_b):
    # An organisation admin sees the collaboration's nodes but manages only their own organisation's.
    assert api_for(org_admin).delete(f"/api/nodes/{node_b.pk}/").status_code == 403
    assert Node.objects.filter(pk=node_b.pk).exists()


def test_collaboration_admin_deletes_a_partner_node_in_their_collaboration(api_for, collab_admin, node_b):
    assert api_for(collab_admin).delete(f"/api/nodes/{node_b.pk}/").status_code == 204


def test_node_delete_refuses_anonymous_callers(anon, node_a):
    assert anon.delete(f"/api/nodes/{node_a.pk}/").status_code == 401


# --- node token ----------------------------------------------------------------------


def test_node_token_gives_a_short_lived_node_token(org_a, collab, settings):
    node, api_key = factories.make_node(org_a, collab)
    response = _node_token(api_key)
    assert response.status_code == 200
    assert set(response.data) == {"access", "expires_in"}
    assert response.data["expires_in"] == int(settings.VANTAGE_NODE_TOKEN_LIFETIME.total_seconds())
    assert _bearer(response.data["access"]).get("/api/node/me/").data["id"] == node.pk


def test_node_token_refuses_a_bad_key_without_saying_which_part_is_wrong(org_a, collab):
    _node, api_key = factories.make_node(org_a, collab)
    wrong_secret = _node_token(api_key[:-2] + ("xy" if not api_key.endswith("xy") else "zz"))
    unknown_prefix = _node_token("vnk_000000000000_" + api_key.split("_", 2)[2])
    not_a_key = _node_token("hello")
    for response in (wrong_secret, unknown_prefix, not_a_key):
        assert response.status_code == 401
        assert response.data == wrong_secret.data
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_node_token_names_a_missing_key():
    response = APIClient().post("/api/node/token/", {})
    assert response.status_code == 400
    assert "api_key" in response.data


def test_node_token_ignores_a_stale_authorization_header(org_a, collab):
    _node, api_key = factories.make_node(org_a, collab)
    assert _bearer("not-a-jwt").post("/api/node/token/", {"api_key": api_key}).status_code == 200


# --- the node's own endpoints --------------------------------------------------------


def test_node_me_shows_the_node_its_organisation_and_collaboration(api_for, node_a, org_a, collab):
    response = api_for(node_a).get("/api/node/me/")
    assert response.status_code == 200
    assert (response.data["id"], response.data["organization"], response.data["collaboration"]) == (
        node_a.pk, org_a.pk, collab.pk)
    _assert_no_key_material(response.data, node_a)


def test_node_me_is_for_nodes_only(api_for, owner, anon):
    assert api_for(owner).get("/api/node/me/").status_code == 403
    assert anon.get("/api/node/me/").status_code == 401


def test_node_report_stores_the_config_and_marks_the_node_online(api_for, node_a, owner):
    config = {"databases": [{"label": "default", "type": "csv"}], "version": "0.1.0"}
    response = api_for(node_a).post("/api/node/me/report/", {"config": config})
    assert response.status_code == 200
    assert response.data["reported_config"] == config
    assert response.data["status"] == "online"
    assert response.data["last_seen_at"] is not None
    seen = api_for(owner).get(f"/api/nodes/{node_a.pk}/").data
    assert seen["reported_config"] == config and seen["status"] == "online"
    assert AuditEvent.objects.filter(verb="node.config_reported", actor_type="node",
                                     actor_id=node_a.pk).exists()
    assert verify_chain() is None


@pytest.mark.parametrize("body", [{}, {"config": [1, 2]}, {"config": "x"},
                                  {"config": {"blob": "x" * MAX_REPORTED_CONFIG_BYTES}}])
def test_node_report_names_a_bad_config(api_for, node_a, body):
    response = api_for(node_a).post("/api/node/me/report/", body)
    assert response.status_code == 400
    assert "config" in response.data
    node_a.refresh_from_db()
    assert node_a.reported_config == {}


def test_node_report_is_for_nodes_only(api_for, owner, anon):
    assert api_for(owner).post("/api/node/me/report/", {"config": {}}).status_code == 403
    assert anon.post("/api/node/me/report/", {"config": {}}).status_code == 401


@pytest.mark.parametrize("url", ["/api/users/", "/api/organizations/", "/api/collaborations/", "/api/studies/",
                                 "/api/nodes/", "/api/roles/", "/api/rules/", "/api/audit/"])
def test_nodes_cannot_use_user_endpoints(api_for, node_a, url):
    assert api_for(node_a).get(url).status_code == 403


# --- query counts --------------------------------------------------------------------


@pytest.mark.parametrize("extra", [1, 8])
def test_node_list_query_count_does_not_grow_with_rows(api_for, owner, org_a, collab, extra,
                                                       django_assert_num_queries):
    for _ in range(extra):
        factories.make_node(org_a, collab)
    client = api_for(owner)
    with django_assert_num_queries(3):
        response = client.get("/api/nodes/")
    assert response.data["count"] == extra


def test_a_node_reads_its_organisations_published_public_key_for_its_check(api_for, node_a, org_a):
    # run_node --check compares it with the node's private key (nodeagent.checks).
    from vantage_client import crypto

    pem = crypto.public_key_pem(crypto.generate_private_key(2048))
    type(org_a).objects.filter(pk=org_a.pk).update(public_key=pem)
    response = api_for(node_a).get("/api/node/me/")
    assert response.status_code == 200
    assert response.json()["organization_public_key"] == pem
