"""Administrators beside the shared personas: what the collaborations API is for.

org_admin runs org_a (organization-admin); collab_admin manages org_a's collaborations
(collaboration-admin); outsider_admin holds both roles at org_c, outside `collab`.
"""

import pytest

from tests import factories


@pytest.fixture
def org_admin(org_a, collab):
    return factories.make_user(org_a, roles=("organization-admin",), username="org-admin")


@pytest.fixture
def collab_admin(org_a, collab):
    return factories.make_user(org_a, roles=("collaboration-admin",), username="collab-admin")


@pytest.fixture
def outsider_admin(org_c, other_collab):
    return factories.make_user(
        org_c, roles=("organization-admin", "collaboration-admin"), username="outsider-admin"
    )
