"""Tasks in an encrypted collaboration: every input an envelope sealed for its organisation.

The server never holds a private key: it reads only the envelope's recipient field
(client/vantage_client/crypto.py) and compares it with the organisation's public key.
"""

import base64
import json

import pytest

from tasks.models import Run, Task
from vantage_client import crypto

KEYS = {name: crypto.generate_private_key(2048) for name in ("a", "b", "stranger")}
DIGEST = "sha256:" + "c" * 64


@pytest.fixture
def sealed_collab(collab, org_a, org_b):
    collab.encrypted = True
    collab.save(update_fields=["encrypted"])
    for org, name in ((org_a, "a"), (org_b, "b")):
        org.public_key = crypto.public_key_pem(KEYS[name])
        org.save(update_fields=["public_key"])
    return collab


def _input(key_name: str | None, payload: dict | None = None) -> str:
    data = json.dumps(payload or {"method": "partial", "args": [], "kwargs": {}}).encode()
    if key_name is not None:
        data = crypto.encrypt(data, KEYS[key_name].public_key())
    return base64.b64encode(data).decode()


def _body(collab, inputs: dict) -> dict:
    return {"collaboration": collab.pk, "name": "sealed", "image": f"127.0.0.1:5000/algo@{DIGEST}",
            "method": "partial", "organizations": [{"id": org, "input": value} for org, value in inputs.items()]}


def test_inputs_sealed_for_each_organisation_are_stored_as_given(api_for, owner, sealed_collab, org_a, org_b):
    inputs = {org_a.pk: _input("a"), org_b.pk: _input("b")}
    response = api_for(owner).post("/api/tasks/", _body(sealed_collab, inputs), format="json")
    assert response.status_code == 201, response.data
    stored = {run.organization_id: bytes(run.input) for run in Run.objects.all()}
    assert stored == {org: base64.b64decode(value) for org, value in inputs.items()}
    assert all(b'"method"' not in value for value in stored.values())
    assert crypto.decrypt(stored[org_b.pk], KEYS["b"]) == b'{"method": "partial", "args": [], "kwargs": {}}'


def test_a_plaintext_input_is_refused(api_for, owner, sealed_collab, org_a, org_b):
    response = api_for(owner).post("/api/tasks/", _body(sealed_collab, {org_a.pk: _input("a"), org_b.pk: _input(None)}),
                                   format="json")
    assert response.status_code == 400
    message = response.data["organizations"][0]
    assert f"Input for organisation {org_b.pk} must be encrypted" in message and "not a Vantage envelope" in message
    assert not Task.objects.exists()


def test_an_input_sealed_for_another_organisations_key_is_refused(api_for, owner, sealed_collab, org_a, org_b):
    response = api_for(owner).post("/api/tasks/", _body(sealed_collab, {org_a.pk: _input("a"), org_b.pk: _input("a")}),
                                   format="json")
    assert response.status_code == 400
    assert response.data["organizations"] == [
        f"Input for organisation {org_b.pk} is sealed for another key than its public key."]
    assert not Task.objects.exists()


def test_a_truncated_envelope_is_refused(api_for, owner, sealed_collab, org_a):
    cut = base64.b64encode(base64.b64decode(_input("a"))[:60]).decode()
    response = api_for(owner).post("/api/tasks/", _body(sealed_collab, {org_a.pk: cut}), format="json")
    assert response.status_code == 400
    assert "truncated" in response.data["organizations"][0]


def test_an_organisation_without_a_public_key_cannot_receive_input(api_for, owner, sealed_collab, org_a, org_b):
    org_b.public_key = ""
    org_b.save(update_fields=["public_key"])
    response = api_for(owner).post("/api/tasks/", _body(sealed_collab, {org_b.pk: _input("b")}), format="json")
    assert response.status_code == 400
    assert response.data["organizations"] == [
        f"Organisation {org_b.pk} has no public key, so collaboration {sealed_collab.pk} (encrypted) cannot send it input."]


def test_the_initiating_organisation_needs_a_key_for_its_results(api_for, owner, sealed_collab, org_a, org_b):
    org_a.public_key = ""
    org_a.save(update_fields=["public_key"])
    response = api_for(owner).post("/api/tasks/", _body(sealed_collab, {org_b.pk: _input("b")}), format="json")
    assert response.status_code == 400
    assert "has no public key to seal its results for" in response.data["organizations"][0]


def test_an_unencrypted_collaboration_still_takes_plain_json(api_for, owner, collab, org_a):
    response = api_for(owner).post("/api/tasks/", _body(collab, {org_a.pk: _input(None)}), format="json")
    assert response.status_code == 201, response.data
