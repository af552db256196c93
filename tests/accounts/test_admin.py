"""Users, roles and the audit log in the admin: written through services, audit log untouchable."""

import pytest
from django.contrib.auth.hashers import check_password
from django.urls import reverse

from accounts.models import AuditEvent, Role, Rule, User
from tests.factories import PASSWORD, last_event

NEW_PASSWORD = "violet-harbour-lantern-42"





def user_add_data(org, **overrides):
    data = {
        "username": "newbie", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD,
        "organization": org.pk, "roles": [Role.objects.get(name="researcher").pk],
        "first_name": "Nina", "last_name": "Bakker", "email": "nina@example.org",
    }
    return {**data, **overrides}


def test_creating_a_user_goes_through_user_create_with_the_admin_as_actor(staff, root, org_a):
    response = staff.post(reverse("admin:accounts_user_add"), user_add_data(org_a))
    assert response.status_code == 302
    user = User.objects.get(username="newbie")
    assert user.check_password(NEW_PASSWORD)
    assert user.organization == org_a
    assert list(user.roles.values_list("name", flat=True)) == ["researcher"]
    assert not user.is_staff and not user.is_superuser
    event = last_event("user.created")
    assert (event.actor_id, event.target_id) == (root.pk, str(user.pk))


def test_creating_an_administrator_sets_staff_and_superuser(staff, org_a):
    data = user_add_data(org_a, username="second-admin", is_staff="on", is_superuser="on")
    assert staff.post(reverse("admin:accounts_user_add"), data).status_code == 302
    user = User.objects.get(username="second-admin")
    assert user.is_staff and user.is_superuser
    assert last_event("user.created").details["is_superuser"] is True


@pytest.mark.parametrize("password, message", [
    ("short", "too short"),
    ("password123", "too common"),
    ("8271640935", "entirely numeric"),
])
def test_password_validators_refuse_a_weak_password_on_the_form(staff, org_a, password, message):
    data = user_add_data(org_a, password1=password, password2=password)
    response = staff.post(reverse("admin:accounts_user_add"), data)
    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors["password2"])
    assert not User.objects.filter(username="newbie").exists()


def test_mismatched_passwords_are_refused(staff, org_a):
    response = staff.post(reverse("admin:accounts_user_add"), user_add_data(org_a, password2=NEW_PASSWORD + "x"))
    assert response.status_code == 200
    assert "password2" in response.context["adminform"].form.errors
    assert not User.objects.filter(username="newbie").exists()


def test_username_taken_in_another_case_is_a_form_error(staff, org_a, owner):
    response = staff.post(reverse("admin:accounts_user_add"), user_add_data(org_a, username="OWNER"))
    assert response.status_code == 200
    assert "username" in response.context["adminform"].form.errors


def user_change_data(user, **overrides):
    data = {
        "first_name": user.first_name, "last_name": user.last_name, "email": user.email,
        "is_active": "on" if user.is_active else "", "roles": [r.pk for r in user.roles.all()],
    }
    data = {**data, **overrides}
    return {k: v for k, v in data.items() if v != ""}


def test_changing_roles_goes_through_user_update(staff, root, owner):
    viewer_role = Role.objects.get(name="viewer")
    response = staff.post(reverse("admin:accounts_user_change", args=[owner.pk]),
                          user_change_data(owner, roles=[viewer_role.pk], email="owner@example.org"))
    assert response.status_code == 302
    owner.refresh_from_db()
    assert list(owner.roles.values_list("name", flat=True)) == ["viewer"]
    assert owner.email == "owner@example.org"
    event = last_event("user.updated")
    assert event.actor_id == root.pk
    assert event.details == {"fields": ["email"], "roles": ["viewer"]}


def test_granting_admin_rights_later_goes_through_user_update(staff, owner):
    data = user_change_data(owner, is_staff="on", is_superuser="on")
    assert staff.post(reverse("admin:accounts_user_change", args=[owner.pk]), data).status_code == 302
    owner.refresh_from_db()
    assert owner.is_staff and owner.is_superuser
    assert last_event("user.updated").details["fields"] == ["is_staff", "is_superuser"]


def test_saving_an_unchanged_user_records_nothing(staff, owner):
    before = AuditEvent.objects.count()
    assert staff.post(reverse("admin:accounts_user_change", args=[owner.pk]),
                      user_change_data(owner)).status_code == 302
    assert AuditEvent.objects.count() == before


def test_username_and_organisation_are_read_only_on_change(staff, owner, org_b):
    staff.post(reverse("admin:accounts_user_change", args=[owner.pk]),
               user_change_data(owner, username="renamed", organization=org_b.pk))
    owner.refresh_from_db()
    assert (owner.username, owner.organization.name) == ("owner", "Hospital A")


def test_password_change_form_sets_the_password_through_user_update(staff, root, owner):
    url = reverse("admin:auth_user_password_change", args=[owner.pk])
    assert staff.get(url).status_code == 200
    response = staff.post(url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password(NEW_PASSWORD)
    event = last_event("user.updated")
    assert (event.actor_id, event.details) == (root.pk, {"fields": ["password"]})


def test_password_change_form_applies_the_validators(staff, owner):
    url = reverse("admin:auth_user_password_change", args=[owner.pk])
    response = staff.post(url, {"password1": "owner", "password2": "owner"})
    assert response.status_code == 200
    assert response.context["form"].errors["password2"]
    owner.refresh_from_db()
    assert check_password(PASSWORD, owner.password)


def test_changing_your_own_password_keeps_you_logged_in(staff, root):
    url = reverse("admin:auth_user_password_change", args=[root.pk])
    staff.post(url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert staff.get(reverse("admin:index")).status_code == 200


def test_deleting_a_user_goes_through_user_delete(staff, root, member):
    response = staff.post(reverse("admin:accounts_user_delete", args=[member.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not User.objects.filter(pk=member.pk).exists()
    assert last_event("user.deleted").actor_id == root.pk


def test_deleting_yourself_is_refused_with_a_message_not_an_error_page(staff, root):
    response = staff.post(reverse("admin:accounts_user_delete", args=[root.pk]), {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert "You cannot delete yourself." in [str(m) for m in response.context["messages"]]
    assert User.objects.filter(pk=root.pk).exists()
    assert last_event("user.deleted") is None


def test_creating_a_role_with_rules_goes_through_role_create(staff, root):
    rules = list(Rule.objects.filter(resource="task")[:3])
    response = staff.post(reverse("admin:accounts_role_add"),
                          {"name": "auditor", "description": "Reads tasks.", "rules": [r.pk for r in rules]})
    assert response.status_code == 302
    role = Role.objects.get(name="auditor")
    assert set(role.rules.all()) == set(rules)
    event = last_event("role.created")
    assert event.actor_id == root.pk
    assert sorted(event.details["rules"]) == sorted(str(r) for r in rules)


def test_a_duplicate_role_name_is_a_form_error(staff):
    response = staff.post(reverse("admin:accounts_role_add"), {"name": "researcher", "description": ""})
    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors


def test_roles_cannot_be_edited_once_created(staff):
    role = Role.objects.get(name="viewer")
    url = reverse("admin:accounts_role_change", args=[role.pk])
    assert staff.get(url).status_code == 200
    assert staff.post(url, {"name": "renamed"}).status_code == 403


# --- Audit log ---------------------------------------------------------------------------


def test_audit_event_page_is_read_only(staff, owner):
    event = last_event("user.created")
    url = reverse("admin:accounts_auditevent_change", args=[event.pk])
    response = staff.get(url)
    assert response.status_code == 200
    assert not response.context["adminform"].form.fields
    assert 'name="_save"' not in response.content.decode()
    assert staff.post(url, {"verb": "forged"}).status_code == 403
    event.refresh_from_db()
    assert event.verb == "user.created"


def test_audit_events_cannot_be_deleted(staff, owner):
    event = last_event("user.created")
    url = reverse("admin:accounts_auditevent_delete", args=[event.pk])
    assert staff.get(url).status_code == 403
    assert staff.post(url, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_audit_changelist_offers_no_bulk_delete(staff, owner):
    response = staff.get(reverse("admin:accounts_auditevent_changelist"))
    assert "delete_selected" not in response.content.decode()


def test_verify_chain_reports_an_intact_log(staff, owner):
    response = staff.post(reverse("admin:accounts_auditevent_verify"), follow=True)
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [f"Audit chain intact: all {AuditEvent.objects.count()} events verified."]


def test_verify_chain_names_the_first_tampered_event(staff, owner):
    event = last_event("user.created")
    AuditEvent.objects.filter(pk=event.pk).update(actor_label="someone-else")
    response = staff.post(reverse("admin:accounts_auditevent_verify"), follow=True)
    messages = [str(m) for m in response.context["messages"]]
    assert len(messages) == 1
    assert messages[0].startswith(f"Audit chain broken at event #{event.pk}")


def test_verify_chain_does_nothing_on_get(staff, owner):
    response = staff.get(reverse("admin:accounts_auditevent_verify"))
    assert response.status_code == 302


def test_the_update_service_gets_the_stored_user_not_the_forms_copy(staff, owner, monkeypatch):
    # Guards compare the stored object with the change (issue 13.11): the admin used to pass
    # the form's instance, already carrying the new values.
    from accounts import admin as accounts_admin

    seen = {}
    real = accounts_admin.user_update

    def spy(*, actor, user, **changes):
        seen["is_superuser_before"] = user.is_superuser
        return real(actor=actor, user=user, **changes)

    monkeypatch.setattr(accounts_admin, "user_update", spy)
    data = user_change_data(owner, is_staff="on", is_superuser="on")
    assert staff.post(reverse("admin:accounts_user_change", args=[owner.pk]), data).status_code == 302
    assert seen == {"is_superuser_before": False}
    assert last_event("user.updated").details["fields"] == ["is_staff", "is_superuser"]
