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

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from nodeagent.config import Policy, RegistryCredentials, TrustedKey
from nodeagent.images import ImageRef
from vantage_client.signing import (
    NO_KEY, NO_PAYLOAD, NOT_BASE64, NOT_SIMPLE_SIGNING, OTHER_DIGEST, UNREADABLE, WRONG_TYPE, LayerCheck,
    NotSignatureManifest, NotSigned, Registry, Repository, SigningError, check_layer, signature_layers,
)

log = logging.getLogger(__name__)


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
    run records what it executed) and the pull reports any problem, as before.
    The checking itself is client/vantage_client/signing.py's (check_layer), which the
    server's catalogue uses too; this turns its findings into the node's reasons."""
    if not policy.require_signature:
        try:
            return Verified(resolve_digest(registry, ref), None)
        except Unavailable:
            return Verified(ref.digest, None)
    digest = resolve_digest(registry, ref)
    if not policy.trusted_keys:
        raise Rejected("this node requires signed images (policy.require_signature) but trusts no key: "
                       "add policy.trusted_keys")
    repository = Repository(ref.registry, ref.repository.split("/", 1)[1])
    try:
        layers = signature_layers(registry, repository, digest)
    except NotSigned as exc:
        raise Rejected(f"image {ref.repository}@{digest} is not signed (no {exc.tag} in its registry)") from None
    except NotSignatureManifest as exc:
        raise Rejected(str(exc)) from None
    except SigningError as exc:
        raise Rejected(f"the signature of {ref.repository}@{digest} could not be read: {exc}") from None
    moment = now or datetime.now(timezone.utc)
    problems: list[tuple[int, str]] = []  # (rank, sentence): the most telling one is reported
    for layer in layers:
        found = check_layer(registry, repository, digest, layer, policy.trusted_keys, key_of=lambda key: key.key)
        if not found.problem:
            problem = _key_problem(found.key, policy, moment)
            if problem is None:
                return Verified(digest, found.key)
            problems.append(problem)
        else:
            problems.append(_reason(found, ref.repository, digest))
    problems.sort(key=lambda item: item[0])
    raise Rejected(problems[0][1])


def _reason(found: LayerCheck, repository: str, digest: str) -> tuple[int, str]:
    """(rank, the node's sentence) for a signature that does not admit the image."""
    problem = found.problem
    if problem == NOT_BASE64:
        return 5, "a signature in the registry is not base64"
    if problem == NO_PAYLOAD:
        return 5, "a signature layer names no payload digest"
    if problem == UNREADABLE:
        return 4, f"a signature's payload could not be read: {found.detail}"
    if problem == NO_KEY:
        return 3, (f"no key this node trusts signed {repository}@{digest}: its signature was made by "
                   "another key, or its payload was altered after signing")
    if problem == NOT_SIMPLE_SIGNING:
        return 2, "a trusted key's signature covers a payload that is not a cosign simple-signing document"
    if problem == WRONG_TYPE:
        return 2, f"a trusted key signed a payload of type {found.claimed_type!r}, not a cosign image signature"
    if problem == OTHER_DIGEST:
        return 1, f"the trusted signature found is for another image digest ({found.claimed_digest}), not {digest}"
    return 1, f"the trusted signature found is for repository {found.claimed_reference}, not {repository}"


def _key_problem(signer: TrustedKey, policy: Policy, now: datetime) -> tuple[int, str] | None:
    """The node's own word on a key that made a valid signature: revoked, expired, or fine."""
    if signer.fingerprint in policy.revoked_keys:
        return 0, (f"the only valid signature is by key {signer.name} ({signer.fingerprint[:16]}...), "
                   "which this node has revoked (policy.revoked_keys)")
    if signer.not_after is not None and now > signer.not_after:
        return 0, (f"the only valid signature is by key {signer.name}, which expired on "
                   f"{signer.not_after.date().isoformat()} (not_after)")
    return None


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
