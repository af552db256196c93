"""A catalogue approval needs the reviewer's own signature of the entry's digest.

On approval the server reads the cosign signature artefact of the entry's digest
(`<repo>:sha256-<hex>.sig`) from the image's registry and accepts the approval only when
one of the reviewer's registered signing keys (accounts.SigningKey) signed a payload
naming exactly that digest and repository. The checking is the one the nodes run
(client/vantage_client/signing.py: signature_layers, check_layer); this module turns its
findings into the reviewer's answer, a 400 under `signature` that starts with what is
wrong:

- "No signature:"  nothing is stored for the digest (or the reviewer has no key);
- "Other digest:"  one of the reviewer's keys signed, but a payload naming another
                    image digest or repository (a signature copied from another image);
- "Tampered:"      the reviewer's signature of this digest is there, but the payload
                    beside it was changed after signing; or the artefact is damaged;
- "Wrong key:"     made by a key registered to another account (named), or by a key
                    the server does not know, which it cannot tell from a payload
                    changed after signing (the sentence says both).

The server contacts only the registries listed in VANTAGE_REGISTRIES_FILE (TOML, the
node's `[registries."host"]` tables: username with password or password_file, or an
empty table for a registry read anonymously), so a catalogue entry cannot point it at
any other host.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from accounts.models import SigningKey
from core.errors import DomainError
from vantage_client import signing

FIELD = "signature"
MAX_OTHER_KEYS = 2000  # other accounts' keys tried on a signature none of the reviewer's made


@dataclass(frozen=True)
class ReviewerSignature:
    key: SigningKey
    payload_digest: str  # the signed payload's blob digest, recorded on the approval


def _refuse(message: str, field: str = FIELD) -> DomainError:
    return DomainError(message, field=field)


def configured_registries() -> dict[str, tuple[str | None, str | None]]:
    """host -> (username, password) from VANTAGE_REGISTRIES_FILE; raises DomainError
    naming the setting when the file cannot be used."""
    path = getattr(settings, "VANTAGE_REGISTRIES_FILE", "") or ""
    if not path:
        return {}
    where = f"VANTAGE_REGISTRIES_FILE ({path})"
    try:
        document = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise _refuse(f"The server cannot read {where}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise _refuse(f"The server's {where} is not valid TOML: {exc}.") from None
    tables = document.get("registries", {})
    unknown = sorted(set(document) - {"registries"})
    if not isinstance(tables, dict) or unknown:
        raise _refuse(f"The server's {where} must hold [registries.\"host\"] tables only.")
    found = {}
    for host, entry in tables.items():
        if not isinstance(entry, dict) or set(entry) - {"username", "password", "password_file"}:
            raise _refuse(f"The server's {where}: registries.{host} takes username, password or password_file.")
        password = entry.get("password")
        if entry.get("password_file"):
            try:
                password = Path(entry["password_file"]).read_text().strip()
            except OSError as exc:
                raise _refuse(f"The server cannot read the password file of registry {host} ({where}): "
                              f"{exc.strerror}.") from None
        found[host] = (entry.get("username"), password)
    return found


def reviewer_signature(*, algorithm, reviewer, key_fingerprint: str = "",
                       signature_digest: str = "") -> ReviewerSignature:
    """The reviewer's signature of the entry's digest, checked in its registry; raises
    DomainError (400) saying what is wrong. `key_fingerprint` / `signature_digest`, when
    the reviewer gives them, must name the key and payload found."""
    keys = list(SigningKey.objects.filter(user=reviewer).order_by("id"))
    if key_fingerprint:
        keys = [key for key in keys if key.fingerprint == key_fingerprint.lower()]
        if not keys:
            raise _refuse(f"{key_fingerprint} is not the fingerprint of one of your registered signing keys.",
                          field="key_fingerprint")
    if not keys:
        raise _refuse("No signature: you have no signing key registered, so no signature can be yours. Register "
                      "your public key (POST /api/signing-keys/, or Signing keys in the admin), sign the image "
                      "with it (vantage-client sign), then approve.")
    try:
        repository, _ = signing.Repository.parse(algorithm.image)
    except signing.SigningError as exc:
        raise _refuse(f"The entry's image cannot be checked: {exc}.") from None
    digest = algorithm.digest
    shown = f"{repository.reference}@{digest}"
    credentials = configured_registries()
    if repository.host not in credentials:
        raise _refuse(f"This server reads signatures from no registry {repository.host}: its administrator lists "
                      "the registries it may read in VANTAGE_REGISTRIES_FILE.")
    username, password = credentials[repository.host]
    registry = signing.Registry(repository.host, username, password)
    public = {key.pk: signing.load_public_key(key.public_key.encode()) for key in keys}
    try:
        layers = signing.signature_layers(registry, repository, digest)
    except signing.NotSigned as exc:
        raise _refuse(f"No signature: {shown} is not signed ({exc}). Sign it with your registered key "
                      "(vantage-client sign), then approve.") from None
    except signing.NotSignatureManifest as exc:
        raise _refuse(f"Tampered: {exc}: the artefact under the signature tag is not what a signer stores.") from None
    except signing.SigningError as exc:
        raise _refuse(f"The signature of {shown} could not be read from its registry: {exc}.") from None
    findings = [signing.check_layer(registry, repository, digest, layer, keys, key_of=lambda key: public[key.pk])
                for layer in layers]
    valid = [found for found in findings if not found.problem]
    if signature_digest:
        matching = [found for found in valid if found.payload_digest == signature_digest]
        if valid and not matching:
            raise _refuse(f"Your signature of {shown} is the payload {valid[0].payload_digest}, not "
                          f"{signature_digest}.", field="signature_digest")
        valid = matching
    if valid:
        return ReviewerSignature(valid[0].key, valid[0].payload_digest)
    raise _refuse(_why_not(findings, keys, public, repository, digest, reviewer, algorithm))


def _why_not(findings, keys, public, repository: signing.Repository, digest: str, reviewer, algorithm) -> str:
    """The most telling reason none of the signatures is the reviewer's, as one sentence."""
    shown = f"{repository.reference}@{digest}"
    yours = [found for found in findings if found.key is not None]
    for found in yours:
        if found.problem == signing.OTHER_DIGEST:
            return (f"Other digest: your key {found.key.name} signed {found.claimed_digest}, not {digest}: this "
                    "signature was copied from another image. Sign this digest, then approve.")
        if found.problem == signing.OTHER_REPOSITORY:
            return (f"Other digest: your key {found.key.name} signed this digest for repository "
                    f"{found.claimed_reference}, not {repository.reference}. Sign it for this repository.")
    if yours:
        return (f"Tampered: your key {yours[0].key.name} signed a payload that is not a cosign image signature "
                f"of {shown}.")
    unsigned = [found for found in findings if found.problem == signing.NO_KEY]
    canonical = signing.payload_for(repository, digest)
    for found in unsigned:
        if found.payload != canonical and any(signing.signature_valid(public[key.pk], found.signature, canonical)
                                              for key in keys):
            return (f"Tampered: your signature of {shown} is in its registry, but the payload stored with it "
                    "was changed after you signed it.")
    if unsigned:
        others = (SigningKey.objects.exclude(user=reviewer).select_related("user").order_by("id")[:MAX_OTHER_KEYS])
        for other in others:
            key = signing.load_public_key(other.public_key.encode())
            if any(signing.signature_valid(key, found.signature, found.payload) for found in unsigned):
                whose = ("the submitter's" if other.user_id == algorithm.submitted_by_id
                         else f"{other.user.username}'s")
                return (f"Wrong key: {shown} is signed by {whose} key {other.name} ({other.fingerprint[:16]}...), "
                        "not by one of yours. Sign it with your own registered key, then approve.")
        fingerprints = ", ".join(key.fingerprint[:16] + "..." for key in keys)
        return (f"Wrong key: none of your registered keys ({fingerprints}) made the signature stored for {shown}: "
                "it was made by a key this server does not know, or its payload was changed after signing.")
    first = findings[0]
    what = {signing.NOT_BASE64: "its signature is not base64", signing.NO_PAYLOAD: "it names no payload",
            signing.UNREADABLE: f"its payload could not be read ({first.detail})"}.get(first.problem, first.problem)
    return f"Tampered: the signature stored for {shown} cannot be checked: {what}."
