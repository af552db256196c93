"""End-to-end encryption for encrypted collaborations: the one envelope format.

The researcher's client, the node agent and the server's input check all use this
module (the server and the node import it as the package `vantage_client.crypto`:
requirements.txt installs this distribution), so there is exactly one definition of
the bytes on the wire.

Each organisation holds an RSA key pair (at least 2048 bits; `generate_private_key`
makes 3072) and publishes the public key on its Organization record. A message is
sealed for one organisation: a fresh AES-256-GCM key encrypts the message, and
RSA-OAEP (MGF1 and SHA-256) wraps that key for the recipient's public key.

Envelope, version 1 (all integers big-endian):

    offset    size  field
    0         4     magic b"VNTG"
    4         1     version, 1
    5         1     scheme, 1 = RSA-OAEP-SHA256 key wrap + AES-256-GCM
    6         32    recipient: SHA-256 of the recipient public key's DER SubjectPublicKeyInfo
    38        2     n, the length of the wrapped key
    40        n     the wrapped 32-byte AES key
    40+n      12    GCM nonce
    52+n      ...   ciphertext
    end-16    16    GCM tag

The whole header (bytes 0 to 52+n) is the GCM associated data: changing any byte of
it, of the ciphertext or of the tag makes decryption fail. The recipient field lets
the server check that an input is sealed for the organisation it is addressed to
without being able to read it, and lets a node tell "sealed for another key" apart
from "corrupt".
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"VNTG"
VERSION = 1
SCHEME_RSA_OAEP_AES_GCM = 1
FINGERPRINT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
AES_KEY_BYTES = 32
MIN_RSA_BITS = 2048
DEFAULT_RSA_BITS = 3072
_FIXED = struct.Struct(">4sBB32sH")  # magic, version, scheme, recipient, wrapped key length
CHUNK = 1024 * 1024

_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class KeyFormatError(ValueError):
    """A key that cannot be used: not PEM, not RSA, too short, wrong password."""


class EnvelopeError(ValueError):
    """Bytes that are not an envelope, are sealed for another key, or were altered."""


# ------------------------------------------------------------------ keys

def generate_private_key(bits: int = DEFAULT_RSA_BITS) -> rsa.RSAPrivateKey:
    if bits < MIN_RSA_BITS:
        raise KeyFormatError(f"an RSA key needs at least {MIN_RSA_BITS} bits, not {bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_key_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _check_rsa(key, what: str):
    if not isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        raise KeyFormatError(f"the {what} is not an RSA key (Vantage envelopes use RSA-OAEP)")
    if key.key_size < MIN_RSA_BITS:
        raise KeyFormatError(f"the {what} has {key.key_size} bits; at least {MIN_RSA_BITS} are needed")
    return key


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """A PEM public key ("-----BEGIN PUBLIC KEY-----"), checked to be RSA of a usable size."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data.strip())
    except (ValueError, TypeError):
        raise KeyFormatError("not a PEM public key (expected a -----BEGIN PUBLIC KEY----- block)") from None
    except Exception as exc:  # the backend refuses some malformed encodings with its own errors
        raise KeyFormatError(f"not a usable PEM public key ({type(exc).__name__})") from None
    return _check_rsa(key, "public key")


def load_private_key(pem: str | bytes, password: bytes | None = None) -> rsa.RSAPrivateKey:
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data.strip(), password=password)
    except TypeError:
        raise KeyFormatError("the private key is protected by a password: give it" if password is None
                             else "the private key is not protected by a password: give none") from None
    except ValueError:
        raise KeyFormatError("not a PEM private key, or the password is wrong") from None
    return _check_rsa(key, "private key")


def read_private_key(path: str | os.PathLike, password: bytes | None = None) -> rsa.RSAPrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"cannot read the private key {path}: {exc.strerror}") from None
    try:
        return load_private_key(data, password)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: {exc}") from None


def write_private_key(path: str | os.PathLike, key: rsa.RSAPrivateKey, password: bytes | None = None) -> None:
    """Write a private key readable by its owner only; an existing file is never replaced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_pem(key, password))


def fingerprint(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> bytes:
    """SHA-256 of the public key's DER SubjectPublicKeyInfo: what an envelope names as recipient."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


# ------------------------------------------------------------------ envelopes

def _header(public_key: rsa.RSAPublicKey, aes_key: bytes, nonce: bytes) -> bytes:
    wrapped = public_key.encrypt(aes_key, _OAEP)
    return _FIXED.pack(MAGIC, VERSION, SCHEME_RSA_OAEP_AES_GCM, fingerprint(public_key), len(wrapped)) + wrapped + nonce


def _parse_header(head: bytes) -> tuple[bytes, bytes, bytes, int]:
    """(recipient, wrapped key, nonce, header length) from the first bytes of an envelope."""
    if len(head) < _FIXED.size or head[:4] != MAGIC:
        raise EnvelopeError("not a Vantage envelope (no VNTG header)")
    magic, version, scheme, recipient, wrapped_len = _FIXED.unpack_from(head)
    if version != VERSION:
        raise EnvelopeError(f"envelope version {version} is not supported (this software reads version {VERSION})")
    if scheme != SCHEME_RSA_OAEP_AES_GCM:
        raise EnvelopeError(f"envelope scheme {scheme} is unknown")
    end = _FIXED.size + wrapped_len + NONCE_BYTES
    if len(head) < end:
        raise EnvelopeError("the envelope is truncated")
    wrapped = head[_FIXED.size:_FIXED.size + wrapped_len]
    return recipient, wrapped, head[end - NONCE_BYTES:end], end


def recipient(envelope: bytes) -> bytes:
    """The recipient fingerprint an envelope names; EnvelopeError if it is not one."""
    found, _wrapped, _nonce, header_len = _parse_header(envelope)
    if len(envelope) < header_len + TAG_BYTES:
        raise EnvelopeError("the envelope is truncated")
    return found


def is_envelope(data: bytes) -> bool:
    return data[:4] == MAGIC


def encrypt(plaintext: bytes, public_key: rsa.RSAPublicKey | str | bytes) -> bytes:
    """Seal `plaintext` for the holder of the private key belonging to `public_key`."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        public_key = load_public_key(public_key)
    aes_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(NONCE_BYTES)
    header = _header(_check_rsa(public_key, "public key"), aes_key, nonce)
    return header + AESGCM(aes_key).encrypt(nonce, plaintext, header)


def _unwrap(private_key: rsa.RSAPrivateKey, found: bytes, wrapped: bytes) -> bytes:
    mine = fingerprint(private_key)
    if found != mine:
        raise EnvelopeError(f"sealed for another key (recipient {found.hex()[:16]}…, "
                            f"this key is {mine.hex()[:16]}…)")
    try:
        aes_key = private_key.decrypt(wrapped, _OAEP)
    except ValueError:
        raise EnvelopeError("the wrapped key does not decrypt: the envelope was altered") from None
    if len(aes_key) != AES_KEY_BYTES:
        raise EnvelopeError("the wrapped key has the wrong length: the envelope was altered")
    return aes_key


def decrypt(envelope: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Open an envelope sealed for `private_key`; EnvelopeError if anything is wrong."""
    found, wrapped, nonce, header_len = _parse_header(envelope)
    if len(envelope) < header_len + TAG_BYTES:
        raise EnvelopeError("the envelope is truncated")
    aes_key = _unwrap(private_key, found, wrapped)
    try:
        return AESGCM(aes_key).decrypt(nonce, envelope[header_len:], envelope[:header_len])
    except InvalidTag:
        raise EnvelopeError("the envelope fails its integrity check: altered or corrupt") from None


# Files are sealed and opened in chunks, so a large algorithm output never has to sit
# in the node's memory. The format is the same as in memory.

def encrypt_file(source: str | os.PathLike, target: str | os.PathLike, public_key: rsa.RSAPublicKey) -> None:
    aes_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(NONCE_BYTES)
    header = _header(_check_rsa(public_key, "public key"), aes_key, nonce)
    encryptor = Cipher(algorithms.AES(aes_key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(header)
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(header)
        while block := src.read(CHUNK):
            dst.write(encryptor.update(block))
        dst.write(encryptor.finalize())
        dst.write(encryptor.tag)


def decrypt_file(source: str | os.PathLike, target: str | os.PathLike, private_key: rsa.RSAPrivateKey) -> None:
    """Open an envelope file into `target`; on any error `target` is removed, so no
    unauthenticated plaintext is left behind."""
    size = os.path.getsize(source)
    try:
        with open(source, "rb") as src:
            head = src.read(_FIXED.size)
            if len(head) == _FIXED.size and head[:4] == MAGIC:
                head += src.read(_FIXED.unpack_from(head)[4] + NONCE_BYTES)
            found, wrapped, nonce, header_len = _parse_header(head)
            if size < header_len + TAG_BYTES:
                raise EnvelopeError("the envelope is truncated")
            aes_key = _unwrap(private_key, found, wrapped)
            src.seek(size - TAG_BYTES)
            tag = src.read(TAG_BYTES)
            src.seek(header_len)
            decryptor = Cipher(algorithms.AES(aes_key), modes.GCM(nonce, tag)).decryptor()
            decryptor.authenticate_additional_data(head[:header_len])
            remaining = size - TAG_BYTES - header_len
            with open(target, "wb") as dst:
                while remaining > 0:
                    block = src.read(min(CHUNK, remaining))
                    remaining -= len(block)
                    dst.write(decryptor.update(block))
                try:
                    dst.write(decryptor.finalize())
                except InvalidTag:
                    raise EnvelopeError("the envelope fails its integrity check: altered or corrupt") from None
    except BaseException:
        Path(target).unlink(missing_ok=True)
        raise
