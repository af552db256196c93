"""`vantage-client` (or `python -m vantage_client`): key pairs for encrypted collaborations.

    vantage-client keygen org-key.pem                      # new private key, 0600; prints the public key
    vantage-client publish-key org-key.pem --url URL --username alice [--organization 3]
    vantage-client public-key org-key.pem                  # print its public key (fingerprint on stderr)

Image signatures (cosign's key-based format, see signing.py), without cosign:

    vantage-client signing-keygen reviewer.key             # ECDSA P-256 key pair: reviewer.key (0600) + reviewer.pub
    vantage-client sign 127.0.0.1:5000/team/algo:1.0 --key reviewer.key --registry-username vantage \
        --registry-password-file registry-password         # signs the digest the tag names now

The password comes from VANTAGE_PASSWORD, or is asked for; a signing key's password from
VANTAGE_SIGNING_PASSWORD (empty: an unencrypted key). A failure prints one line and exits
with 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from . import crypto, signing
from .client import Client
from .errors import VantageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vantage-client", description="Vantage client: encryption and signing keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="create an organisation's private key (PEM, mode 0600)")
    keygen.add_argument("path")
    keygen.add_argument("--bits", type=int, default=crypto.DEFAULT_RSA_BITS)
    public = commands.add_parser("public-key", help="print the public key of a private key")
    public.add_argument("path")
    publish = commands.add_parser("publish-key", help="publish a private key's public key on an organisation")
    publish.add_argument("path")
    publish.add_argument("--url", required=True, help="the server, e.g. https://vantage.example.org")
    publish.add_argument("--username", required=True)
    publish.add_argument("--organization", type=int, help="organisation id (default: your own)")
    signing_keygen = commands.add_parser("signing-keygen", help="create an image signing key pair (cosign-compatible)")
    signing_keygen.add_argument("path", help="private key file; the public key goes next to it as .pub")
    sign = commands.add_parser("sign", help="sign an image's digest and push the signature to its registry")
    sign.add_argument("image", help="host/repository:tag or host/repository@sha256:...")
    sign.add_argument("--key", required=True, help="private key file (PKCS#8 PEM)")
    sign.add_argument("--registry-username", help="registry user (default: none, or VANTAGE_REGISTRY_USERNAME)")
    sign.add_argument("--registry-password-file", help="file holding the registry password "
                                                      "(default: VANTAGE_REGISTRY_PASSWORD)")
    sign.add_argument("-a", "--annotation", action="append", default=[], metavar="KEY=VALUE",
                      help="add to the signed payload's optional section (repeatable)")
    return parser


def _sign(args) -> None:
    annotations = {}
    for item in args.annotation:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise VantageError(f"annotation {item!r} must read KEY=VALUE")
        annotations[name] = value
    repository, _ = signing.Repository.parse(args.image)  # a bad reference is named before the key is opened
    key = signing.read_private_key(args.key, os.environ.get("VANTAGE_SIGNING_PASSWORD", "").encode() or None)
    username = args.registry_username or os.environ.get("VANTAGE_REGISTRY_USERNAME")
    password = os.environ.get("VANTAGE_REGISTRY_PASSWORD")
    if args.registry_password_file:
        try:
            password = open(args.registry_password_file).read().strip()
        except OSError as exc:
            raise VantageError(f"cannot read {args.registry_password_file}: {exc.strerror}") from None
    signed = signing.sign_image(signing.Registry(repository.host, username, password), args.image, key,
                                annotations or None)
    print(f"signed {repository.reference}@{signed.image_digest}")
    print(f"signature {signed.reference}")
    print(f"payload digest {signed.payload_digest}")
    print(f"key fingerprint {signed.fingerprint}")


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "keygen":
        key = crypto.generate_private_key(args.bits)
        try:
            crypto.write_private_key(args.path, key)
        except FileExistsError:
            raise VantageError(f"{args.path} exists already: a key is never overwritten") from None
        except OSError as exc:
            raise VantageError(f"cannot write {args.path}: {exc.strerror}") from None
        print(crypto.public_key_pem(key), end="")
        print(f"wrote {args.path} (fingerprint {crypto.fingerprint(key).hex()})", file=sys.stderr)
    elif args.command == "signing-keygen":
        password = os.environ.get("VANTAGE_SIGNING_PASSWORD", "").encode() or None
        key = signing.generate_key()
        public = signing.write_key_pair(args.path, key, password)
        print(signing.public_key_pem(key.public_key()).decode(), end="")
        print(f"wrote {args.path} and {public} (fingerprint {signing.fingerprint(key.public_key())})",
              file=sys.stderr)
    elif args.command == "sign":
        _sign(args)
    elif args.command == "public-key":
        key = crypto.read_private_key(args.path)
        print(crypto.public_key_pem(key), end="")
        print(f"fingerprint {crypto.fingerprint(key).hex()}", file=sys.stderr)
    else:
        password = os.environ.get("VANTAGE_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
        client = Client(args.url)
        client.login(args.username, password)
        key = crypto.read_private_key(args.path)
        organization = args.organization or client.whoami()["organization"]
        client.organizations.set_public_key(organization, crypto.public_key_pem(key))
        print(f"organisation {organization} now publishes key {crypto.fingerprint(key).hex()}")
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except (VantageError, crypto.KeyFormatError, signing.SigningError) as exc:
        print(f"vantage-client: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
