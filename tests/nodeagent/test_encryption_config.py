"""node.toml [encryption]: the organisation's private key, inline, from a file or from the environment."""

from pathlib import Path

import pytest

from vantage_client import crypto

from nodeagent import checks, config
from nodeagent.config import ConfigError

KEY = crypto.generate_private_key(2048)
PEM = crypto.private_key_pem(KEY).decode()
BASE = 'task_folder = "tasks"\n[server]\nurl = "https://vantage.example.org"\napi_key = "vnk_abc"\n'


def _load(tmp_path: Path, encryption: str, environ: dict | None = None):
    path = tmp_path / "node.toml"
    path.write_text(BASE + encryption)
    return config.load(path, environ=environ or {})


def test_no_encryption_table_means_no_key(tmp_path):
    assert _load(tmp_path, "").private_key is None


def test_a_key_file_relative_to_the_config(tmp_path):
    crypto.write_private_key(tmp_path / "org.pem", KEY)
    loaded = _load(tmp_path, '[encryption]\nprivate_key_file = "org.pem"\n')
    assert crypto.fingerprint(loaded.private_key) == crypto.fingerprint(KEY)
    assert "PRIVATE" not in repr(loaded)


def test_an_inline_key_and_a_key_from_the_environment(tmp_path):
    inline = _load(tmp_path, f'[encryption]\nprivate_key = """{PEM}"""\n')
    from_env = _load(tmp_path, '[encryption]\nprivate_key_env = "ORG_KEY"\n', environ={"ORG_KEY": PEM})
    assert crypto.fingerprint(inline.private_key) == crypto.fingerprint(from_env.private_key) == crypto.fingerprint(KEY)


@pytest.mark.parametrize("table, environ, message", [
    ('private_key_file = "missing.pem"', {}, "encryption.private_key_file: cannot read {dir}/missing.pem: No such file or directory"),
    ('private_key = "not a key"', {}, "encryption.private_key: not a PEM private key, or the password is wrong"),
    ('private_key_env = "ORG_KEY"', {}, "encryption.private_key_env: environment variable ORG_KEY is not set"),
    ('private_key = "x"\nprivate_key_env = "ORG_KEY"', {},
     "encryption.private_key: set exactly one of private_key, private_key_file, private_key_env "
     "(found private_key, private_key_env)"),
    ('private_key_fil = "org.pem"', {}, "encryption.private_key_fil: unknown key"),
])
def test_a_bad_key_setting_is_one_line_naming_the_key(tmp_path, table, environ, message):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f"[encryption]\n{table}\n", environ)
    assert str(caught.value) == f"{tmp_path / 'node.toml'}: {message.format(dir=tmp_path)}"


def _public_pem(key) -> str:
    return crypto.public_key_pem(key)


def test_check_names_the_key_by_fingerprint_when_the_server_was_not_reached(tmp_path):
    crypto.write_private_key(tmp_path / "org.pem", KEY)
    loaded = _load(tmp_path, '[encryption]\nprivate_key_file = "org.pem"\n')
    finding = checks._check_encryption(loaded, None)
    assert (finding.level, finding.topic) == (checks.OK, "encryption")
    assert finding.message == (f"RSA 2048-bit private key, public key fingerprint {crypto.fingerprint(KEY).hex()} "
                               "(not compared: the server was not reached)")


def test_check_accepts_the_key_matching_the_organisations_published_one(tmp_path):
    crypto.write_private_key(tmp_path / "org.pem", KEY)
    loaded = _load(tmp_path, '[encryption]\nprivate_key_file = "org.pem"\n')
    finding = checks._check_encryption(loaded, _public_pem(KEY))
    assert finding.level == checks.OK
    assert finding.message.endswith("the organisation's published key")


def test_check_refuses_a_private_key_that_does_not_match_the_published_key(tmp_path):
    # Issue 13.13: "ok encryption" was said for any valid key.
    crypto.write_private_key(tmp_path / "org.pem", KEY)
    loaded = _load(tmp_path, '[encryption]\nprivate_key_file = "org.pem"\n')
    other = crypto.generate_private_key(2048)
    finding = checks._check_encryption(loaded, _public_pem(other))
    assert finding.level == checks.FAIL
    assert finding.message == (
        f"the private key (fingerprint {crypto.fingerprint(KEY).hex()}) does not match the organisation's "
        f"published public key (fingerprint {crypto.fingerprint(other).hex()})")


@pytest.mark.parametrize("published, has_key, level, words", [
    ("", True, "warn", "has published no public key"),
    ("-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n", True, "FAIL", "cannot be read"),
    ("PUBLISHED", False, "warn", "has no private key"),
    ("", False, "ok", "no private key"),
])
def test_check_reports_missing_or_unreadable_keys(tmp_path, published, has_key, level, words):
    crypto.write_private_key(tmp_path / "org.pem", KEY)
    loaded = _load(tmp_path, '[encryption]\nprivate_key_file = "org.pem"\n' if has_key else "")
    finding = checks._check_encryption(loaded, _public_pem(KEY) if published == "PUBLISHED" else published)
    assert finding.level == level and words in finding.message


def test_the_node_reports_its_public_key_fingerprint_never_the_key(tmp_path):
    crypto.write_private_key(tmp_path / "org.pem", KEY)
    summary = _load(tmp_path, '[encryption]\nprivate_key_file = "org.pem"\n').summary()
    assert summary["encryption"] == {"public_key_fingerprint": crypto.fingerprint(KEY).hex()}
    assert "PRIVATE" not in repr(summary) and "org.pem" not in repr(summary)
    assert _load(tmp_path, "").summary()["encryption"] is None
