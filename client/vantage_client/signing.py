"""Image signatures in cosign's key-based format, without installing cosign.

Layout (sigstore's cosign "Signature Specification", key-based signing):

- the payload is a "simple signing" JSON document naming the signed manifest digest
  and the repository it was signed for:

      {"critical": {"identity": {"docker-reference": "<registry>/<repository>"},
                    "image": {"docker-manifest-digest": "sha256:<hex>"},
                    "type": "cosign container image signature"},
       "optional": {...} or null}

- the signature is ECDSA P-256 (ASN.1 DER) over the SHA-256 of the payload bytes,
  stored base64-encoded in the layer annotation `dev.cosignproject.cosign/signature`;
- the payload is a layer blob of media type `application/vnd.dev.cosign.simplesigning.v1+json`
  in an OCI image manifest with an (empty JSON object) config blob;
- that manifest is tagged `sha256-<hex>.sig` in the image's own repository. Several
  signers of the same digest each add a layer to that one manifest.

Keys: private keys are PKCS#8 PEM (encrypted with a password when one is given);
`cosign import-key-pair` reads that format, and public keys are PKIX PEM, the same
file `cosign verify --key` reads. (cosign's own "ENCRYPTED SIGSTORE PRIVATE KEY"
format needs scrypt + NaCl secretbox; NaCl is not a dependency here.)

This module is used by `vantage-client sign` and, for its registry client, by the
node agent (nodeagent/signatures.py verifies; it never signs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
PAYLOAD_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPES = (
    OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
TIMEOUT = (5, 30)
MAX_MANIFEST = 4 * 1024 * 1024  # a signature manifest of hundreds of signers is still far smaller
MAX_PAYLOAD = 64 * 1024


class SigningError(Exception):
    """Something about a key, a registry or a signature, in one readable line."""


# ------------------------------------------------------------------ keys

def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key_pair(path: str | os.PathLike, key: ec.EllipticCurvePrivateKey, password: bytes | None) -> Path:
    """The private key at `path` (0600, never overwritten), its public key at `<path>.pub`."""
    private = Path(path)
    public = private.with_name(private.name + ".pub") if private.suffix != ".key" else private.with_suffix(".pub")
    for target in (private, public):
        if target.exists():
            raise SigningError(f"{target} exists already: a key is never overwritten")
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        public.write_bytes(public_key_pem(key.public_key()))
    except OSError as exc:
        raise SigningError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return public


def read_private_key(path: str | os.PathLike, password: bytes | None) -> ec.EllipticCurvePrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read {path}: {exc.strerror}") from None
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data or b"ENCRYPTED COSIGN PRIVATE KEY" in data:
        raise SigningError(f"{path} is in cosign's own encrypted format: export it as PKCS#8 PEM "
                           "(e.g. cosign import-key-pair reads PKCS#8; vantage-client signing-keygen writes it)")
    try:
        key = serialization.load_pem_private_key(data, password=password or None)
    except TypeError:
        raise SigningError(f"{path} is encrypted: give its password (VANTAGE_SIGNING_PASSWORD)" if not password
                           else f"{path} is not encrypted, but a password was given") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(f"{path} is not a PEM private key, or the password is wrong") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningError(f"{path} is not an ECDSA P-256 key (cosign's key type)")
    return key


def load_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """A PKIX PEM public key (cosign.pub's format) of cosign's key type, ECDSA P-256."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError("not a PEM public key (cosign.pub format)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningError("not an ECDSA P-256 public key (cosign's key type)")
    return key


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, as hex: what operators compare by eye."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


# ------------------------------------------------------------------ references and payloads

@dataclass(frozen=True)
class Repository:
    host: str  # registry host[:port]
    path: str  # repository path inside it

    @classmethod
    def parse(cls, reference: str) -> tuple[Repository, str]:
        """`host/path[:tag][@sha256:...]` → (repository, tag or digest or 'latest')."""
        text = reference.strip()
        pinned = ""
        if "@" in text:
            text, pinned = text.split("@", 1)
            if not DIGEST_RE.match(pinned):
                raise SigningError(f"{reference}: the digest must read sha256:<64 hex digits>")
        tag = ""
        if ":" in text.rsplit("/", 1)[-1]:
            text, tag = text.rsplit(":", 1)
        host, _, path = text.partition("/")
        if not path or not ("." in host or ":" in host or host == "localhost"):
            raise SigningError(f"{reference}: name the registry, as in 127.0.0.1:5000/team/algorithm")
        return cls(host, path), pinned or tag or "latest"

    @property
    def reference(self) -> str:
        return f"{self.host}/{self.path}"

    def signature_tag(self, digest: str) -> str:
        return digest.replace(":", "-") + ".sig"


def payload_for(repository: Repository, digest: str, annotations: dict | None = None) -> bytes:
    """The simple-signing payload: compact JSON, as cosign writes it."""
    document = {
        "critical": {
            "identity": {"docker-reference": repository.reference},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": annotations or None,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def sign_payload(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode("ascii")


# ------------------------------------------------------------------ registry

def _scheme(host: str) -> str:
    """Plain HTTP only on the loopback, as Docker itself allows without configuration."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return "http" if name in ("localhost", "[::1]") or name.startswith("127.") else "https"


class Registry:
    """The registry HTTP API (distribution spec v2), with Basic or Bearer-token auth."""

    def __init__(self, host: str, username: str | None = None, password: str | None = None,
                 session: requests.Session | None = None):
        self.host = host
        self.base = f"{_scheme(host)}://{host}/v2"
        self.credentials = (username, password) if username else None
        self.session = session or requests.Session()
        self._auth: dict[str, str] = {}  # scope -> Authorization header value

    def _request(self, method: str, url: str, *, scope: str, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        for attempt in range(2):
            if scope in self._auth:
                headers["Authorization"] = self._auth[scope]
            try:
                response = self.session.request(method, url, headers=headers, timeout=TIMEOUT,
                                                allow_redirects=True, **kwargs)
            except requests.RequestException as exc:
                raise SigningError(f"registry {self.host} cannot be reached: {type(exc).__name__}") from None
            if response.status_code != 401 or attempt:
                return response
            self._authenticate(response.headers.get("Www-Authenticate", ""), scope)
        return response

    def _authenticate(self, challenge: str, scope: str) -> None:
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if not self.credentials:
                raise SigningError(f"registry {self.host} asks for a login, and no credentials are configured")
            user, password = self.credentials
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._auth[scope] = f"Basic {token}"
            return
        if kind.lower() != "bearer":
            raise SigningError(f"registry {self.host} asks for an unknown kind of login: {kind or 'none'}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            raise SigningError(f"registry {self.host} sent a token challenge without a realm")
        query = {"service": fields.get("service", ""), "scope": scope}
        try:
            answer = self.session.get(fields["realm"], params=query, auth=self.credentials, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise SigningError(f"the token service of {self.host} cannot be reached: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise SigningError(f"registry {self.host} refused the credentials (token service: HTTP {answer.status_code})")
        body = answer.json() if answer.content else {}
        token = body.get("token") or body.get("access_token")
        if not token:
            raise SigningError(f"the token service of {self.host} answered without a token")
        self._auth[scope] = f"Bearer {token}"

    def _check(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code == 401:
            raise SigningError(f"registry {self.host} refused the credentials for {what}")
        if response.status_code >= 400:
            raise SigningError(f"registry {self.host} answered HTTP {response.status_code} for {what}")
        return response

    def manifest(self, path: str, reference: str, *, push: bool = False) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest) of a manifest, or None when there is none."""
        scope = f"repository:{path}:pull,push" if push else f"repository:{path}:pull"
        response = self._request("GET", f"{self.base}/{path}/manifests/{reference}", scope=scope,
                                 headers={"Accept": ", ".join(MANIFEST_TYPES)}, stream=True)
        if response.status_code == 404:
            return None
        self._check(response, f"{path}:{reference}")
        data = _read_capped(response, MAX_MANIFEST, f"the manifest of {path}:{reference}")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        # A digest reference must name exactly these bytes: the registry is not trusted for it.
        if DIGEST_RE.match(reference) and reference != digest:
            raise SigningError(f"registry {self.host} sent a manifest that does not match {reference}")
        return data, response.headers.get("Content-Type", "").split(";")[0].strip(), digest

    def blob(self, path: str, digest: str, limit: int) -> bytes:
        response = self._request("GET", f"{self.base}/{path}/blobs/{digest}", scope=f"repository:{path}:pull",
                                 stream=True)
        self._check(response, f"blob {digest} of {path}")
        data = _read_capped(response, limit, f"blob {digest} of {path}")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise SigningError(f"registry {self.host} sent a blob that does not match its digest {digest}")
        return data

    def put_blob(self, path: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        scope = f"repository:{path}:pull,push"
        head = self._request("HEAD", f"{self.base}/{path}/blobs/{digest}", scope=scope)
        if head.status_code == 200:
            return digest
        start = self._check(self._request("POST", f"{self.base}/{path}/blobs/uploads/", scope=scope),
                            f"an upload to {path}")
        location = start.headers.get("Location", "")
        if not location:
            raise SigningError(f"registry {self.host} started an upload without a Location")
        if location.startswith("/"):
            location = f"{_scheme(self.host)}://{self.host}{location}"
        joiner = "&" if "?" in location else "?"
        self._check(self._request("PUT", f"{location}{joiner}digest={digest}", scope=scope, data=data,
                                  headers={"Content-Type": "application/octet-stream"}), f"a blob of {path}")
        return digest

    def put_manifest(self, path: str, reference: str, data: bytes, media_type: str) -> str:
        response = self._request("PUT", f"{self.base}/{path}/manifests/{reference}",
                                 scope=f"repository:{path}:pull,push", data=data,
                                 headers={"Content-Type": media_type})
        self._check(response, f"the manifest {path}:{reference}")
        return "sha256:" + hashlib.sha256(data).hexdigest()


def _read_capped(response: requests.Response, limit: int, what: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        response.close()
        raise SigningError(f"{what} is larger than {limit} bytes")
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            response.close()
            raise SigningError(f"{what} is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------ sign and push

@dataclass(frozen=True)
class Signed:
    reference: str  # <repo>:sha256-<hex>.sig
    image_digest: str
    manifest_digest: str  # the signature manifest's digest after this signature was added
    payload_digest: str  # the signed payload's blob digest
    fingerprint: str


def sign_image(registry: Registry, image: str, key: ec.EllipticCurvePrivateKey,
               annotations: dict | None = None) -> Signed:
    """Sign the manifest digest of `image` and add the signature to `<repo>:sha256-<hex>.sig`.

    A tag is resolved to its digest first; what is signed is always the digest."""
    repository, reference = Repository.parse(image)
    if registry.host != repository.host:
        raise SigningError(f"{image} is not on registry {registry.host}")
    found = registry.manifest(repository.path, reference, push=True)
    if found is None:
        raise SigningError(f"{image} is not in the registry")
    digest = found[2]
    payload = payload_for(repository, digest, annotations)
    signature = sign_payload(key, payload)
    payload_digest = registry.put_blob(repository.path, payload)
    config = json.dumps({}).encode()
    config_digest = registry.put_blob(repository.path, config)
    tag = repository.signature_tag(digest)
    existing = registry.manifest(repository.path, tag, push=True)
    layers = []
    if existing is not None:
        try:
            layers = [layer for layer in json.loads(existing[0]).get("layers", [])
                      if isinstance(layer, dict) and not _own_signature(layer, payload_digest, payload, key)]
        except (ValueError, AttributeError):
            layers = []  # an unreadable signature manifest is replaced, not extended
    layers.append({"mediaType": PAYLOAD_MEDIA_TYPE, "size": len(payload), "digest": payload_digest,
                   "annotations": {SIGNATURE_ANNOTATION: signature}})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": layers,
    }
    data = json.dumps(manifest, separators=(",", ":")).encode()
    manifest_digest = registry.put_manifest(repository.path, tag, data, OCI_MANIFEST)
    return Signed(reference=f"{repository.reference}:{tag}", image_digest=digest, manifest_digest=manifest_digest,
                  payload_digest=payload_digest, fingerprint=fingerprint(key.public_key()))


def _own_signature(layer: dict, payload_digest: str, payload: bytes, key: ec.EllipticCurvePrivateKey) -> bool:
    """Whether a layer is this key's earlier signature of the same payload (signing twice
    replaces it); other signers of the same digest share the payload and keep their layer."""
    if layer.get("digest") != payload_digest:
        return False
    try:
        signature = base64.b64decode((layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, ""), validate=True)
        key.public_key().verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature):
        return False
    return True


# ------------------------------------------------------------------ verify
#
# One verifier for everyone who checks a signature: the node before it pulls
# (nodeagent/signatures.py, against the keys it trusts) and the server when a reviewer
# approves a catalogue entry (tasks/signature_check.py, against the reviewer's registered
# keys). Each turns the findings into its own sentences.

MAX_SIGNATURES = 32  # layers of one .sig manifest looked at; more is a registry flooding the verifier

# What is wrong with one signature layer (LayerCheck.problem); "" when nothing is.
NOT_BASE64 = "not-base64"  # its signature annotation is not base64
NO_PAYLOAD = "no-payload"  # it names no payload blob
UNREADABLE = "unreadable"  # the payload could not be had from the registry (or not its digest's bytes)
NO_KEY = "no-key"  # none of the keys verifies the signature over the payload
NOT_SIMPLE_SIGNING = "not-simple-signing"  # a key's valid signature covers a payload that is no cosign document
WRONG_TYPE = "wrong-type"  # ... of another type than a container image signature
OTHER_DIGEST = "other-digest"  # ... naming another image digest
OTHER_REPOSITORY = "other-repository"  # ... naming another repository


class NotSigned(SigningError):
    """No signature artefact (`<repo>:sha256-<hex>.sig`) for the digest."""

    def __init__(self, tag: str):
        self.tag = tag
        super().__init__(f"no {tag} in the registry")


class NotSignatureManifest(SigningError):
    """The artefact under the signature tag is not a cosign signature manifest."""


@dataclass(frozen=True)
class LayerCheck:
    """One signature of a digest, checked against candidate keys."""

    key: object | None  # the candidate whose key verifies the signature over the payload
    problem: str  # "" when `key` signed a cosign payload naming exactly this digest and repository
    payload_digest: str = ""
    payload: bytes = b""
    signature: bytes = b""
    claimed_digest: str = ""
    claimed_reference: str = ""
    claimed_type: str = ""
    detail: str = ""  # the registry's words for UNREADABLE


def signature_valid(key: ec.EllipticCurvePublicKey, signature: bytes, payload: bytes) -> bool:
    """ECDSA P-256 over SHA-256 of the payload, as cosign signs (an ASN.1 DER signature)."""
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def signature_layers(registry: Registry, repository: Repository, digest: str) -> list[dict]:
    """The cosign signature layers stored for `digest` (at most MAX_SIGNATURES); raises
    NotSigned, NotSignatureManifest, or SigningError when the registry cannot say."""
    tag = repository.signature_tag(digest)
    found = registry.manifest(repository.path, tag)
    if found is None:
        raise NotSigned(tag)
    try:
        layers = json.loads(found[0]).get("layers")
    except (ValueError, AttributeError):
        layers = None
    if not isinstance(layers, list):
        raise NotSignatureManifest(f"{repository.reference}:{tag} is not a signature manifest")
    signatures = [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == PAYLOAD_MEDIA_TYPE]
    if not signatures:
        raise NotSignatureManifest(f"{repository.reference}:{tag} holds no cosign signature")
    return signatures[:MAX_SIGNATURES]


def check_layer(registry: Registry, repository: Repository, digest: str, layer: dict, keys,
                key_of=lambda candidate: candidate) -> LayerCheck:
    """Which of `keys` (key_of(candidate) is its public key) signed this layer's payload,
    and whether that payload names exactly `digest` in `repository`."""
    encoded = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (ValueError, TypeError):
        return LayerCheck(None, NOT_BASE64)
    payload_digest = layer.get("digest")
    if not isinstance(payload_digest, str) or not DIGEST_RE.match(payload_digest):
        return LayerCheck(None, NO_PAYLOAD, signature=signature)
    try:
        payload = registry.blob(repository.path, payload_digest, MAX_PAYLOAD)
    except SigningError as exc:
        return LayerCheck(None, UNREADABLE, payload_digest=payload_digest, signature=signature, detail=str(exc))
    found = dict(payload_digest=payload_digest, payload=payload, signature=signature)
    signer = next((candidate for candidate in keys if signature_valid(key_of(candidate), signature, payload)), None)
    if signer is None:
        return LayerCheck(None, NO_KEY, **found)
    try:
        critical = json.loads(payload)["critical"]
        claimed_digest = critical["image"]["docker-manifest-digest"]
        claimed_reference = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        return LayerCheck(signer, NOT_SIMPLE_SIGNING, **found)
    claimed = dict(claimed_digest=str(claimed_digest), claimed_reference=str(claimed_reference),
                   claimed_type=str(kind))
    if kind != PAYLOAD_TYPE:
        return LayerCheck(signer, WRONG_TYPE, **found, **claimed)
    if claimed_digest != digest:
        return LayerCheck(signer, OTHER_DIGEST, **found, **claimed)
    if claimed_reference != repository.reference:
        return LayerCheck(signer, OTHER_REPOSITORY, **found, **claimed)
    return LayerCheck(signer, "", **found, **claimed)
