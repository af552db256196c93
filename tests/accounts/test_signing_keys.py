"""Reviewers' signing keys (PKIX PEM, ECDSA P-256) on their accounts: API and admin, audited.
Catalogue approvals check signatures against them (tests/tasks/test_catalogue.py)."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.urls import reverse

from accounts.models import AuditEvent, SigningKey
from tests import factories
from vantage_client import signing


def _pem(key=None) -> str:
    key = key or signing.generate_key()
    return signing.public_key_pem(key.public_key()).decode()


def test_a_user_registers_their_own_key_and_it_is_audited(api_for, owner):
    pem = _pem()
    response = api_for(owner).post("/api/signing-keys/", {"name": "laptop", "public_key": pem}, format="json")
    assert response.status_code == 201, response.data
    fingerprint = signing.fingerprint(signing.load_public_key(pem.encode()))
    assert (response.data["user"], response.data["name"], response.data["fingerprint"]) == (
        owner.pk, "laptop", fingerprint)
    event = AuditEvent.objects.get(verb="signing_key.added")
    assert (event.actor_id, event.target_id, event.details["fingerprint"]) == (owner.pk, str(owner.pk), fingerprint)
    listed = api_for(owner).get("/api/signing-keys/").data["results"]
    assert [k["fingerprint"] for k in listed] == [fingerprint]


@pytest.mark.parametrize("text, expected", [
    ("not a key", "not a PEM public key"),
    ("RSA", "not an ECDSA P-256 public key"),
])
def test_only_cosign_style_p256_public_keys_are_taken(api_for, owner, text, expected):
    if text == "RSA":  # a PKIX PEM public key of another type
        text = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    response = api_for(owner).post("/api/signing-keys/", {"name": "k", "public_key": text}, format="json")
    assert response.status_code == 400 and expected in str(response.data["public_key"])
    assert not SigningKey.objects.exists()


def test_a_key_belongs_to_one_account(api_for, owner, member):
    pem = _pem()
    assert api_for(owner).post("/api/signing-keys/", {"name": "a", "public_key": pem}, format="json").status_code == 201
    again = api_for(owner).post("/api/signing-keys/", {"name": "b", "public_key": pem}, format="json")
    assert again.status_code == 400 and "registered to this account already" in str(again.data["public_key"])
    theirs = api_for(member).post("/api/signing-keys/", {"name": "c", "public_key": pem}, format="json")
    assert theirs.status_code == 400 and "registered to another account already" in str(theirs.data["public_key"])


def test_keys_of_others_are_seen_and_managed_only_with_rights_over_them(api_for, owner, member, root):
    mine = api_for(member).post("/api/signing-keys/", {"name": "m", "public_key": _pem()}, format="json").data
    # A researcher of another organisation neither sees nor removes it, nor adds keys to that account.
    assert api_for(owner).get("/api/signing-keys/").data["results"] == []
    assert api_for(owner).delete(f"/api/signing-keys/{mine['id']}/").status_code == 404
    response = api_for(owner).post("/api/signing-keys/", {"name": "x", "public_key": _pem(), "user": member.pk},
                                   format="json")
    assert response.status_code == 400 and "user" in response.data
    # The administrator sees it, adds one for the member (audited with the admin as actor), removes it.
    assert [k["id"] for k in api_for(root).get("/api/signing-keys/").data["results"]] == [mine["id"]]
    added = api_for(root).post("/api/signing-keys/", {"name": "for member", "public_key": _pem(), "user": member.pk},
                               format="json")
    assert added.status_code == 201 and added.data["user"] == member.pk
    assert api_for(root).delete(f"/api/signing-keys/{mine['id']}/").status_code == 204
    removed = AuditEvent.objects.get(verb="signing_key.removed")
    assert (removed.actor_id, removed.target_id, removed.details["fingerprint"]) == (
        root.pk, str(member.pk), mine["fingerprint"])
    assert list(SigningKey.objects.values_list("name", flat=True)) == ["for member"]


def test_an_organisation_admin_cannot_give_a_stronger_user_a_key(api_for, org_a, root):
    org_admin = factories.make_user(org_a, roles=("organization-admin",), username="org-admin")
    response = api_for(org_admin).post("/api/signing-keys/", {"name": "x", "public_key": _pem(), "user": root.pk},
                                       format="json")
    assert response.status_code == 403 and not SigningKey.objects.exists()


def test_nodes_and_anonymous_callers_have_no_signing_keys(api_for, anon, node_a):
    assert api_for(node_a).get("/api/signing-keys/").status_code == 403
    assert anon.get("/api/signing-keys/").status_code == 401


def test_the_admin_adds_a_key_through_the_service_and_shows_it_unchangeable(staff, root, owner):
    pem = _pem()
    response = staff.post(reverse("admin:accounts_signingkey_add"), {"user": owner.pk, "name": "via admin",
                                                                     "public_key": pem})
    assert response.status_code == 302, response.content.decode()[:2000]
    key = SigningKey.objects.get()
    assert (key.user, key.name) == (owner, "via admin")
    event = AuditEvent.objects.get(verb="signing_key.added")
    assert (event.actor_id, event.target_id) == (root.pk, str(owner.pk))
    page = staff.get(reverse("admin:accounts_signingkey_change", args=[key.pk]))
    assert page.status_code == 200 and key.fingerprint in page.content.decode()
    bad = staff.post(reverse("admin:accounts_signingkey_add"), {"user": owner.pk, "name": "bad", "public_key": "x"})
    assert bad.status_code == 200 and "not a PEM public key" in bad.content.decode()
    assert staff.post(reverse("admin:accounts_signingkey_delete", args=[key.pk]), {"post": "yes"}).status_code == 302
    assert not SigningKey.objects.exists()
    assert AuditEvent.objects.filter(verb="signing_key.removed", actor_id=root.pk).exists()
