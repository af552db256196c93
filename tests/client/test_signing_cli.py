"""`vantage-client signing-keygen` and `vantage-client sign` against the real registry."""

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from nodeagent.config import Policy, TrustedKey
from nodeagent.images import ImageRef
from nodeagent.signatures import verify
from tests.nodeagent import images
from vantage_client import signing

CLIENT = [sys.executable, "-m", "vantage_client"]


def cli(*args, env=None, cwd=None):
    import os
    from pathlib import Path
    environ = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "client"), **(env or {})}
    return subprocess.run([*CLIENT, *args], capture_output=True, text=True, env=environ, cwd=cwd, timeout=60)


def test_keygen_then_sign_makes_a_signature_the_node_accepts(tmp_path):
    registry = images.registry()
    reg = signing.Registry(registry.host, registry.username, registry.password)
    config = json.dumps({"os": "linux", "architecture": "amd64", "nonce": tmp_path.name}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": signing.OCI_MANIFEST, "layers": [],
                           "config": {"mediaType": signing.OCI_CONFIG, "size": len(config),
                                      "digest": reg.put_blob("vantage-test/cli", config)}}).encode()
    digest = reg.put_manifest("vantage-test/cli", "latest", manifest, signing.OCI_MANIFEST)
    made = cli("signing-keygen", str(tmp_path / "alice.key"), env={"VANTAGE_SIGNING_PASSWORD": "pw-alice"})
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("-----BEGIN PUBLIC KEY-----") and "fingerprint" in made.stderr
    assert (tmp_path / "alice.key").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "alice.key").read_bytes()

    signed = cli("sign", f"{registry.host}/vantage-test/cli:latest", "--key", str(tmp_path / "alice.key"),
                 "--registry-username", registry.username, "--registry-password-file", str(registry.password_file),
                 "-a", "ticket=DPO-42", env={"VANTAGE_SIGNING_PASSWORD": "pw-alice"})
    assert signed.returncode == 0, signed.stderr
    assert f"signed {registry.host}/vantage-test/cli@{digest}" in signed.stdout
    public = serialization.load_pem_public_key((tmp_path / "alice.pub").read_bytes())
    trusted = TrustedKey(name="alice.pub", path=tmp_path / "alice.pub", key=public,
                         fingerprint=signing.fingerprint(public))
    assert f"key fingerprint {trusted.fingerprint}" in signed.stdout
    policy = Policy(require_signature=True, trusted_keys=(trusted,))
    assert verify(policy, reg, ImageRef.parse(f"{registry.host}/vantage-test/cli@{digest}")).key == trusted


@pytest.mark.parametrize("args, env, message", [
    (["sign", "127.0.0.1:5000/x:1", "--key", "missing.key"], {}, "cannot read missing.key"),
    (["sign", "no-registry-named:1", "--key", "alice.key"], {}, "name the registry"),
    (["sign", "127.0.0.1:5000/x:1", "--key", "alice.key"], {}, "alice.key is encrypted: give its password"),
    (["signing-keygen", "alice.key"], {}, "exists already: a key is never overwritten"),
])
def test_cli_failures_are_one_line_and_exit_1(tmp_path, args, env, message):
    assert cli("signing-keygen", "alice.key", env={"VANTAGE_SIGNING_PASSWORD": "pw"}, cwd=tmp_path).returncode == 0
    done = cli(*args, env=env, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and message in lines[0], done.stderr
