import pytest

from collaborations import node_keys
from collaborations.authentication import node_access_token
from collaborations.models import Node
from collaborations.services import node_authenticate, node_create, node_rotate_key, study_create
from core.errors import DomainError, NotAllowed
from tests.factories import make_node, make_user


def test_node_key_is_stored_as_prefix_and_keyed_hash_only(org_a, collab):
    node, key = make_node(org_a, collab)
    node.refresh_from_db()
    assert key.startswith(f"vnk_{node.api_key_prefix}_")
    assert key not in (node.api_key_hash, node.api_key_prefix)
    assert node_keys.key_matches(key, node.api_key_hash)
    assert node_authenticate(api_key=key) == node


@pytest.mark.parametrize("mangle", [
    lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),
    lambda k: "vnk_000000000000_" + k.split("_", 2)[2],
    lambda k: "",
    lambda k: "not-a-key",
])
def test_wrong_keys_do_not_authenticate(org_a, collab, mangle):
    _node, key = make_node(org_a, collab)
    assert node_authenticate(api_key=mangle(key)) is None


def test_rotation_revokes_the_old_key_and_its_tokens(org_a, collab):
    node, old_key = make_node(org_a, collab)
    old_token = node_access_token(node)
    new_key = node_rotate_key(actor=None, node=node)
    assert node_authenticate(api_key=old_key) is None
    assert node_authenticate(api_key=new_key) == node
    assert old_token["node_key"] != Node.objects.get(pk=node.pk).api_key_prefix


def test_node_for_an_organisation_outside_the_collaboration_is_refused(org_c, collab):
    with pytest.raises(DomainError) as err:
        node_create(actor=None, organization=org_c, collaboration=collab, name="x")
    assert err.value.field == "organization"


def test_organisation_admin_creates_nodes_only_for_their_own_organisation(org_a, org_b, collab):
    admin_a = make_user(org_a, roles=("organization-admin",))
    node, _ = node_create(actor=admin_a, organization=org_a, collaboration=collab, name="mine")
    assert node.organization == org_a
    with pytest.raises(NotAllowed):
        node_create(actor=admin_a, organization=org_b, collaboration=collab, name="theirs")


def test_study_members_must_belong_to_the_collaboration(collab, org_a, org_c):
    with pytest.raises(DomainError) as err:
        study_create(actor=None, collaboration=collab, name="s", organizations=[org_a, org_c])
    assert err.value.field == "organizations"
