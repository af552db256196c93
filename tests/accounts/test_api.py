"""REST API for users, roles, rules and the audit log."""

import pytest
from rest_framework.test import APIClient

from accounts.audit import verify_chain
from accounts.models import AuditEvent, Role, Rule, User
from tests import factories

STRONG_PASSWORD = "a-long-enough-passphrase-42"


@pytest.fixture
def org_admin(org_a, collab):
    return factories.make_user(org_a, roles=("organization-admin",), username="org-admin")


def _audited(verb: str, target_id) -> bool:
    return AuditEvent.objects.filter(verb=verb, target_id=str(target_id)).exists() and verify_chain() is None


def _login(username: str, password: str):
    return APIClient().post("/api/token/", {"username": username, "password": password})


def _assert_no_password(body, user: User) -> None:
    rows = body.get("results", [body])
    assert all("password" not in row for row in rows)
    user.refresh_from_db()
    assert user.password not in str(body)


# --- users ---------------------------------------------------------------------------


def test_user_list_shows_the_organisations_users_with_role_names(api_for, org_admin, owner, viewer, member):
    response = api_for(org_admin).get("/api/users/")
    assert response.status_code == 200
    rows = {u["username"]: u for u in response.data["results"]}
    assert set(rows) == {"org-admin", "owner", "viewer"}
    assert rows["viewer"]["roles"] == ["viewer"]
    assert set(rows["owner"]) == {"id", "username", "email", "first_name", "last_name", "organization", "roles",
                                  "is_active", "date_joined", "last_login"}
    _assert_no_password(response.data, owner)


def test_user_list_filters_by_role_organisation_and_activity(api_for, root, owner, viewer, member, org_b):
    client = api_for(root)
    User.objects.filter(pk=owner.pk).update(is_active=False)
    by_role = client.get("/api/users/", {"role": "viewer"}).data["results"]
    assert [u["username"] for u in by_role] == ["viewer"]
    by_org = client.get("/api/users/", {"organization": org_b.pk}).data["results"]
    assert [u["username"] for u in by_org] == ["member"]
    inactive = client.get("/api/users/", {"is_active": "false"}).data["results"]
    assert [u["username"] for u in inactive] == ["owner"]


def test_a_researcher_sees_only_themselves(api_for, owner, viewer):
    response = api_for(owner).get("/api/users/")
    assert [u["username"] for u in response.data["results"]] == ["owner"]
    assert api_for(owner).get(f"/api/users/{owner.pk}/").data["username"] == "owner"


def test_user_detail_is_absent_for_an_outsider(api_for, outsider, owner):
    assert api_for(outsider).get(f"/api/users/{owner.pk}/").status_code == 404


def test_user_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/users/").status_code == 401


def test_root_creates_a_user_who_can_log_in(api_for, root, org_a):
    response = api_for(root).post("/api/users/", {
        "username": "newbie", "password": STRONG_PASSWORD, "organization": org_a.pk,
        "email": "newbie@hospital-a.example", "roles": ["researcher"],
    })
    assert response.status_code == 201
    assert response.data["username"] == "newbie"
    assert response.data["roles"] == ["researcher"]
    assert response.data["organization"] == org_a.pk
    user = User.objects.get(username="newbie")
    _assert_no_password(response.data, user)
    assert STRONG_PASSWORD not in str(response.data)
    assert _login("newbie", STRONG_PASSWORD).status_code == 200
    assert _audited("user.created", user.pk)
    assert STRONG_PASSWORD not in str(list(AuditEvent.objects.values()))


def test_organization_admin_creates_a_user_in_their_organisation(api_for, org_admin, org_a):
    response = api_for(org_admin).post("/api/users/", {
        "username": "deputy", "password": STRONG_PASSWORD, "organization": org_a.pk, "roles": ["organization-admin"],
    })
    assert response.status_code == 201
    assert response.data["roles"] == ["organization-admin"]


def test_user_create_is_forbidden_to_a_viewer(api_for, viewer, org_a):
    response = api_for(viewer).post("/api/users/", {"username": "x", "password": STRONG_PASSWORD,
                                                    "organization": org_a.pk})
    assert response.status_code == 403
    assert not User.objects.filter(username="x").exists()


def test_user_create_in_a_partner_organisation_is_forbidden(api_for, org_admin, org_b):
    response = api_for(org_admin).post("/api/users/", {"username": "x", "password": STRONG_PASSWORD,
                                                       "organization": org_b.pk})
    assert response.status_code == 403


@pytest.mark.parametrize("role", ["root", "collaboration-admin"])
def test_user_create_may_not_grant_rights_the_creator_lacks(api_for, org_admin, org_a, role):
    # organization-admin holds no collaboration-wide edit rights, so it cannot hand out these roles.
    response = api_for(org_admin).post("/api/users/", {"username": "x", "password": STRONG_PASSWORD,
                                                       "organization": org_a.pk, "roles": [role]})
    assert response.status_code == 403
    assert not User.objects.filter(username="x").exists()


def test_organisation_admin_creates_researchers_in_their_organisation(api_for, org_admin, org_a):
    response = api_for(org_admin).post("/api/users/", {"username": "x", "password": STRONG_PASSWORD,
                                                       "organization": org_a.pk, "roles": ["researcher"]})
    assert response.status_code == 201, response.data
    assert list(User.objects.get(username="x").roles.values_list("name", flat=True)) == ["researcher"]


def test_user_create_refuses_anonymous_callers(anon, org_a):
    response = anon.post("/api/users/", {"username": "x", "password": STRONG_PASSWORD, "organization": org_a.pk})
    assert response.status_code == 401


@pytest.mark.parametrize("change, field", [
    ({"password": "short"}, "password"),
    ({"password": "password1234"}, "password"),
    ({"password": ""}, "password"),
    ({"username": ""}, "username"),
    ({"username": "owner"}, "username"),
    ({"username": "bad name!"}, "username"),
    ({"email": "not-an-email"}, "email"),
    ({"roles": ["nonexistent"]}, "roles"),
    ({"roles": "researcher"}, "roles"),
    ({"organization": 999999}, "organization"),
])
def test_user_create_names_the_bad_field(api_for, org_admin, org_a, owner, change, field):
    body = {"username": "newbie", "password": STRONG_PASSWORD, "organization": org_a.pk, **change}
    response = api_for(org_admin).post("/api/users/", body)
    assert response.status_code == 400
    assert field in response.data
    assert not User.objects.filter(username=body["username"]).exclude(pk=owner.pk).exists()


def test_organization_admin_edits_and_deactivates_a_user(api_for, org_admin, viewer):
    viewer_client = api_for(viewer)
    response = api_for(org_admin).patch(f"/api/users/{viewer.pk}/", {"first_name": "Vera", "is_active": False})
    assert response.status_code == 200
    assert response.data["first_name"] == "Vera"
    assert response.data["is_active"] is False
    _assert_no_password(response.data, viewer)
    assert _audited("user.updated", viewer.pk)
    assert viewer_client.get("/api/users/").status_code == 401
    assert _login("viewer", factories.PASSWORD).status_code == 401


def test_root_resets_a_password_and_changes_roles(api_for, root, viewer):
    new_password = "another-long-passphrase-7"
    response = api_for(root).patch(f"/api/users/{viewer.pk}/", {"password": new_password, "roles": ["researcher"]})
    assert response.status_code == 200
    assert response.data["roles"] == ["researcher"]
    _assert_no_password(response.data, viewer)
    assert _login("viewer", new_password).status_code == 200
    assert _login("viewer", factories.PASSWORD).status_code == 401


def test_organization_admin_may_not_set_the_password_of_a_user_with_other_rights(api_for, org_admin, org_a):
    # A collaboration admin edits the collaboration's tasks and nodes, which an organisation admin may not.
    stronger = factories.make_user(org_a, roles=("collaboration-admin",), username="stronger")
    for body in ({"password": "another-long-passphrase-7"}, {"email": "mine@example.org"}):
        assert api_for(org_admin).patch(f"/api/users/{stronger.pk}/", body).status_code == 403
    assert _login("stronger", factories.PASSWORD).status_code == 200


def test_user_edit_is_forbidden_to_a_viewer_even_on_themselves(api_for, viewer):
    assert api_for(viewer).patch(f"/api/users/{viewer.pk}/", {"first_name": "X"}).status_code == 403


def test_organization_admin_may_not_touch_a_superuser_of_their_organisation(api_for, org_admin, root):
    client = api_for(org_admin)
    assert client.patch(f"/api/users/{root.pk}/", {"password": "hijacked-passphrase-99"}).status_code == 403
    assert client.patch(f"/api/users/{root.pk}/", {"is_active": False}).status_code == 403
    assert client.delete(f"/api/users/{root.pk}/").status_code == 403
    # The password still opens the account (a superuser then needs a second factor).
    assert _login("root", factories.PASSWORD).data["code"] == "otp_required"


def test_user_edit_of_an_unseen_user_is_404(api_for, org_admin, member):
    assert api_for(org_admin).patch(f"/api/users/{member.pk}/", {"first_name": "X"}).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"password": "short"}, "password"),
    ({"email": "nope"}, "email"),
    ({"is_active": "perhaps"}, "is_active"),
    ({"roles": ["nonexistent"]}, "roles"),
])
def test_user_edit_names_the_bad_field(api_for, root, viewer, body, field):
    response = api_for(root).patch(f"/api/users/{viewer.pk}/", body)
    assert response.status_code == 400
    assert field in response.data


def test_user_edit_refuses_anonymous_callers(anon, viewer):
    assert anon.patch(f"/api/users/{viewer.pk}/", {"first_name": "X"}).status_code == 401


def test_organization_admin_deletes_a_user(api_for, org_admin, viewer):
    viewer_pk = viewer.pk
    assert api_for(org_admin).delete(f"/api/users/{viewer_pk}/").status_code == 204
    assert not User.objects.filter(pk=viewer_pk).exists()
    assert _audited("user.deleted", viewer_pk)


def test_user_delete_of_oneself_is_refused(api_for, org_admin):
    response = api_for(org_admin).delete(f"/api/users/{org_admin.pk}/")
    assert response.status_code == 400
    assert User.objects.filter(pk=org_admin.pk).exists()


def test_user_delete_is_forbidden_to_a_viewer(api_for, viewer, owner):
    assert api_for(viewer).delete(f"/api/users/{owner.pk}/").status_code == 403


def test_user_delete_of_an_unseen_user_is_404(api_for, org_admin, member):
    assert api_for(org_admin).delete(f"/api/users/{member.pk}/").status_code == 404


def test_user_delete_refuses_anonymous_callers(anon, viewer):
    assert anon.delete(f"/api/users/{viewer.pk}/").status_code == 401


# --- roles and rules -----------------------------------------------------------------


def test_role_list_shows_rule_ids(api_for, owner):
    response = api_for(owner).get("/api/roles/")
    assert response.status_code == 200
    viewer_role = next(r for r in response.data["results"] if r["name"] == "viewer")
    assert sorted(viewer_role["rules"]) == sorted(Role.objects.get(name="viewer").rules.values_list("pk", flat=True))
    assert viewer_role["is_builtin"] is True


def test_role_detail_of_an_unknown_role_is_404(api_for, owner):
    assert api_for(owner).get("/api/roles/999999/").status_code == 404


def test_role_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/roles/").status_code == 401


def test_root_creates_a_role_from_rule_ids(api_for, root):
    rules = list(Rule.objects.filter(resource="task", action="view").order_by("pk")[:2])
    response = api_for(root).post("/api/roles/", {"name": "auditor", "description": "Reads tasks.",
                                                  "rules": [r.pk for r in rules]})
    assert response.status_code == 201
    assert response.data["name"] == "auditor"
    assert sorted(response.data["rules"]) == [r.pk for r in rules]
    assert response.data["is_builtin"] is False
    assert _audited("role.created", response.data["id"])


def test_role_create_is_forbidden_to_an_organisation_admin(api_for, org_admin):
    response = api_for(org_admin).post("/api/roles/", {"name": "mine", "rules": []})
    assert response.status_code == 403
    assert not Role.objects.filter(name="mine").exists()


def test_role_create_refuses_anonymous_callers(anon):
    assert anon.post("/api/roles/", {"name": "mine", "rules": []}).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"rules": []}, "name"),
    ({"name": "viewer", "rules": []}, "name"),
    ({"name": "mine"}, "rules"),
    ({"name": "mine", "rules": [999999]}, "rules"),
    ({"name": "mine", "rules": ["x"]}, "rules"),
])
def test_role_create_names_the_bad_field(api_for, root, body, field):
    response = api_for(root).post("/api/roles/", body)
    assert response.status_code == 400
    assert field in response.data


def test_rules_are_listed_with_scope_names(api_for, owner):
    response = api_for(owner).get("/api/rules/", {"page_size": 1000})
    assert response.status_code == 200
    assert response.data["count"] == Rule.objects.count()
    rule = Rule.objects.get(resource="audit", action="view", scope=4)
    assert {"id": rule.pk, "resource": "audit", "action": "view", "scope": "global"} in response.data["results"]
    assert api_for(owner).get(f"/api/rules/{rule.pk}/").data["scope"] == "global"


def test_rules_are_read_only(api_for, root):
    assert api_for(root).post("/api/rules/", {"resource": "task"}).status_code == 405
    rule = Rule.objects.first()
    assert api_for(root).delete(f"/api/rules/{rule.pk}/").status_code == 405


def test_rule_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/rules/").status_code == 401


# --- audit ---------------------------------------------------------------------------


def test_root_reads_the_audit_log_newest_first_and_filters_it(api_for, root, owner, org_a):
    response = api_for(root).get("/api/audit/")
    assert response.status_code == 200
    ids = [e["id"] for e in response.data["results"]]
    assert ids == sorted(ids, reverse=True)
    created = api_for(root).get("/api/audit/", {"verb": "organization.created", "target_type": "organization",
                                                "target_id": org_a.pk, "actor_type": "system"})
    assert [e["target_label"] for e in created.data["results"]] == ["Hospital A"]
    assert set(created.data["results"][0]) >= {"created_at", "actor_type", "actor_label", "verb", "target_type",
                                                "target_id", "details", "prev_hash", "hash"}


def test_audit_filter_names_a_bad_actor_type(api_for, root):
    response = api_for(root).get("/api/audit/", {"actor_type": "alien"})
    assert response.status_code == 400
    assert "actor_type" in response.data


def test_audit_log_is_forbidden_without_audit_rights(api_for, org_admin):
    assert api_for(org_admin).get("/api/audit/").status_code == 403


def test_audit_log_refuses_anonymous_callers(anon):
    assert anon.get("/api/audit/").status_code == 401


def test_audit_log_is_read_only(api_for, root):
    assert api_for(root).post("/api/audit/", {"verb": "forged"}).status_code == 405
    event = AuditEvent.objects.first()
    assert api_for(root).get(f"/api/audit/{event.pk}/").status_code == 404


# --- query counts --------------------------------------------------------------------
# A list costs: the user (1), their rules (1, none for a superuser), the rows (1), the
# count (1, only when the first page is full), and one prefetch per many-to-many shown.
# It must not grow with the rows.


@pytest.mark.parametrize("extra", [1, 8])
def test_user_list_query_count_does_not_grow_with_rows(api_for, org_admin, org_a, extra,
                                                       django_assert_num_queries):
    for _ in range(extra):
        factories.make_user(org_a, roles=("researcher", "viewer"))
    client = api_for(org_admin)
    with django_assert_num_queries(4):
        response = client.get("/api/users/")
    assert response.data["count"] == 1 + extra


@pytest.mark.parametrize("extra", [1, 8])
def test_role_list_query_count_does_not_grow_with_rows(api_for, root, owner, extra, django_assert_num_queries):
    client = api_for(root)
    rule_ids = list(Rule.objects.values_list("pk", flat=True)[:3])
    for i in range(extra):
        client.post("/api/roles/", {"name": f"custom-{i}", "rules": rule_ids})
    client = api_for(owner)
    with django_assert_num_queries(4):
        response = client.get("/api/roles/")
    assert response.data["count"] == Role.objects.count()


def test_rule_list_query_count(api_for, owner, django_assert_num_queries):
    client = api_for(owner)
    with django_assert_num_queries(3):
        response = client.get("/api/rules/", {"page_size": 1000})
    assert response.data["count"] > 20


@pytest.mark.parametrize("extra", [1, 8])
def test_audit_list_query_count_does_not_grow_with_rows(api_for, root, extra, django_assert_num_queries):
    for _ in range(extra):
        factories.make_organization()
    client = api_for(root)
    with django_assert_num_queries(2):
        response = client.get("/api/audit/")
    assert response.data["count"] == AuditEvent.objects.count()


@pytest.mark.parametrize("field", ["is_superuser", "is_staff", "organization", "username", "id"])
def test_user_patch_naming_a_field_the_caller_cannot_set_is_refused(api_for, org_admin, owner, field):
    value = {"is_superuser": True, "is_staff": True, "organization": 99, "username": "renamed", "id": 77}[field]
    response = api_for(org_admin).patch(f"/api/users/{owner.pk}/", {field: value, "first_name": "Ann"}, format="json")
    assert response.status_code == 400
    assert response.data == {field: ["This field cannot be set here."]}
    owner.refresh_from_db()
    assert (owner.is_superuser, owner.is_staff, owner.username, owner.first_name) == (False, False, "owner", "")
