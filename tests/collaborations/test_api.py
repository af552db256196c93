"""REST API for organisations, collaborations and studies."""

import pytest

from accounts.audit import verify_chain
from accounts.models import AuditEvent
from collaborations.models import Collaboration, Organization, Study
from collaborations.services import study_create
from tests import factories


def _audited(verb: str, target) -> bool:
    found = AuditEvent.objects.filter(verb=verb, target_type=target._meta.model_name, target_id=str(target.pk))
    return found.exists() and verify_chain() is None


def _study(collab, organizations, name="Survival"):
    return study_create(actor=None, collaboration=collab, name=name, organizations=organizations)


# --- organisations -------------------------------------------------------------------


def test_organization_list_shows_own_and_partner_organisations_only(api_for, owner, org_a, org_b, org_c):
    response = api_for(owner).get("/api/organizations/")
    assert response.status_code == 200
    assert [o["name"] for o in response.data["results"]] == ["Hospital A", "Hospital B"]
    assert response.data["results"][0] == {
        "id": org_a.pk, "name": "Hospital A", "country": "NL", "domain": "", "public_key": "", "require_second_factor": False,
        "created_at": response.data["results"][0]["created_at"],
    }


def test_organization_list_filters_by_name_and_country(api_for, root, org_b, org_c):
    client = api_for(root)
    by_country = client.get("/api/organizations/", {"country": "be"})
    assert [o["id"] for o in by_country.data["results"]] == [org_b.pk]
    by_name = client.get("/api/organizations/", {"name": "registry"})
    assert [o["id"] for o in by_name.data["results"]] == [org_c.pk]


def test_organization_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/organizations/").status_code == 401


def test_organization_list_refuses_nodes(api_for, node_a):
    assert api_for(node_a).get("/api/organizations/").status_code == 403


def test_organization_detail_of_a_partner_is_visible(api_for, owner, org_b):
    response = api_for(owner).get(f"/api/organizations/{org_b.pk}/")
    assert response.status_code == 200
    assert response.data["name"] == "Hospital B"


def test_organization_detail_is_absent_for_an_outsider(api_for, outsider, org_a):
    assert api_for(outsider).get(f"/api/organizations/{org_a.pk}/").status_code == 404


def test_root_creates_an_organisation_and_it_is_audited(api_for, root):
    response = api_for(root).post("/api/organizations/", {"name": "Registry D", "country": "fr"})
    assert response.status_code == 201
    assert response.data["name"] == "Registry D"
    assert response.data["country"] == "FR"
    assert _audited("organization.created", Organization.objects.get(pk=response.data["id"]))


def test_organization_create_is_forbidden_to_a_viewer(api_for, viewer):
    response = api_for(viewer).post("/api/organizations/", {"name": "Registry D"})
    assert response.status_code == 403
    assert not Organization.objects.filter(name="Registry D").exists()


def test_organization_create_refuses_anonymous_callers(anon):
    assert anon.post("/api/organizations/", {"name": "Registry D"}).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "Hospital A"}, "name"),
    ({"name": "Registry D", "country": "FRA"}, "country"),
])
def test_organization_create_names_the_bad_field(api_for, root, body, field):
    before = AuditEvent.objects.count()
    response = api_for(root).post("/api/organizations/", body)
    assert response.status_code == 400
    assert field in response.data
    assert AuditEvent.objects.count() == before


def test_organization_admin_edits_their_own_organisation(api_for, org_admin, org_a):
    response = api_for(org_admin).patch(f"/api/organizations/{org_a.pk}/", {"domain": "hospital-a.example"})
    assert response.status_code == 200
    assert response.data["domain"] == "hospital-a.example"
    assert response.data["name"] == "Hospital A"
    assert _audited("organization.updated", org_a)


def test_organization_admin_may_not_edit_a_partner_organisation(api_for, org_admin, org_b):
    response = api_for(org_admin).patch(f"/api/organizations/{org_b.pk}/", {"domain": "x.example"})
    assert response.status_code == 403
    org_b.refresh_from_db()
    assert org_b.domain == ""


def test_organization_edit_of_an_unseen_organisation_is_404(api_for, org_admin, org_c):
    assert api_for(org_admin).patch(f"/api/organizations/{org_c.pk}/", {"domain": "x"}).status_code == 404


def test_organization_edit_is_forbidden_to_a_viewer(api_for, viewer, org_a):
    assert api_for(viewer).patch(f"/api/organizations/{org_a.pk}/", {"domain": "x"}).status_code == 403


def test_organization_edit_names_the_bad_field(api_for, org_admin, org_a, org_b):
    response = api_for(org_admin).patch(f"/api/organizations/{org_a.pk}/", {"name": "Hospital B"})
    assert response.status_code == 400
    assert "name" in response.data


def test_organization_put_is_not_a_supported_method(api_for, root, org_a):
    assert api_for(root).put(f"/api/organizations/{org_a.pk}/", {"name": "X"}).status_code == 405


def test_walking_next_visits_every_organisation_once(api_for, root):
    for i in range(22):  # root's own organisation makes 23
        factories.make_organization(f"Org {i:02d}")
    client = api_for(root)
    seen, url, pages = [], "/api/organizations/?page_size=5", 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        assert response.data["count"] == 23
        seen += [o["id"] for o in response.data["results"]]
        url, pages = response.data["next"], pages + 1
        assert pages <= 5
    assert pages == 5
    assert sorted(seen) == sorted(Organization.objects.values_list("pk", flat=True))
    assert len(seen) == len(set(seen)) == 23


# --- collaborations ------------------------------------------------------------------


def test_collaboration_list_shows_member_ids(api_for, owner, collab, other_collab, org_a, org_b):
    response = api_for(owner).get("/api/collaborations/")
    assert response.status_code == 200
    assert response.data["results"] == [{
        "id": collab.pk, "name": "Breast cancer study", "organizations": sorted([org_a.pk, org_b.pk]),
        "encrypted": False, "status": "active", "created_at": response.data["results"][0]["created_at"],
    }]


def test_collaboration_list_filters_by_status_and_organisation(api_for, root, collab, other_collab, org_c):
    client = api_for(root)
    Collaboration.objects.filter(pk=other_collab.pk).update(status=Collaboration.Status.ARCHIVED)
    archived = client.get("/api/collaborations/", {"status": "archived"})
    assert [c["id"] for c in archived.data["results"]] == [other_collab.pk]
    with_c = client.get("/api/collaborations/", {"organization": org_c.pk})
    assert [c["id"] for c in with_c.data["results"]] == [other_collab.pk]


def test_collaboration_list_filter_names_the_bad_value(api_for, root):
    response = api_for(root).get("/api/collaborations/", {"status": "gone"})
    assert response.status_code == 400
    assert "status" in response.data


def test_collaboration_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/collaborations/").status_code == 401


def test_collaboration_detail_is_absent_for_an_outsider(api_for, outsider, collab):
    assert api_for(outsider).get(f"/api/collaborations/{collab.pk}/").status_code == 404


def test_root_creates_a_collaboration_of_organisation_ids(api_for, root, org_a, org_c):
    response = api_for(root).post(
        "/api/collaborations/", {"name": "Lung", "organizations": [org_c.pk, org_a.pk], "encrypted": True}
    )
    assert response.status_code == 201
    assert response.data["organizations"] == sorted([org_a.pk, org_c.pk])
    assert response.data["encrypted"] is True
    assert _audited("collaboration.created", Collaboration.objects.get(name="Lung"))


def test_collaboration_create_is_forbidden_to_a_researcher(api_for, owner, org_a):
    response = api_for(owner).post("/api/collaborations/", {"name": "Lung", "organizations": [org_a.pk]})
    assert response.status_code == 403


def test_collaboration_create_refuses_anonymous_callers(anon):
    assert anon.post("/api/collaborations/", {"name": "Lung", "organizations": []}).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"name": "Lung"}, "organizations"),
    ({"name": "Lung", "organizations": [999999]}, "organizations"),
    ({"name": "Lung", "organizations": "1"}, "organizations"),
    ({"organizations": []}, "name"),
    ({"name": "Breast cancer study", "organizations": []}, "name"),
])
def test_collaboration_create_names_the_bad_field(api_for, root, collab, body, field):
    response = api_for(root).post("/api/collaborations/", body)
    assert response.status_code == 400
    assert field in response.data


def test_collaboration_admin_renames_their_collaboration(api_for, collab_admin, collab, org_a, org_b):
    response = api_for(collab_admin).patch(f"/api/collaborations/{collab.pk}/", {"name": "Breast cancer 2"})
    assert response.status_code == 200
    assert response.data["name"] == "Breast cancer 2"
    assert response.data["organizations"] == sorted([org_a.pk, org_b.pk])
    assert _audited("collaboration.updated", collab)


def test_collaboration_edit_shows_the_new_members(api_for, root, collab, org_a, org_c):
    response = api_for(root).patch(f"/api/collaborations/{collab.pk}/", {"organizations": [org_a.pk, org_c.pk]})
    assert response.status_code == 200
    assert response.data["organizations"] == sorted([org_a.pk, org_c.pk])


def test_collaboration_edit_refuses_to_drop_an_organisation_with_nodes(api_for, root, collab, org_a, node_b):
    response = api_for(root).patch(f"/api/collaborations/{collab.pk}/", {"organizations": [org_a.pk]})
    assert response.status_code == 400
    assert "organizations" in response.data
    assert collab.organizations.count() == 2


def test_collaboration_edit_is_forbidden_to_a_viewer(api_for, viewer, collab):
    assert api_for(viewer).patch(f"/api/collaborations/{collab.pk}/", {"name": "X"}).status_code == 403


def test_collaboration_edit_of_an_unseen_collaboration_is_404(api_for, outsider_admin, collab):
    assert api_for(outsider_admin).patch(f"/api/collaborations/{collab.pk}/", {"name": "X"}).status_code == 404


def test_collaboration_archive_marks_it_archived_and_audits(api_for, collab_admin, collab):
    response = api_for(collab_admin).post(f"/api/collaborations/{collab.pk}/archive/")
    assert response.status_code == 200
    assert response.data["status"] == "archived"
    assert _audited("collaboration.archived", collab)


def test_collaboration_archive_is_forbidden_to_a_viewer(api_for, viewer, collab):
    assert api_for(viewer).post(f"/api/collaborations/{collab.pk}/archive/").status_code == 403
    collab.refresh_from_db()
    assert collab.status == Collaboration.Status.ACTIVE


def test_collaboration_archive_of_an_unseen_collaboration_is_404(api_for, outsider_admin, collab):
    assert api_for(outsider_admin).post(f"/api/collaborations/{collab.pk}/archive/").status_code == 404


def test_collaboration_archive_refuses_anonymous_callers(anon, collab):
    assert anon.post(f"/api/collaborations/{collab.pk}/archive/").status_code == 401


# --- studies -------------------------------------------------------------------------


def test_collaboration_admin_creates_a_study_of_member_organisations(api_for, collab_admin, collab, org_a, org_b):
    response = api_for(collab_admin).post(
        "/api/studies/", {"collaboration": collab.pk, "name": "Survival", "organizations": [org_b.pk, org_a.pk]}
    )
    assert response.status_code == 201
    assert response.data["collaboration"] == collab.pk
    assert response.data["organizations"] == sorted([org_a.pk, org_b.pk])
    assert _audited("study.created", Study.objects.get(pk=response.data["id"]))


def test_study_create_is_forbidden_to_a_viewer(api_for, viewer, collab, org_a):
    response = api_for(viewer).post(
        "/api/studies/", {"collaboration": collab.pk, "name": "S", "organizations": [org_a.pk]}
    )
    assert response.status_code == 403


def test_study_create_refuses_anonymous_callers(anon, collab):
    assert anon.post("/api/studies/", {"collaboration": collab.pk, "name": "S", "organizations": []}).status_code == 401


def test_study_create_in_an_unseen_collaboration_is_a_collaboration_error(api_for, outsider_admin, collab):
    response = api_for(outsider_admin).post(
        "/api/studies/", {"collaboration": collab.pk, "name": "S", "organizations": []}
    )
    assert response.status_code == 400
    assert "collaboration" in response.data


def test_study_create_refuses_organisations_outside_the_collaboration(api_for, root, collab, org_c):
    response = api_for(root).post(
        "/api/studies/", {"collaboration": collab.pk, "name": "S", "organizations": [org_c.pk]}
    )
    assert response.status_code == 400
    assert "organizations" in response.data
    assert not Study.objects.exists()


def test_study_create_names_a_missing_name(api_for, root, collab):
    response = api_for(root).post("/api/studies/", {"collaboration": collab.pk, "organizations": []})
    assert response.status_code == 400
    assert "name" in response.data


def test_study_create_refuses_a_duplicate_name_in_the_collaboration(api_for, root, collab, org_a):
    _study(collab, [org_a])
    response = api_for(root).post("/api/studies/", {"collaboration": collab.pk, "name": "Survival",
                                                     "organizations": []})
    assert response.status_code == 400
    assert "non_field_errors" in response.data


def test_study_list_and_filter_by_collaboration(api_for, root, collab, other_collab, org_a, org_c):
    study = _study(collab, [org_a])
    _study(other_collab, [org_c], name="Other")
    response = api_for(root).get("/api/studies/", {"collaboration": collab.pk})
    assert response.status_code == 200
    assert [s["id"] for s in response.data["results"]] == [study.pk]
    assert response.data["results"][0]["organizations"] == [org_a.pk]


def test_study_detail_is_visible_to_a_member_of_its_organisation(api_for, owner, collab, org_a):
    study = _study(collab, [org_a])
    response = api_for(owner).get(f"/api/studies/{study.pk}/")
    assert response.status_code == 200
    assert response.data["name"] == "Survival"


def test_study_detail_is_absent_for_an_outsider(api_for, outsider, collab, org_a):
    study = _study(collab, [org_a])
    assert api_for(outsider).get(f"/api/studies/{study.pk}/").status_code == 404


def test_study_edit_changes_name_and_organisations(api_for, collab_admin, collab, org_a, org_b):
    study = _study(collab, [org_a])
    response = api_for(collab_admin).patch(f"/api/studies/{study.pk}/", {"name": "Survival 2",
                                                                        "organizations": [org_b.pk]})
    assert response.status_code == 200
    assert response.data["name"] == "Survival 2"
    assert response.data["organizations"] == [org_b.pk]
    assert _audited("study.updated", study)


def test_study_edit_is_forbidden_to_a_viewer(api_for, viewer, collab, org_a):
    study = _study(collab, [org_a])
    assert api_for(viewer).patch(f"/api/studies/{study.pk}/", {"name": "X"}).status_code == 403


def test_study_edit_names_the_bad_field(api_for, collab_admin, collab, org_a):
    study = _study(collab, [org_a])
    response = api_for(collab_admin).patch(f"/api/studies/{study.pk}/", {"organizations": [999999]})
    assert response.status_code == 400
    assert "organizations" in response.data


def test_study_delete_removes_it_and_audits(api_for, collab_admin, collab, org_a):
    study = _study(collab, [org_a])
    assert api_for(collab_admin).delete(f"/api/studies/{study.pk}/").status_code == 204
    assert not Study.objects.filter(pk=study.pk).exists()
    assert AuditEvent.objects.filter(verb="study.deleted", target_id=str(study.pk)).exists()
    assert verify_chain() is None


def test_study_delete_is_forbidden_to_a_viewer(api_for, viewer, collab, org_a):
    study = _study(collab, [org_a])
    assert api_for(viewer).delete(f"/api/studies/{study.pk}/").status_code == 403
    assert Study.objects.filter(pk=study.pk).exists()


def test_study_delete_of_an_unseen_study_is_404(api_for, outsider_admin, collab, org_a):
    study = _study(collab, [org_a])
    assert api_for(outsider_admin).delete(f"/api/studies/{study.pk}/").status_code == 404


def test_study_delete_refuses_anonymous_callers(anon, collab, org_a):
    study = _study(collab, [org_a])
    assert anon.delete(f"/api/studies/{study.pk}/").status_code == 401


# --- query counts --------------------------------------------------------------------
# A list costs: the user (1), their rules (1), the rows (1), the count (1, only when the
# first page is full), and one prefetch per many-to-many shown. Parametrised over the
# number of rows: it must not grow.


@pytest.mark.parametrize("extra", [1, 8])
def test_organization_list_query_count_does_not_grow_with_rows(api_for, owner, collab, extra,
                                                              django_assert_num_queries):
    for _ in range(extra):
        collab.organizations.add(factories.make_organization())
    client = api_for(owner)
    with django_assert_num_queries(3):
        response = client.get("/api/organizations/")
    assert response.data["count"] == 2 + extra


@pytest.mark.parametrize("extra", [1, 8])
def test_collaboration_list_query_count_does_not_grow_with_rows(api_for, owner, org_a, org_b, extra,
                                                               django_assert_num_queries):
    for _ in range(extra):
        factories.make_collaboration([org_a, org_b])
    client = api_for(owner)
    with django_assert_num_queries(4):
        response = client.get("/api/collaborations/")
    assert response.data["count"] == 1 + extra
    assert all(len(c["organizations"]) == 2 for c in response.data["results"])


@pytest.mark.parametrize("extra", [1, 8])
def test_study_list_query_count_does_not_grow_with_rows(api_for, owner, collab, org_a, org_b, extra,
                                                       django_assert_num_queries):
    for i in range(extra):
        _study(collab, [org_a, org_b], name=f"Study {i}")
    client = api_for(owner)
    with django_assert_num_queries(4):
        response = client.get("/api/studies/")
    assert response.data["count"] == extra
    assert all(len(s["organizations"]) == 2 for s in response.data["results"])
