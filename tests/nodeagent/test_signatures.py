"""Cosign-format signatures against the real registry: our signer's layout, held to the
spec field by field and checked by an independent verifier (openssl), and every reason
the node refuses an image (nodeagent/signatures.py)."""

import base64
import hashlib
import json
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nodeagent.config import Policy, RegistryCredentials, TrustedKey
from nodeagent.images import ImageRef
from nodeagent.signatures import Rejected, Unavailable, admit, verify
from tests.nodeagent import images
from vantage_client import signing

REPO = "vantage-test/signed"


@pytest.fixture(scope="module")
def reg(docker_client, registry):
    return signing.Registry(registry.host, registry.username, registry.password)


@pytest.fixture
def fresh(reg):
    """A new, never signed image, pushed through the registry's HTTP API in milliseconds."""
    return lambda path=REPO: images.push_unsigned(reg, path)


def _key(tmp_path: Path, name: str):
    key = signing.generate_key()
    public = signing.write_key_pair(tmp_path / f"{name}.key", key, None)
    return key, TrustedKey(name=public.name, path=public, key=key.public_key(),
                           fingerprint=signing.fingerprint(key.public_key()))


def _policy(*keys, **extra) -> Policy:
    return Policy(require_signature=True, trusted_keys=tuple(keys), **extra)


def _repo_path(reference: str) -> str:
    return ImageRef.parse(reference).repository.split("/", 1)[1]


def test_signed_image_is_admitted_pinned_to_the_signed_digest(reg, fresh, tmp_path, registry):
    image = fresh()
    key, trusted = _key(tmp_path, "reviewer")
    signed = signing.sign_image(reg, image.split("@")[0], key)  # by tag: the digest it names is signed
    ref = ImageRef.parse(image.split("@")[0])
    creds = {registry.host: RegistryCredentials(registry.host, registry.username, registry.password)}
    admitted = admit(_policy(trusted), creds, ref, lambda *_: pytest.fail("catalogue not required"))
    assert admitted.image.digest == signed.image_digest == image.split("@")[1]
    # The signer the steward page shows for a held result of this image.
    assert admitted.signer.fingerprint == trusted.fingerprint
    assert admitted.signer_text() == f"{trusted.name} ({trusted.fingerprint[:16]}...)"


def test_signature_layout_follows_cosigns_specification_and_verifies_with_openssl(reg, fresh, tmp_path):
    image = fresh()
    key, trusted = _key(tmp_path, "reviewer")
    signed = signing.sign_image(reg, image, key, {"reviewed-by": "dpo"})
    ref = ImageRef.parse(image)
    path = _repo_path(image)
    raw, media_type, _ = reg.manifest(path, f"sha256-{ref.digest.split(':')[1]}.sig")
    manifest = json.loads(raw)
    assert media_type == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == media_type
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert layer["digest"] == signed.payload_digest
    payload = reg.blob(path, layer["digest"], 65536)
    assert layer["size"] == len(payload)
    assert json.loads(payload) == {
        "critical": {"identity": {"docker-reference": ref.repository},
                     "image": {"docker-manifest-digest": ref.digest},
                     "type": "cosign container image signature"},
        "optional": {"reviewed-by": "dpo"},
    }
    # An ASN.1 DER ECDSA signature over SHA-256 of the payload, as any verifier reads it.
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig").write_bytes(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    done = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(trusted.path), "-signature",
                           str(tmp_path / "sig"), str(tmp_path / "payload")], capture_output=True, text=True)
    assert done.returncode == 0 and "Verified OK" in done.stdout, done.stdout + done.stderr


def test_a_second_signer_adds_a_layer_and_either_key_is_enough(reg, fresh, tmp_path):
    image = fresh()
    first, first_trusted = _key(tmp_path, "first")
    second, second_trusted = _key(tmp_path, "second")
    signing.sign_image(reg, image, first)
    signing.sign_image(reg, image, second)
    signing.sign_image(reg, image, second)  # signing again replaces the signer's own layer
    ref = ImageRef.parse(image)
    raw, _, _ = reg.manifest(_repo_path(image), f"sha256-{ref.digest.split(':')[1]}.sig")
    assert len(json.loads(raw)["layers"]) == 2
    assert verify(_policy(first_trusted), reg, ref).key == first_trusted
    assert verify(_policy(second_trusted), reg, ref).key == second_trusted


def test_unsigned_image_is_rejected(reg, fresh, tmp_path):
    image = fresh()
    _, trusted = _key(tmp_path, "reviewer")
    with pytest.raises(Rejected, match=r"is not signed \(no sha256-[0-9a-f]{64}\.sig in its registry\)"):
        verify(_policy(trusted), reg, ImageRef.parse(image))


def test_image_signed_by_an_untrusted_key_is_rejected(reg, fresh, tmp_path):
    image = fresh()
    stranger, _ = _key(tmp_path, "stranger")
    _, trusted = _key(tmp_path, "reviewer")
    signing.sign_image(reg, image, stranger)
    with pytest.raises(Rejected, match="no key this node trusts signed"):
        verify(_policy(trusted), reg, ImageRef.parse(image))


def test_signature_copied_from_another_digest_is_rejected(reg, fresh, tmp_path):
    signed_image, other_image = fresh(), fresh()
    key, trusted = _key(tmp_path, "reviewer")
    signing.sign_image(reg, signed_image, key)
    path = _repo_path(signed_image)
    signed_digest, other_digest = signed_image.split("@")[1], other_image.split("@")[1]
    raw, media_type, _ = reg.manifest(path, f"sha256-{signed_digest.split(':')[1]}.sig")
    reg.put_manifest(path, f"sha256-{other_digest.split(':')[1]}.sig", raw, media_type)
    with pytest.raises(Rejected, match=f"is for another image digest \\({signed_digest}\\), not {other_digest}"):
        verify(_policy(trusted), reg, ImageRef.parse(other_image))


def _copy(reg, source: str, target: str, reference: str) -> None:
    """Copy a manifest and its blobs from one repository to another, as anyone with push rights can."""
    raw, media_type, _ = reg.manifest(source, reference)
    manifest = json.loads(raw)
    for blob in manifest["layers"] + [manifest["config"]]:
        reg.put_blob(target, reg.blob(source, blob["digest"], 65536))
    reg.put_manifest(target, reference, raw, media_type)


def test_signature_for_another_repository_is_rejected(reg, fresh, tmp_path, registry):
    image = fresh()
    key, trusted = _key(tmp_path, "reviewer")
    signing.sign_image(reg, image, key)
    # The same content pushed under an allowed-looking name, with the signature copied over.
    digest = image.split("@")[1]
    copy_repo = f"{registry.host}/vantage-test/copied"
    _copy(reg, REPO, "vantage-test/copied", digest)
    _copy(reg, REPO, "vantage-test/copied", f"sha256-{digest.split(':')[1]}.sig")
    with pytest.raises(Rejected, match=f"is for repository {image.split(':')[0]}:5000/{REPO}, not {copy_repo}"):
        verify(_policy(trusted), reg, ImageRef.parse(f"{copy_repo}@{digest}"))


def test_tampered_payload_is_rejected(reg, fresh, tmp_path):
    image = fresh()
    key, trusted = _key(tmp_path, "reviewer")
    signing.sign_image(reg, image, key)
    images.alter_signed_payload(reg, _repo_path(image), image.split("@")[1])  # digest and reference kept
    with pytest.raises(Rejected, match="or its payload was altered after signing"):
        verify(_policy(trusted), reg, ImageRef.parse(image))


def test_revoked_and_expired_keys_are_refused(reg, fresh, tmp_path):
    image = fresh()
    key, trusted = _key(tmp_path, "reviewer")
    signing.sign_image(reg, image, key)
    ref = ImageRef.parse(image)
    with pytest.raises(Rejected, match="which this node has revoked"):
        verify(_policy(trusted, revoked_keys=frozenset({trusted.fingerprint})), reg, ref)
    expired = replace(trusted, not_after=datetime.now(timezone.utc) - timedelta(days=1))
    with pytest.raises(Rejected, match="which expired on"):
        verify(_policy(expired), reg, ref)
    assert verify(_policy(replace(trusted, not_after=datetime.now(timezone.utc) + timedelta(days=1))), reg, ref)


def test_a_pinned_digest_the_registry_does_not_have_is_rejected(reg, tmp_path):
    _, trusted = _key(tmp_path, "reviewer")
    missing = ImageRef.parse(f"{reg.host}/{REPO}@sha256:{hashlib.sha256(b'nothing').hexdigest()}")
    with pytest.raises(Unavailable, match="is not in its registry"):
        verify(_policy(trusted), reg, missing)
    # Without required signatures the pull reports it, as before: the task's digest is kept.
    assert verify(Policy(require_signature=False), reg, missing).digest == missing.digest


def test_catalogue_refusal_comes_after_a_valid_signature(reg, fresh, tmp_path, registry):
    image = fresh()
    key, trusted = _key(tmp_path, "reviewer")
    signing.sign_image(reg, image, key)
    creds = {registry.host: RegistryCredentials(registry.host, registry.username, registry.password)}
    asked = []
    with pytest.raises(Rejected, match="is retired in the catalogue"):
        admit(_policy(trusted, require_catalogue=True), creds, ImageRef.parse(image),
              lambda repository, digest: asked.append((repository, digest)) or "retired")
    assert asked == [(ImageRef.parse(image).repository, image.split("@")[1])]
