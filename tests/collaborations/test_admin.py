"""Organisations, collaborations, studies and nodes in the admin; node keys shown once."""

import re

from django.urls import reverse

from collaborations import node_keys
from collaborations.models import Collaboration, Node, Organization, Study
from collaborations.services import node_authenticate, study_create
from tests import factories
from tests.factories import last_event

KEY_RE = re.compile(r"vnk_[0-9a-f]{12}_[A-Za-z0-9_-]+")





def keys_on(response) -> list[str]:
    return KEY_RE.findall(response.content.decode())


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- Organisations ---------------------------------------------------------------------


def test_creating_an_organisation_goes_through_organization_create(staff, root):
    response = staff.post(reverse("admin:collaborations_organization_add"),
                          {"name": "Oslo UH", "country": "no", "domain": "oslo-universitetssykehus.no"})
    assert response.status_code == 302
    org = Organization.objects.get(name="Oslo UH")
    assert org.country == "NO"
    event = last_event("organization.created")
    assert (event.actor_id, event.target_id) == (root.pk, str(org.pk))


def test_editing_an_organisation_records_the_changed_fields(staff, org_a):
    data = {"name": org_a.name, "country": org_a.country, "domain": "hospital-a.example", "public_key": ""}
    assert staff.post(reverse("admin:collaborations_organization_change", args=[org_a.pk]), data).status_code == 302
    org_a.refresh_from_db()
    assert org_a.domain == "hospital-a.example"
    assert last_event("organization.updated").details == {"fields": ["domain"]}


def test_a_duplicate_organisation_name_is_a_form_error(staff, org_a):
    response = staff.post(reverse("admin:collaborations_organization_add"), {"name": org_a.name})
    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors


def test_a_malformed_public_key_is_a_form_error_and_a_good_one_is_kept(staff, org_a):
    from vantage_client import crypto

    url = reverse("admin:collaborations_organization_change", args=[org_a.pk])
    data = {"name": org_a.name, "country": org_a.country, "domain": org_a.domain,
            "public_key": "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"}
    response = staff.post(url, data)
    assert response.status_code == 200
    assert "Not a usable public key" in " ".join(response.context["adminform"].form.errors["public_key"])
    org_a.refresh_from_db()
    assert org_a.public_key == ""

    good = crypto.public_key_pem(crypto.generate_private_key())
    assert staff.post(url, {**data, "public_key": good}).status_code == 302
    org_a.refresh_from_db()
    assert org_a.public_key.strip() == good.strip()


def test_organisations_cannot_be_deleted(staff, org_c):
    assert staff.get(reverse("admin:collaborations_organization_delete", args=[org_c.pk])).status_code == 403


# --- Collaborations ----------------------------------------------------------------------


def test_creating_a_collaboration_with_members(staff, root, org_a, org_b):
    response = staff.post(reverse("admin:collaborations_collaboration_add"),
                          {"name": "Lung study", "organizations": [org_a.pk, org_b.pk], "encrypted": "on"})
    assert response.status_code == 302
    collaboration = Collaboration.objects.get(name="Lung study")
    assert set(collaboration.organizations.all()) == {org_a, org_b}
    assert collaboration.encrypted
    event = last_event("collaboration.created")
    assert event.actor_id == root.pk
    assert event.details["organizations"] == sorted([org_a.pk, org_b.pk])


def test_removing_a_member_that_still_has_nodes_is_a_form_error(staff, collab, org_a, node_b):
    url = reverse("admin:collaborations_collaboration_change", args=[collab.pk])
    response = staff.post(url, {"name": collab.name, "organizations": [org_a.pk]})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Remove the nodes of an organisation" in errors["organizations"][0]
    assert collab.organizations.count() == 2
    assert last_event("collaboration.updated") is None


def test_archive_action_archives_through_the_service(staff, root, collab, other_collab):
    response = staff.post(reverse("admin:collaborations_collaboration_changelist"),
                          {"action": "archive", "_selected_action": [collab.pk]}, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == ["1 collaboration(s) archived."]
    collab.refresh_from_db()
    other_collab.refresh_from_db()
    assert (collab.status, other_collab.status) == ("archived", "active")
    assert last_event("collaboration.archived").actor_id == root.pk


def test_collaborations_cannot_be_deleted(staff, collab):
    assert staff.get(reverse("admin:collaborations_collaboration_delete", args=[collab.pk])).status_code == 403


# --- Studies -------------------------------------------------------------------------------


def test_creating_a_study_goes_through_study_create(staff, root, collab, org_a):
    response = staff.post(reverse("admin:collaborations_study_add"),
                          {"collaboration": collab.pk, "name": "Pilot", "organizations": [org_a.pk]})
    assert response.status_code == 302
    study = Study.objects.get(name="Pilot")
    assert list(study.organizations.all()) == [org_a]
    assert last_event("study.created").actor_id == root.pk


def test_a_study_member_outside_the_collaboration_is_a_form_error(staff, collab, org_a, org_c):
    response = staff.post(reverse("admin:collaborations_study_add"),
                          {"collaboration": collab.pk, "name": "Pilot", "organizations": [org_a.pk, org_c.pk]})
    assert response.status_code == 200
    assert "not members" in response.context["adminform"].form.errors["organizations"][0]
    assert not Study.objects.filter(name="Pilot").exists()


def test_deleting_a_study_goes_through_study_delete(staff, root, collab, org_a):
    study = study_create(actor=None, collaboration=collab, name="Pilot", organizations=[org_a])
    response = staff.post(reverse("admin:collaborations_study_delete", args=[study.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Study.objects.filter(pk=study.pk).exists()
    assert last_event("study.deleted").actor_id == root.pk


# --- Nodes -----------------------------------------------------------------------------------


def test_node_add_form_asks_for_name_organisation_and_collaboration_only(staff):
    response = staff.get(reverse("admin:collaborations_node_add"))
    assert list(response.context["adminform"].form.fields) == ["name", "organization", "collaboration"]


def test_creating_a_node_shows_its_key_once_and_stores_only_its_hash(staff, root, collab, org_a):
    response = staff.post(reverse("admin:collaborations_node_add"),
                          {"name": "node-amc", "organization": org_a.pk, "collaboration": collab.pk})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    [key] = keys_on(response)
    node = Node.objects.get(name="node-amc")
    assert node_keys.key_matches(key, node.api_key_hash)
    assert node_authenticate(api_key=key) == node
    assert last_event("node.created").actor_id == root.pk

    # Nowhere else: not on the node's page, not in the list, not in the next response.
    for url in (reverse("admin:collaborations_node_change", args=[node.pk]),
                reverse("admin:collaborations_node_changelist")):
        page = staff.get(url).content.decode()
        assert key not in page
        assert node.api_key_hash not in page
    assert key not in str(staff.cookies)


def test_node_page_has_no_editable_fields(staff, node_a):
    response = staff.get(reverse("admin:collaborations_node_change", args=[node_a.pk]))
    assert not response.context["adminform"].form.fields
    assert node_a.api_key_prefix in response.content.decode()


def test_a_node_of_a_non_member_organisation_is_a_form_error(staff, collab, org_c):
    response = staff.post(reverse("admin:collaborations_node_add"),
                          {"name": "node-c", "organization": org_c.pk, "collaboration": collab.pk})
    assert response.status_code == 200
    assert "not a member" in response.context["adminform"].form.errors["organization"][0]
    assert not Node.objects.filter(name="node-c").exists()
    assert keys_on(response) == []


def test_rotate_button_confirms_then_shows_the_new_key_once(staff, root, org_a, collab):
    node, old_key = factories.make_node(org_a, collab, name="node-r")
    url = reverse("admin:collaborations_node_rotate_key", args=[node.pk])
    change_page = staff.get(reverse("admin:collaborations_node_change", args=[node.pk])).content.decode()
    assert url in change_page

    confirmation = staff.get(url)
    assert confirmation.status_code == 200
    node.refresh_from_db()
    assert node_keys.key_matches(old_key, node.api_key_hash)

    response = staff.post(url)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    [new_key] = keys_on(response)
    node.refresh_from_db()
    assert new_key != old_key
    assert node_keys.key_matches(new_key, node.api_key_hash)
    assert node_authenticate(api_key=old_key) is None
    assert last_event("node.key_rotated").actor_id == root.pk


def test_rotate_action_shows_each_selected_nodes_new_key(staff, node_a, node_b):
    response = staff.post(reverse("admin:collaborations_node_changelist"),
                          {"action": "rotate_keys", "_selected_action": [node_a.pk, node_b.pk]})
    assert response.status_code == 200
    keys = keys_on(response)
    assert len(keys) == 2
    for node in (node_a, node_b):
        node.refresh_from_db()
        assert sum(node_keys.key_matches(key, node.api_key_hash) for key in keys) == 1


def test_rotating_an_unknown_node_is_404(staff, db):
    assert staff.get(reverse("admin:collaborations_node_rotate_key", args=[999999])).status_code == 404


def test_deleting_a_node_goes_through_node_delete(staff, root, node_a):
    response = staff.post(reverse("admin:collaborations_node_delete", args=[node_a.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Node.objects.filter(pk=node_a.pk).exists()
    assert last_event("node.deleted").actor_id == root.pk


# --- Guarded fields: the admin keeps the API's rules (issue 13.11) -------------------------


def test_unticking_encryption_of_a_collaboration_with_tasks_is_a_form_error(staff, owner, collab, org_a, org_b):
    # The admin's form used to copy "encrypted" onto the object before the service compared
    # it with itself: the guard was skipped and the change saved ("changed successfully").
    Collaboration.objects.filter(pk=collab.pk).update(encrypted=True)
    factories.make_task(owner, collab, [org_a])
    url = reverse("admin:collaborations_collaboration_change", args=[collab.pk])
    response = staff.post(url, {"name": collab.name, "organizations": [org_a.pk, org_b.pk]})  # box unticked
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["encrypted"] == [
        "Encryption cannot change once the collaboration has tasks."]
    collab.refresh_from_db()
    assert collab.encrypted
    assert last_event("collaboration.updated") is None


def test_ticking_encryption_without_tasks_is_saved_and_audited_with_the_change(staff, root, collab, org_a, org_b):
    url = reverse("admin:collaborations_collaboration_change", args=[collab.pk])
    response = staff.post(url, {"name": collab.name, "organizations": [org_a.pk, org_b.pk], "encrypted": "on"})
    assert response.status_code == 302
    collab.refresh_from_db()
    assert collab.encrypted
    event = last_event("collaboration.updated")
    assert (event.actor_id, event.details) == (root.pk, {"encrypted": True})


def test_renaming_a_collaboration_audits_the_new_name_only(staff, collab, org_a, org_b):
    url = reverse("admin:collaborations_collaboration_change", args=[collab.pk])
    staff.post(url, {"name": "Renamed", "organizations": [org_a.pk, org_b.pk]})
    assert last_event("collaboration.updated").details == {"name": "Renamed"}


def test_changing_a_study_to_a_member_outside_the_collaboration_is_a_form_error(staff, root, collab, org_a, org_c):
    study = study_create(actor=root, collaboration=collab, name="Pilot", organizations=[org_a])
    url = reverse("admin:collaborations_study_change", args=[study.pk])
    response = staff.post(url, {"name": "Pilot", "organizations": [org_a.pk, org_c.pk]})
    assert response.status_code == 200
    assert "not members" in response.context["adminform"].form.errors["organizations"][0]
    assert list(study.organizations.all()) == [org_a]
    assert last_event("study.updated") is None


def test_changing_a_study_audits_what_changed(staff, root, collab, org_a, org_b):
    study = study_create(actor=root, collaboration=collab, name="Pilot", organizations=[org_a])
    url = reverse("admin:collaborations_study_change", args=[study.pk])
    assert staff.post(url, {"name": "Pilot 2", "organizations": [org_a.pk, org_b.pk]}).status_code == 302
    assert last_event("study.updated").details == {"name": "Pilot 2", "organizations": sorted([org_a.pk, org_b.pk])}


def test_editing_an_organisation_audits_the_changed_fields_only(staff, org_a):
    url = reverse("admin:collaborations_organization_change", args=[org_a.pk])
    staff.post(url, {"name": org_a.name, "country": "BE", "domain": org_a.domain, "public_key": ""})
    assert last_event("organization.updated").details == {"fields": ["country"]}
