"""Pages and their counts (core.pagination): a short first page counts its own rows."""

import pytest

from tests import factories


@pytest.fixture
def five_partners(owner, collab):
    for _ in range(3):
        collab.organizations.add(factories.make_organization())
    return 5  # org_a, org_b and the three added


def test_full_first_page_counts_every_row_in_the_database(api_for, owner, five_partners,
                                                          django_assert_num_queries):
    client = api_for(owner)
    # The user with their login, their rules, the page, then COUNT: a full page does not
    # know what follows. (The user and the rules are read on every request: revocation.)
    with django_assert_num_queries(4):
        response = client.get("/api/organizations/", {"page_size": 2})
    assert response.data["count"] == five_partners
    assert len(response.data["results"]) == 2
    assert "page=2" in response.data["next"]


def test_short_first_page_is_its_own_count(api_for, owner, five_partners, django_assert_num_queries):
    client = api_for(owner)
    with django_assert_num_queries(3):  # the user with their login, their rules, the page
        response = client.get("/api/organizations/", {"page_size": 10})
    assert response.data["count"] == five_partners
    assert response.data["next"] is None


def test_empty_first_page_counts_zero(api_for, owner):
    response = api_for(owner).get("/api/organizations/", {"name": "no such name"})
    assert (response.status_code, response.data["count"], response.data["results"]) == (200, 0, [])


def test_later_pages_keep_the_total(api_for, owner, five_partners):
    response = api_for(owner).get("/api/organizations/", {"page_size": 2, "page": 3})
    assert (response.data["count"], len(response.data["results"]), response.data["next"]) == (5, 1, None)


def test_page_past_the_end_is_not_found(api_for, owner, five_partners):
    assert api_for(owner).get("/api/organizations/", {"page_size": 2, "page": 4}).status_code == 404
