"""The demo's reviewer key: it signs the reference images, the reviewer's account holds
it (the server checks the reviewer's signature when they approve), and the demo nodes
trust it.

A hospital would trust its own reviewers' keys (docs/node.md, "What runs"); the demo
makes one key pair in its state folder on the first `./vantage.sh up` and keeps it.
"""

from pathlib import Path

from demo.network import DemoError
from vantage_client import VantageError, signing

KEY_NAME = "demo-signing.key"


def ensure_key(state_dir: Path):
    """(private key, public key file), made on the first call."""
    private = state_dir / KEY_NAME
    public = private.with_suffix(".pub")
    try:
        if not private.exists():
            signing.write_key_pair(private, signing.generate_key(), None)
        return signing.read_private_key(private, None), public
    except signing.SigningError as exc:
        raise DemoError(f"the demo's signing key: {exc}")


def sign_images(images: dict[str, str], key, *, registry_port: int, password_file: Path) -> dict[str, signing.Signed]:
    """Sign each image's digest (name -> repository@digest) and push the signatures."""
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        raise DemoError(f"cannot read the registry password {password_file}: {exc.strerror}")
    registry = signing.Registry(f"127.0.0.1:{registry_port}", "vantage", password)
    try:
        return {name: signing.sign_image(registry, reference, key) for name, reference in images.items()}
    except signing.SigningError as exc:
        raise DemoError(f"signing the algorithm images failed: {exc}")


def register_key(reviewer, public_key: Path) -> str:
    """The demo key on the reviewer's account (once; a later `up` finds it there): what
    the server checks their approvals' signatures against. `reviewer` is their Client."""
    try:
        key = signing.load_public_key(public_key.read_bytes())
    except (OSError, signing.SigningError) as exc:
        raise DemoError(f"the demo's public signing key {public_key}: {exc}")
    fingerprint = signing.fingerprint(key)
    try:
        if not any(found["fingerprint"] == fingerprint for found in reviewer.list("signing-keys/")):
            reviewer.post("signing-keys/", {"name": "demo signing key", "public_key": public_key.read_text()})
    except VantageError as exc:
        raise DemoError(f"registering the demo signing key on the reviewer's account failed: {exc}")
    return fingerprint
