"""What runs here: an image's cosign signature, checked on the node before it is pulled.

The node trusts neither the server nor the registry for this. It resolves the image's
manifest digest itself (a pinned digest is checked against the manifest bytes), reads
`<repo>:sha256-<hex>.sig` (cosign's key-based layout, client/vantage_client/signing.py
documents it), and accepts the image only when one of the keys in `[policy]
trusted_keys` signed a payload naming exactly that digest and that repository, and
that key is neither past its `not_after` nor listed in `revoked_keys`.

Every refusal is one sentence saying which check failed; the job reports it as the
run's `rejected` reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from nodeagent.config import Policy, RegistryCredentials, TrustedKey
from nodeagent.images import ImageRef
from vantage_client.signing import (
    MAX_PAYLOAD,
    PAYLOAD_MEDIA_TYPE,
    PAYLOAD_TYPE,
    SIGNATURE_ANNOTATION,
    Registry,
    SigningError,
)

log = logging.getLogger(__name__)

MAX_SIGNATURES = 32  # layers of one .sig manifest looked at; more is a registry flooding the node


class Rejected(Exception):
    """The image may not run here; str() is the one-sentence reason."""


class Unavailable(Exception):
    """The image's digest could not be had from its registry (not there, credentials
    refused, registry away): the run fails as an image problem, not a policy refusal."""


@dataclass(frozen=True)
class Verified:
    digest: str
    key: TrustedKey | None  # None when signatures are not required and none was checked


def registry_for(ref: ImageRef, registries: dict[str, RegistryCredentials]) -> Registry:
    creds = registries.get(ref.registry)
    return Registry(ref.registry, creds.username if creds else None, creds.password if creds else None)


def resolve_digest(registry: Registry, ref: ImageRef) -> str:
    """The manifest digest the registry serves for this reference (checked against the
    bytes when the reference pins one)."""
    path = ref.repository.split("/", 1)[1] if "/" in ref.repository else ref.repository
    try:
        found = registry.manifest(path, ref.digest or ref.tag or "latest")
    except SigningError as exc:
        raise Unavailable(f"the digest of image {ref} could not be resolved: {exc}") from None
    if found is None:
        raise Unavailable(f"image {ref} is not in its registry")
    return found[2]


def verify(policy: Policy, registry: Registry, ref: ImageRef, *, now: datetime | None = None) -> Verified:
    """Resolve the digest and check its signature; raises Rejected with the reason, or
    Unavailable when the registry cannot say which digest the reference names.

    Without require_signature the digest is resolved where the registry answers (so the
    run records what it executed) and the pull reports any problem, as before."""
    if not policy.require_signature:
        try:
            return Verified(resolve_digest(registry, ref), None)
        except Unavailable:
            return Verified(ref.digest, None)
    digest = resolve_digest(registry, ref)
    if not policy.trusted_keys:
        raise Rejected("this node requires signed images (policy.require_signature) but trusts no key: "
                       "add policy.trusted_keys")
    path = ref.repository.split("/", 1)[1]
    tag = digest.replace(":", "-") + ".sig"
    try:
        found = registry.manifest(path, tag)
    except SigningError as exc:
        raise Rejected(f"the signature of {ref.repository}@{digest} could not be read: {exc}") from None
    if found is None:
        raise Rejected(f"image {ref.repository}@{digest} is not signed (no {tag} in its registry)")
    try:
        layers = json.loads(found[0]).get("layers")
    except (ValueError, AttributeError):
        layers = None
    if not isinstance(layers, list):
        raise Rejected(f"{ref.repository}:{tag} is not a signature manifest")
    signatures = [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == PAYLOAD_MEDIA_TYPE]
    if not signatures:
        raise Rejected(f"{ref.repository}:{tag} holds no cosign signature")
    moment = now or datetime.now(timezone.utc)
    problems: list[tuple[int, str]] = []  # (rank, sentence): the most telling one is reported
    for layer in signatures[:MAX_SIGNATURES]:
        try:
            key, problem = _check_layer(registry, path, layer, ref.repository, digest, policy, moment)
        except SigningError as exc:
            problems.append((4, f"a signature's payload could not be read: {exc}"))
            continue
        if key is not None:
            return Verified(digest, key)
        problems.append(problem)
    problems.sort(key=lambda item: item[0])
    raise Rejected(problems[0][1])


def _check_layer(registry: Registry, path: str, layer: dict, repository: str, digest: str, policy: Policy,
                 now: datetime) -> tuple[TrustedKey | None, tuple[int, str] | None]:
    encoded = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None, (5, "a signature in the registry is not base64")
    blob_digest = layer.get("digest")
    if not isinstance(blob_digest, str) or not blob_digest.startswith("sha256:"):
        return None, (5, "a signature layer names no payload digest")
    payload = registry.blob(path, blob_digest, MAX_PAYLOAD)
    signer = next((key for key in policy.trusted_keys if _valid(key, signature, payload)), None)
    if signer is None:
        return None, (3, f"no key this node trusts signed {repository}@{digest}: its signature was made by "
                         "another key, or its payload was altered after signing")
    try:
        critical = json.loads(payload)["critical"]
        claimed_digest = critical["image"]["docker-manifest-digest"]
        claimed_reference = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        return None, (2, "a trusted key's signature covers a payload that is not a cosign simple-signing document")
    if kind != PAYLOAD_TYPE:
        return None, (2, f"a trusted key signed a payload of type {kind!r}, not a cosign image signature")
    if claimed_digest != digest:
        return None, (1, f"the trusted signature found is for another image digest ({claimed_digest}), "
                         f"not {digest}")
    if claimed_reference != repository:
        return None, (1, f"the trusted signature found is for repository {claimed_reference}, not {repository}")
    if signer.fingerprint in policy.revoked_keys:
        return None, (0, f"the only valid signature is by key {signer.name} ({signer.fingerprint[:16]}...), "
                         "which this node has revoked (policy.revoked_keys)")
    if signer.not_after is not None and now > signer.not_after:
        return None, (0, f"the only valid signature is by key {signer.name}, which expired on "
                         f"{signer.not_after.date().isoformat()} (not_after)")
    return signer, None


def _valid(key: TrustedKey, signature: bytes, payload: bytes) -> bool:
    try:
        key.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Admitted:
    image: ImageRef  # pinned to the digest that runs
    signer: TrustedKey | None  # the trusted key whose signature admitted it (None: not required)

    def signer_text(self) -> str:
        """The signer as the steward page shows it: the key's name and fingerprint."""
        return f"{self.signer.name} ({self.signer.fingerprint[:16]}...)" if self.signer else ""


def admit(policy: Policy, registries: dict[str, RegistryCredentials], ref: ImageRef, catalogue_status) -> Admitted:
    """The image pinned to the digest that may run here, with its signer, or Rejected.

    `catalogue_status(image, digest)` asks the server for the catalogue's word on the
    digest (only with require_catalogue): the catalogue can refuse an image, never admit
    one on its own, because the signature is checked first either way."""
    verified = verify(policy, registry_for(ref, registries), ref)
    if verified.key is not None:
        log.info("image %s@%s: signed by trusted key %s (%s)", ref.repository, verified.digest, verified.key.name,
                 verified.key.fingerprint[:16])
    if policy.require_catalogue:
        status = catalogue_status(ref.repository, verified.digest)
        if status != "approved":
            shown = "not in the catalogue" if status in (None, "", "unknown") else f"{status} in the catalogue"
            raise Rejected(f"image {ref.repository}@{verified.digest} is {shown} "
                           "and this node runs approved catalogue entries only (policy.require_catalogue)")
    return Admitted(ImageRef(repository=ref.repository, tag=ref.tag, digest=verified.digest or ref.digest),
                    verified.key)
