"""Signatures made by cosign itself, from public material, through our verifier.

1. A complete vector (public key, payload, signature) from sigstore's Rust client:
   sigstore/sigstore-rs, src/cosign/signature_layers.rs at commit
   0592e198b9cdfccc54ff788d9d88f9f3f41256d3, test helper
   `build_correct_signature_layer_without_bundle` (its `verify_with_key` test checks it with
   sigstore-rs's own verifier). The image, `registry-testing.svc.lan/busybox`, is the one
   that repository's README signs with the official cosign client (`cosign
   generate-key-pair`, then `cosign sign -key cosign.key registry-testing.svc.lan/busybox`).
   The payload there is a JSON value serialised by serde_json; the bytes are cosign's
   compact form, which our `payload_for` writes byte for byte (checked below).
2. A payload digest published by cosign v1.13.1 itself: the `cosign sign -d` trace in
   jeffhuang4704/just-notes, cosign/cosign-traffic.md (commit
   172954a4a6187cf38e5743b73f9ab70e89a54e66), pushing
   `index.docker.io/chihjenhuang/cosign1:sha256-4c1c50d0....sig`. Its layer names the payload
   blob sha256:b671489e... of 252 bytes; our payload for the same reference and digest has
   exactly that digest and size. (Its public key is not published, so this one checks the
   payload and manifest layout, not a signature.)
"""

import base64
import hashlib
import json

import pytest

from nodeagent.config import Policy, TrustedKey
from nodeagent.images import ImageRef
from nodeagent.signatures import Rejected, verify
from vantage_client import signing

RS_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu
OSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==
-----END PUBLIC KEY-----
"""
RS_SIGNATURE = "MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8="
RS_REPOSITORY = signing.Repository("registry-testing.svc.lan", "busybox")
RS_DIGEST = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"

# cosign v1.13.1's signature manifest for index.docker.io/chihjenhuang/cosign1, as it pushed it.
TRACE_DIGEST = "sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d"
TRACE_MANIFEST = (
    '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":'
    '"application/vnd.oci.image.config.v1+json","size":247,"digest":"sha256:85ad8e17d3d7c00664855c638832bd99f32d4'
    '2542c2d587851410a45a7f60b95"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json",'
    '"size":252,"digest":"sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc","annotations":'
    '{"dev.cosignproject.cosign/signature":"MEYCIQCPH7NJAIfrB6BZN91dV0o7l/i11muXrvrAh100jDMMhAIhAPsLH0oXb2OPITXRpWB'
    'MUd3vHtz5Ks5pql2Hr6t/IJXw"}}]}'
)


class OneImageRegistry:
    """A registry double holding one image's signature manifest and payload blob, as a
    registry would serve them (laid out exactly as cosign stores them)."""

    def __init__(self, repository: signing.Repository, digest: str, payload: bytes, signature: str):
        self.host = repository.host
        self.digest = digest
        self.payload = payload
        self.payload_digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        self.signature_manifest = json.dumps({
            "schemaVersion": 2, "mediaType": signing.OCI_MANIFEST,
            "config": {"mediaType": signing.OCI_CONFIG, "size": 2, "digest": "sha256:" + "0" * 64},
            "layers": [{"mediaType": signing.PAYLOAD_MEDIA_TYPE, "size": len(payload), "digest": self.payload_digest,
                        "annotations": {signing.SIGNATURE_ANNOTATION: signature}}],
        }).encode()
        self.tag = repository.signature_tag(digest)

    def manifest(self, path, reference, *, push=False):
        if reference == self.digest:  # the image itself: only its digest is read
            return b"{}", signing.OCI_MANIFEST, self.digest
        if reference == self.tag:
            return self.signature_manifest, signing.OCI_MANIFEST, "sha256:" + "1" * 64
        return None

    def blob(self, path, digest, limit):
        assert digest == self.payload_digest
        return self.payload


def _rs_key() -> TrustedKey:
    key = signing.load_public_key(RS_PUBLIC_KEY)
    return TrustedKey(name="sigstore-rs test key", path=None, key=key, fingerprint=signing.fingerprint(key))


def test_our_payload_is_byte_for_byte_the_one_the_cosign_made_signature_covers():
    payload = signing.payload_for(RS_REPOSITORY, RS_DIGEST)
    assert payload == (b'{"critical":{"identity":{"docker-reference":"registry-testing.svc.lan/busybox"},'
                       b'"image":{"docker-manifest-digest":"' + RS_DIGEST.encode() + b'"},'
                       b'"type":"cosign container image signature"},"optional":null}')
    assert signing.signature_valid(signing.load_public_key(RS_PUBLIC_KEY), base64.b64decode(RS_SIGNATURE), payload)


def test_the_node_admits_the_cosign_signed_image_with_the_cosign_key_only():
    payload = signing.payload_for(RS_REPOSITORY, RS_DIGEST)
    registry = OneImageRegistry(RS_REPOSITORY, RS_DIGEST, payload, RS_SIGNATURE)
    ref = ImageRef.parse(f"{RS_REPOSITORY.reference}@{RS_DIGEST}")
    trusted = _rs_key()
    verified = verify(Policy(require_signature=True, trusted_keys=(trusted,)), registry, ref)
    assert (verified.digest, verified.key) == (RS_DIGEST, trusted)
    other = signing.generate_key().public_key()
    stranger = TrustedKey(name="other", path=None, key=other, fingerprint=signing.fingerprint(other))
    with pytest.raises(Rejected, match="no key this node trusts signed"):
        verify(Policy(require_signature=True, trusted_keys=(stranger,)), registry, ref)


def test_the_shared_check_finds_the_cosign_signature_and_a_changed_payload_fails():
    payload = signing.payload_for(RS_REPOSITORY, RS_DIGEST)
    registry = OneImageRegistry(RS_REPOSITORY, RS_DIGEST, payload, RS_SIGNATURE)
    key = signing.load_public_key(RS_PUBLIC_KEY)
    (layer,) = signing.signature_layers(registry, RS_REPOSITORY, RS_DIGEST)
    found = signing.check_layer(registry, RS_REPOSITORY, RS_DIGEST, layer, [key])
    assert (found.key, found.problem, found.claimed_digest) == (key, "", RS_DIGEST)
    changed = payload.replace(b'"optional":null', b'"optional":{"a":"b"}')
    registry = OneImageRegistry(RS_REPOSITORY, RS_DIGEST, changed, RS_SIGNATURE)
    (layer,) = signing.signature_layers(registry, RS_REPOSITORY, RS_DIGEST)
    assert signing.check_layer(registry, RS_REPOSITORY, RS_DIGEST, layer, [key]).problem == signing.NO_KEY


def test_our_payload_and_manifest_layout_match_what_cosign_1_13_pushed():
    manifest = json.loads(TRACE_MANIFEST)
    (layer,) = manifest["layers"]
    payload = signing.payload_for(signing.Repository("index.docker.io", "chihjenhuang/cosign1"), TRACE_DIGEST)
    assert (len(payload), "sha256:" + hashlib.sha256(payload).hexdigest()) == (layer["size"], layer["digest"])
    # Field by field, the manifest our signer writes has cosign's shape.
    assert (manifest["schemaVersion"], manifest["mediaType"], manifest["config"]["mediaType"]) == (
        2, signing.OCI_MANIFEST, signing.OCI_CONFIG)
    assert layer["mediaType"] == signing.PAYLOAD_MEDIA_TYPE
    assert set(layer["annotations"]) == {signing.SIGNATURE_ANNOTATION}
    assert signing.Repository("index.docker.io", "chihjenhuang/cosign1").signature_tag(TRACE_DIGEST) == (
        "sha256-4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d.sig")
