"""The envelope format (client/vantage_client/crypto.py): round trips, and every way it must fail."""

import struct

import pytest

from tests.client.conftest import CLIENT_DIR  # noqa: F401  (puts the client on the path)

from vantage_client import crypto  # noqa: E402

KEY = crypto.generate_private_key(2048)
OTHER = crypto.generate_private_key(2048)
MESSAGE = b'{"method": "partial", "args": [], "kwargs": {"column": "age"}}'


def test_round_trip_and_a_fresh_key_per_message():
    first, second = crypto.encrypt(MESSAGE, KEY.public_key()), crypto.encrypt(MESSAGE, crypto.public_key_pem(KEY))
    assert first != second
    assert crypto.decrypt(first, KEY) == crypto.decrypt(second, KEY) == MESSAGE
    assert MESSAGE not in first
    assert crypto.recipient(first) == crypto.fingerprint(KEY) == crypto.fingerprint(KEY.public_key())


def test_the_header_is_as_documented():
    envelope = crypto.encrypt(b"", KEY.public_key())
    magic, version, scheme, recipient, wrapped_len = struct.unpack_from(">4sBB32sH", envelope)
    assert (magic, version, scheme, recipient, wrapped_len) == (b"VNTG", 1, 1, crypto.fingerprint(KEY), 256)
    assert len(envelope) == 40 + 256 + 12 + 0 + 16


@pytest.mark.parametrize("position", [0, 5, 10, 40, 300, 310, -20, -1])
def test_changing_any_byte_is_an_error(position):
    envelope = bytearray(crypto.encrypt(MESSAGE, KEY.public_key()))
    envelope[position] ^= 0x01
    with pytest.raises(crypto.EnvelopeError):
        crypto.decrypt(bytes(envelope), KEY)


def test_a_wrong_key_is_named_as_such():
    envelope = crypto.encrypt(MESSAGE, KEY.public_key())
    with pytest.raises(crypto.EnvelopeError, match="sealed for another key"):
        crypto.decrypt(envelope, OTHER)


def test_an_unknown_version_and_truncation_are_errors():
    envelope = crypto.encrypt(MESSAGE, KEY.public_key())
    with pytest.raises(crypto.EnvelopeError, match="version 2 is not supported"):
        crypto.decrypt(envelope[:4] + b"\x02" + envelope[5:], KEY)
    with pytest.raises(crypto.EnvelopeError, match="truncated"):
        crypto.decrypt(envelope[:100], KEY)
    with pytest.raises(crypto.EnvelopeError, match="not a Vantage envelope"):
        crypto.recipient(MESSAGE)


def test_files_are_sealed_and_opened_in_chunks_in_the_same_format(tmp_path, monkeypatch):
    monkeypatch.setattr(crypto, "CHUNK", 1000)  # several chunks and a partial last one
    plain, sealed, opened = tmp_path / "plain", tmp_path / "sealed", tmp_path / "opened"
    data = bytes(range(256)) * 17
    plain.write_bytes(data)
    crypto.encrypt_file(plain, sealed, KEY.public_key())
    assert crypto.decrypt(sealed.read_bytes(), KEY) == data
    crypto.decrypt_file(sealed, opened, KEY)
    assert opened.read_bytes() == data
    sealed.write_bytes(crypto.encrypt(data, KEY.public_key()))
    crypto.decrypt_file(sealed, opened, KEY)
    assert opened.read_bytes() == data


def test_a_tampered_file_leaves_no_plaintext_behind(tmp_path):
    sealed, opened = tmp_path / "sealed", tmp_path / "opened"
    envelope = bytearray(crypto.encrypt(MESSAGE, KEY.public_key()))
    envelope[-30] ^= 0x80
    sealed.write_bytes(bytes(envelope))
    with pytest.raises(crypto.EnvelopeError, match="integrity"):
        crypto.decrypt_file(sealed, opened, KEY)
    assert not opened.exists()


def test_keys_round_trip_with_and_without_a_password(tmp_path):
    assert crypto.fingerprint(crypto.load_private_key(crypto.private_key_pem(KEY))) == crypto.fingerprint(KEY)
    locked = crypto.private_key_pem(KEY, b"secret")
    assert crypto.fingerprint(crypto.load_private_key(locked, b"secret")) == crypto.fingerprint(KEY)
    with pytest.raises(crypto.KeyFormatError, match="protected by a password"):
        crypto.load_private_key(locked)
    with pytest.raises(crypto.KeyFormatError, match="not a PEM private key, or the password is wrong"):
        crypto.load_private_key(locked, b"wrong")
    with pytest.raises(crypto.KeyFormatError, match="at least 2048"):
        crypto.generate_private_key(1024)
