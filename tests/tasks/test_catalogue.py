"""The catalogue's four eyes: approval by reviewers other than the submitter, each with
their own signature of the entry's digest, read from the real loopback registry and
checked against their registered keys (signatures made with the repository's signer,
client/vantage_client/signing.py); what nodes read about a digest; the digest each run
executed."""

import pytest

from accounts.models import AuditEvent, SigningKey
from accounts.services import signing_key_add
from core.errors import Conflict
from tasks.models import Algorithm, AlgorithmApproval, Run
from tasks.services import algorithm_review, algorithm_submit, run_claim
from tests import factories
from tests.nodeagent import images
from vantage_client import signing

DIGEST = "sha256:" + "b" * 64
REPO = "vantage-test/catalogue"


@pytest.fixture(scope="module")
def loopback():
    """The local registry of scripts/docker-env.sh (skips without it, fails under CI=true)."""
    return images.registry()


@pytest.fixture
def reg(loopback):
    return signing.Registry(loopback.host, loopback.username, loopback.password)


@pytest.fixture
def registries_file(settings, tmp_path, loopback):
    """The server reads signatures from the loopback registry, with its credentials."""
    path = images.registries_file(loopback, tmp_path)
    settings.VANTAGE_REGISTRIES_FILE = str(path)
    return path


@pytest.fixture
def second_root(org_b):
    return factories.make_user(org_b, roles=("root",), username="second-root")


def _key_for(user, name="laptop"):
    """A fresh signing key registered on the user's account (through the service)."""
    key = signing.generate_key()
    signing_key_add(actor=user, user=user, name=name, public_key=signing.public_key_pem(key.public_key()).decode())
    return key


@pytest.fixture
def entry(reg, root, registries_file):
    """A fresh image in the registry and its catalogue entry, submitted by root."""
    reference = images.push_unsigned(reg, REPO)
    image, digest = reference.split("@")
    return algorithm_submit(actor=root, name="cox", image=image, digest=digest)


def _approve(api_for, user, entry, **extra):
    return api_for(user).post(f"/api/algorithms/{entry.pk}/review/", {"status": "approved", **extra}, format="json")


def _refusal(response) -> str:
    assert response.status_code == 400, response.data
    (message,) = response.data["signature"]
    return str(message)


def test_another_reviewer_approves_with_their_signature_and_the_approval_records_it(api_for, reg, second_root,
                                                                                   entry):
    key = _key_for(second_root)
    signed = signing.sign_image(reg, entry.image, key)  # by tag: signs the digest the entry pins
    assert signed.image_digest == entry.digest
    response = _approve(api_for, second_root, entry, note="read the code")
    assert response.status_code == 200, response.data
    assert response.data["status"] == "approved" and response.data["reviewer"] == second_root.pk
    (approval,) = response.data["approvals"]
    # What the server checked, not what the reviewer said: the payload signed and the key.
    assert (approval["reviewer"], approval["signature_digest"], approval["key_fingerprint"]) == (
        second_root.pk, signed.payload_digest, signed.fingerprint)
    event = AuditEvent.objects.get(verb="algorithm.approval")
    assert (event.details["key_fingerprint"], event.details["signature_digest"], event.details["key"]) == (
        signed.fingerprint, signed.payload_digest, "laptop")


def test_the_submitter_cannot_approve_their_own_algorithm_even_signed(api_for, reg, root, entry):
    signing.sign_image(reg, entry.image, _key_for(root))
    response = _approve(api_for, root, entry)
    assert response.status_code == 400
    assert "other than the submitter" in str(response.data["status"])
    entry.refresh_from_db()
    assert entry.status == Algorithm.Status.SUBMITTED and not AlgorithmApproval.objects.exists()


def test_an_unsigned_digest_is_not_approved(api_for, second_root, entry):
    _key_for(second_root)
    message = _refusal(_approve(api_for, second_root, entry))
    assert message.startswith(f"No signature: {entry.image.rsplit(':', 1)[0]}@{entry.digest} is not signed (no "
                              f"sha256-{entry.digest[7:]}.sig in the registry)"), message
    assert not AlgorithmApproval.objects.exists()


def test_a_reviewer_without_a_registered_key_is_told_so(api_for, reg, second_root, entry):
    signing.sign_image(reg, entry.image, signing.generate_key())
    assert _refusal(_approve(api_for, second_root, entry)).startswith(
        "No signature: you have no signing key registered")


def test_a_signature_by_a_key_the_server_does_not_know_is_the_wrong_key(api_for, reg, second_root, entry):
    _key_for(second_root)
    signing.sign_image(reg, entry.image, signing.generate_key())
    message = _refusal(_approve(api_for, second_root, entry))
    assert message.startswith("Wrong key: none of your registered keys") and "changed after signing" in message


def test_a_signature_by_the_submitters_key_is_named_as_theirs(api_for, reg, root, second_root, entry):
    _key_for(second_root)
    signing.sign_image(reg, entry.image, _key_for(root, name="build server"))
    message = _refusal(_approve(api_for, second_root, entry))
    assert message.startswith("Wrong key: ") and "signed by the submitter's key build server" in message, message


def test_a_signature_copied_from_another_digest_is_another_digest(api_for, reg, second_root, entry):
    key = _key_for(second_root)
    other = images.push_unsigned(reg, REPO)
    signing.sign_image(reg, other, key)
    other_digest = other.split("@")[1]
    raw, media_type, _ = reg.manifest(REPO, f"sha256-{other_digest[7:]}.sig")
    reg.put_manifest(REPO, f"sha256-{entry.digest[7:]}.sig", raw, media_type)
    message = _refusal(_approve(api_for, second_root, entry))
    assert message.startswith(f"Other digest: your key laptop signed {other_digest}, not {entry.digest}"), message


def test_a_payload_changed_after_signing_is_tampered(api_for, reg, second_root, entry):
    signing.sign_image(reg, entry.image, _key_for(second_root))
    images.alter_signed_payload(reg, REPO, entry.digest)  # same digest and reference, altered after signing
    message = _refusal(_approve(api_for, second_root, entry))
    assert message.startswith("Tampered: your signature of ") and "changed after you signed it" in message, message


def test_the_key_and_payload_the_reviewer_names_must_be_the_ones_found(api_for, reg, second_root, entry):
    key = _key_for(second_root)
    signed = signing.sign_image(reg, entry.image, key)
    response = _approve(api_for, second_root, entry, key_fingerprint="e" * 64)
    assert response.status_code == 400 and "not the fingerprint of one of your" in str(response.data["key_fingerprint"])
    response = _approve(api_for, second_root, entry, signature_digest="sha256:" + "f" * 64)
    assert response.status_code == 400 and signed.payload_digest in str(response.data["signature_digest"])
    response = _approve(api_for, second_root, entry, key_fingerprint=signed.fingerprint,
                        signature_digest=signed.payload_digest)
    assert response.status_code == 200, response.data


def test_two_other_reviewers_are_needed_when_the_server_asks_for_two(settings, reg, root, second_root, org_c,
                                                                      entry):
    settings.VANTAGE_CATALOGUE_REVIEWERS = 2
    third = factories.make_user(org_c, roles=("root",), username="third-root")
    signing.sign_image(reg, entry.image, _key_for(second_root))
    signing.sign_image(reg, entry.image, _key_for(third))  # a second layer in the same signature manifest
    first = algorithm_review(actor=second_root, algorithm=entry, status="approved")
    assert first.status == Algorithm.Status.SUBMITTED and first.approvals_missing == 1
    with pytest.raises(Conflict, match="approved this algorithm already"):
        algorithm_review(actor=second_root, algorithm=entry, status="approved")
    second = algorithm_review(actor=third, algorithm=entry, status="approved")
    assert second.status == Algorithm.Status.APPROVED and second.reviewer == third
    assert set(AlgorithmApproval.objects.values_list("key_fingerprint", flat=True)) == set(
        SigningKey.objects.filter(user__in=[second_root, third]).values_list("fingerprint", flat=True))


def test_the_server_reads_signatures_only_from_the_registries_it_lists(api_for, settings, reg, second_root, entry,
                                                                       tmp_path):
    signing.sign_image(reg, entry.image, _key_for(second_root))
    settings.VANTAGE_REGISTRIES_FILE = ""
    message = _refusal(_approve(api_for, second_root, entry))
    assert "reads signatures from no registry" in message and "VANTAGE_REGISTRIES_FILE" in message
    (tmp_path / "bad.toml").write_text("[registries.'x']\nuser = 1\n")
    settings.VANTAGE_REGISTRIES_FILE = str(tmp_path / "bad.toml")
    assert "registries.x takes username, password or password_file" in _refusal(_approve(api_for, second_root, entry))


@pytest.mark.parametrize("field, value", [("signature_digest", "sha256:short"), ("key_fingerprint", "xyz")])
def test_a_malformed_signature_record_names_its_field(api_for, second_root, field, value, root):
    submitted = algorithm_submit(actor=root, name="cox", image="127.0.0.1:5000/vantage/alg-cox:1", digest=DIGEST)
    response = api_for(second_root).post(f"/api/algorithms/{submitted.pk}/review/",
                                         {"status": "approved", field: value}, format="json")
    assert response.status_code == 400 and field in response.data


@pytest.fixture
def submitted(root):
    return algorithm_submit(actor=root, name="cox", image="127.0.0.1:5000/vantage/alg-cox:1", digest=DIGEST)


def test_a_retired_algorithm_is_retired_for_nodes_and_not_approved_again(api_for, second_root, submitted, node_a):
    factories.approved_algorithm(submitted, second_root)
    status = api_for(node_a).get("/api/algorithms/catalogue-status/",
                                 {"image": "127.0.0.1:5000/vantage/alg-cox@" + DIGEST, "digest": DIGEST})
    assert status.status_code == 200 and status.data["status"] == "approved"
    algorithm_review(actor=second_root, algorithm=submitted, status="retired")
    status = api_for(node_a).get("/api/algorithms/catalogue-status/",
                                 {"image": "127.0.0.1:5000/vantage/alg-cox:1", "digest": DIGEST})
    assert status.data["status"] == "retired"
    response = api_for(second_root).post(f"/api/algorithms/{submitted.pk}/review/", {"status": "approved"},
                                         format="json")
    assert response.status_code == 400 and "submit it anew" in str(response.data["status"])


def test_catalogue_status_knows_nothing_of_another_repository_or_digest(api_for, node_a, submitted):
    other = {"image": "127.0.0.1:5000/someone/alg-cox", "digest": DIGEST}
    assert api_for(node_a).get("/api/algorithms/catalogue-status/", other).data["status"] == "unknown"
    assert api_for(node_a).get("/api/algorithms/catalogue-status/",
                               {"image": "127.0.0.1:5000/vantage/alg-cox", "digest": DIGEST}).data["status"] == "submitted"


def test_catalogue_status_is_for_nodes_and_checks_its_input(api_for, node_a, root, anon):
    query = {"image": "127.0.0.1:5000/vantage/alg-cox", "digest": DIGEST}
    assert api_for(root).get("/api/algorithms/catalogue-status/", query).status_code == 403
    assert anon.get("/api/algorithms/catalogue-status/", query).status_code == 401
    response = api_for(node_a).get("/api/algorithms/catalogue-status/", {"image": "x", "digest": "sha256:1"})
    assert response.status_code == 400 and "digest" in response.data


def test_the_run_records_the_digest_its_node_executed(api_for, node_a, task, run_a, owner):
    assert task.digest == ""  # created by image name
    run_claim(run_id=run_a.pk, node=node_a)
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/start/", {"digest": DIGEST}, format="json")
    assert response.status_code == 200 and response.data["executed_digest"] == DIGEST
    assert Run.objects.get(pk=run_a.pk).digest == DIGEST
    assert api_for(owner).get(f"/api/runs/{run_a.pk}/").data["executed_digest"] == DIGEST
    listed = api_for(owner).get("/api/runs/", {"task": task.pk}).data["results"]
    assert {r["id"]: r["executed_digest"] for r in listed}[run_a.pk] == DIGEST


def test_a_malformed_executed_digest_is_refused_and_the_run_stays_claimed(api_for, node_a, run_a):
    run_claim(run_id=run_a.pk, node=node_a)
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/start/", {"digest": "latest"}, format="json")
    assert response.status_code == 400 and "digest" in response.data
    assert Run.objects.get(pk=run_a.pk).status == Run.Status.CLAIMED
