"""Shared personas.

org_a and org_b collaborate in `collab`; org_c is an outsider with its own collaboration.
owner (org_a, researcher) creates tasks; member (org_b, researcher) is a collaboration
partner; viewer (org_a, viewer role) may read but not write; outsider (org_c) sees
nothing of `collab`; root is a superuser. node_a/node_b are nodes of org_a/org_b in collab.
"""

import os

import pytest
from rest_framework.test import APIClient
from collaborations.authentication import node_access_token
from tests import factories


def pytest_collection_modifyitems(config, items):
    """In the second database pass of ./vantage.sh test, leave out the tests marked
    `database_independent`: what they check does not depend on the server's database, and
    they are the slowest of the suite: numbers computed inside algorithm containers, the
    demo's printed study, what the node agent does with containers and outages (isolation,
    limits, deadlines, kills, restarts, the output gate, signatures, hostile images), and
    scans of the source tree. The server's side of those flows (claims, state changes,
    results, events) has its own tests, which run on both databases, as does every other
    test, the live node tests of claiming in parallel and of websocket delivery included."""
    if os.environ.get("VANTAGE_TEST_SECOND_PASS") != "1":
        return
    kept = [item for item in items if item.get_closest_marker("database_independent") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture
def org_a(db):
    return factories.make_organization("Hospital A", country="NL")


@pytest.fixture
def org_b(db):
    return factories.make_organization("Hospital B", country="BE")


@pytest.fixture
def org_c(db):
    return factories.make_organization("Registry C", country="DE")


@pytest.fixture
def collab(org_a, org_b):
    return factories.make_collaboration([org_a, org_b], name="Breast cancer study")


@pytest.fixture
def other_collab(org_c):
    return factories.make_collaboration([org_c], name="Other study")


@pytest.fixture
def owner(org_a, collab):
    return factories.make_user(org_a, username="owner")


@pytest.fixture
def member(org_b, collab):
    return factories.make_user(org_b, username="member")


@pytest.fixture
def viewer(org_a, collab):
    return factories.make_user(org_a, roles=("viewer",), username="viewer")


@pytest.fixture
def outsider(org_c, other_collab):
    return factories.make_user(org_c, username="outsider")


@pytest.fixture
def root(org_a):
    user = factories.make_user(org_a, roles=("root",), username="root")
    user.is_superuser = True
    user.is_staff = True
    user.save(update_fields=["is_superuser", "is_staff"])
    # Staff log in with a second factor; tests that log root in with a code take the secret.
    user.totp_secret = factories.enrol_second_factor(user)
    return user


@pytest.fixture
def node_a(org_a, collab):
    node, _key = factories.make_node(org_a, collab, name="node-a")
    return node


@pytest.fixture
def node_b(org_b, collab):
    node, _key = factories.make_node(org_b, collab, name="node-b")
    return node


def _client(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def api_for():
    """api_for(user_or_node) -> an APIClient carrying that principal's access token."""

    def build(principal):
        if getattr(principal, "is_node", False):
            return _client(node_access_token(principal))
        return _client(factories.access_token(principal))

    return build


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Result files of each test go to its own temporary folder."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """PBKDF2 at production strength costs ~0.3 s a hash; tests only need hashing to work."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(client, root):
    """The Django test client, logged in to the admin as a superuser."""
    client.force_login(root)
    return client
