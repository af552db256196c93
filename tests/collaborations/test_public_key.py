"""An organisation's public key for end-to-end encryption: a usable PEM key or nothing."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vantage_client import crypto

PRIVATE = crypto.generate_private_key(2048)
PUBLIC_PEM = crypto.public_key_pem(PRIVATE)


def _patch(client, org, value):
    return client.patch(f"/api/organizations/{org.pk}/", {"public_key": value}, format="json")


def test_organisation_admin_publishes_a_pem_public_key(api_for, root, org_a):
    response = _patch(api_for(root), org_a, PUBLIC_PEM)
    assert response.status_code == 200, response.data
    org_a.refresh_from_db()
    assert crypto.fingerprint(crypto.load_public_key(org_a.public_key)) == crypto.fingerprint(PRIVATE)
    assert response.data["public_key"] == org_a.public_key


@pytest.mark.parametrize("value, problem", [
    ("not a key", "not a PEM public key"),
    (PUBLIC_PEM.replace("A", "B", 5), "public key"),
    (crypto.private_key_pem(PRIVATE).decode(), "not a PEM public key"),
    (crypto.public_key_pem(crypto.generate_private_key(2048))[:120], "not a PEM public key"),
])
def test_a_malformed_public_key_is_refused_with_a_field_message(api_for, root, org_a, value, problem):
    response = _patch(api_for(root), org_a, value)
    assert response.status_code == 400
    assert problem in str(response.data["public_key"][0])
    org_a.refresh_from_db()
    assert org_a.public_key == ""


def test_a_key_that_is_not_rsa_is_refused(api_for, root, org_a):
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    response = _patch(api_for(root), org_a, ec_pem)
    assert response.status_code == 400
    assert "not an RSA key" in str(response.data["public_key"][0])


def test_a_short_rsa_key_is_refused(api_for, root, org_a):
    from cryptography.hazmat.primitives.asymmetric import rsa

    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    response = _patch(api_for(root), org_a, crypto.public_key_pem(short))
    assert response.status_code == 400
    assert "1024 bits" in str(response.data["public_key"][0])


def test_a_blank_key_removes_the_published_key(api_for, root, org_a):
    org_a.public_key = PUBLIC_PEM
    org_a.save(update_fields=["public_key"])
    response = _patch(api_for(root), org_a, "")
    assert response.status_code == 200
    org_a.refresh_from_db()
    assert org_a.public_key == ""


def test_organisation_admin_publishes_their_own_key_only(api_for, org_admin, org_a, org_b, org_c):
    client = api_for(org_admin)
    assert _patch(client, org_a, PUBLIC_PEM).status_code == 200
    assert _patch(client, org_b, PUBLIC_PEM).status_code == 403
    assert _patch(client, org_c, PUBLIC_PEM).status_code == 404
