"""Docker engine, registry and test images for the node agent tests.

Real components: the tests run real containers from images they build and push to
the local registry that scripts/docker-env.sh starts. Without a Docker engine the
tests skip, except under CI=true, where a missing engine must fail the run loudly.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from nodeagent.job import AgentContext

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "algorithms" / "testimages"
BASE_IMAGE = os.environ.get("VANTAGE_BASE_IMAGE", "vantage/algorithm-base:bookworm-1")
REGISTRY = f"127.0.0.1:{os.environ.get('VANTAGE_REGISTRY_PORT', '5000')}"
REGISTRY_USER = "vantage"
STATE_DIR = Path(os.environ.get("VANTAGE_STATE_DIR") or Path.home() / ".cache" / "vantage")
# The vantage6 release bench/ compares against; its algorithm tools go into the v6 test images.
V6_TOOLS = "vantage6-algorithm-tools==4.15.2"
# vantage6-common 4.15.2 pins qrcode 7.3.1, published as a source archive only.
V6_SOURCE_ONLY = "qrcode==7.3.1"
V6_WHEELS = STATE_DIR / "wheels" / "v6-4.15.2"


@dataclass(frozen=True)
class Registry:
    host: str
    username: str
    password: str
    password_file: Path


def unavailable(reason: str):
    """Skip, or under CI fail: CI must never pass by skipping the container tests."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the node agent tests need it; run scripts/docker-env.sh up)",
                    pytrace=False)
    pytest.skip(f"{reason}; run scripts/docker-env.sh up")


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as exc:
        unavailable(f"no Docker engine: {exc}")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"the base image {BASE_IMAGE} is missing")
    return client


def registry() -> Registry:
    password_file = STATE_DIR / "registry-password"
    if not password_file.exists():
        unavailable(f"no registry password at {password_file}")
    return Registry(REGISTRY, REGISTRY_USER, password_file.read_text().strip(), password_file)


def content_hash(files: dict[str, Path], base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for name, path in sorted(files.items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def v6_wheels() -> list[Path]:
    """The wheels of vantage6's algorithm tools for the base image's Python 3.11, fetched
    from PyPI once into ~/.cache/vantage/wheels/v6-4.15.2 (the one source archive among
    their dependencies is built into a wheel here)."""
    complete = V6_WHEELS / ".complete"
    if not complete.exists():
        V6_WHEELS.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        for command in (
            [*pip, "wheel", "--no-deps", "-w", str(V6_WHEELS), V6_SOURCE_ONLY],
            [*pip, "download", "--only-binary=:all:", "--python-version", "3.11", "--platform",
             "manylinux2014_x86_64", "--find-links", str(V6_WHEELS), "-d", str(V6_WHEELS), V6_TOOLS],
        ):
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                unavailable(f"could not fetch the wheels of {V6_TOOLS}: {done.stderr.strip()[-300:]}")
        complete.touch()
    return sorted(V6_WHEELS.glob("*.whl"))


def _context(files: dict[str, Path]) -> io.BytesIO:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, path in sorted(files.items()):
            tar.add(str(path), arcname=name)
    archive.seek(0)
    return archive


def build_and_push(client: docker.DockerClient, reg: Registry, name: str, *, repository_path: str = "",
                   wheels: list[Path] = (), toolkit: bool = False) -> str:
    """Build algorithms/testimages/<name>, with `wheels` in its context's wheels/ folder
    and (`toolkit`) algorithms/vantage_algorithms/ beside its files (unless this content
    was built before), push it with credentials, and return
    `host/<repository_path or vantage-test/name>:<hash>@sha256:<digest>`."""
    folder = IMAGES_DIR / name
    files = {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files.update({f"wheels/{wheel.name}": wheel for wheel in wheels})
    if toolkit:
        package = REPO_ROOT / "algorithms" / "vantage_algorithms"
        files.update({f"vantage_algorithms/{p.name}": p for p in package.glob("*.py")})
    tag = content_hash(files, client.images.get(BASE_IMAGE).id)
    repository = f"{reg.host}/{repository_path or f'vantage-test/{name}'}"
    reference = f"{repository}:{tag}"
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        image, _ = client.images.build(fileobj=_context(files), custom_context=True, tag=reference, pull=False,
                                       rm=True, network_mode="none")
    auth = {"username": reg.username, "password": reg.password}
    for event in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
        if "error" in event:
            raise RuntimeError(f"push of {reference} failed: {event['error']}")
    image.reload()
    digests = [d for d in image.attrs.get("RepoDigests", []) if d.startswith(f"{repository}@")]
    if not digests:
        raise RuntimeError(f"{reference} was pushed but has no digest for {repository}")
    return f"{reference}@{digests[0].split('@', 1)[1]}"


def fresh_image(client: docker.DockerClient, reg: Registry, repository_path: str, *, dockerfile: str = "") -> str:
    """A new image no one has signed yet, pushed; returns `host/path:tag@sha256:...`.

    By default a one-file image (signature tests never run it); with `dockerfile` (e.g.
    `FROM <a test image in the same repository>`) a label unique to this call is added, so
    only a manifest and a config are new and the push takes well under a second."""
    nonce = os.urandom(8).hex()
    text = (dockerfile or "FROM scratch\nCOPY Dockerfile /image\n") + f"LABEL vantage.test.nonce={nonce}\n"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive.seek(0)
    repository = f"{reg.host}/{repository_path}"
    reference = f"{repository}:{nonce}"
    image, _ = client.images.build(fileobj=archive, custom_context=True, tag=reference, pull=False, rm=True,
                                   network_mode="none")
    auth = {"username": reg.username, "password": reg.password}
    for event in client.api.push(repository, tag=nonce, stream=True, decode=True, auth_config=auth):
        if "error" in event:
            raise RuntimeError(f"push of {reference} failed: {event['error']}")
    image.reload()
    digests = [d for d in image.attrs.get("RepoDigests", []) if d.startswith(f"{repository}@")]
    return f"{reference}@{digests[0].split('@', 1)[1]}"


def push_unsigned(reg, path: str) -> str:
    """A new, never signed image pushed through the registry's HTTP API in milliseconds (a
    config with a unique nonce and one empty layer; never run); `reg` is a
    vantage_client.signing.Registry. Returns `host/path:tag@sha256:...`."""
    import gzip
    import json

    from vantage_client import signing

    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    layer = gzip.compress(b"")  # an empty tar stream is enough for a registry
    manifest = {
        "schemaVersion": 2, "mediaType": signing.OCI_MANIFEST,
        "config": {"mediaType": signing.OCI_CONFIG, "size": len(config), "digest": reg.put_blob(path, config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": len(layer),
                    "digest": reg.put_blob(path, layer)}],
    }
    tag = os.urandom(6).hex()
    digest = reg.put_manifest(path, tag, json.dumps(manifest).encode(), signing.OCI_MANIFEST)
    return f"{reg.host}/{path}:{tag}@{digest}"


def registries_file(reg: Registry, folder: Path) -> Path:
    """A server's VANTAGE_REGISTRIES_FILE for the local registry, as ./vantage.sh up writes it:
    the server reads reviewers' image signatures there when they approve."""
    path = folder / "server-registries.toml"
    path.write_text(f'[registries."{reg.host}"]\nusername = "{reg.username}"\npassword_file = "{reg.password_file}"\n')
    return path


def remove_server_containers(client: docker.DockerClient, server_url: str) -> None:
    """Every container the node agents of a server made (runs, forwarders, round workers and
    standbys all carry its `vantage.server` label): a stopped agent leaves them for the next
    agent, and a test's server has none."""
    server_key = AgentContext.key_of(server_url)
    for container in client.api.containers(all=True, filters={"label": [f"vantage.server={server_key}"]}):
        try:
            client.api.remove_container(container["Id"], force=True)
        except docker.errors.APIError as exc:
            # A stopping agent may be removing it too: gone, or its removal under way.
            if exc.status_code not in (404, 409):
                raise


def remove_server_volumes(client: docker.DockerClient, server_url: str) -> None:
    """The data volumes node agents of a server keep (nodeagent/volumes.py: a node's cache of
    its database files, kept across agent restarts): a test's server is gone for good."""
    server_key = AgentContext.key_of(server_url)
    found = client.api.volumes(filters={"label": [f"vantage.server={server_key}"]}).get("Volumes") or []
    for volume in found:
        try:
            client.api.remove_volume(volume["Name"], force=True)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # gone, or still used by a container being removed
                raise


def remove_server_leftovers(client: docker.DockerClient, server_url: str) -> None:
    """What a test's or a benchmark's server leaves once its agents stopped: their containers,
    then their data volumes (which a container being removed may still hold)."""
    remove_server_containers(client, server_url)
    remove_server_volumes(client, server_url)


def alter_signed_payload(reg: Registry, repository: str, digest: str) -> None:
    """Change the signature payload of `digest` in `repository` after it was signed, keeping
    its image digest and reference: what a tampered signature artefact looks like."""
    tag = f"sha256-{digest.split(':')[1]}.sig"
    raw, media_type, _ = reg.manifest(repository, tag)
    manifest = json.loads(raw)
    payload = json.loads(reg.blob(repository, manifest["layers"][0]["digest"], 65536))
    payload["optional"] = {"approved": "yes"}
    altered = json.dumps(payload, separators=(",", ":")).encode()
    manifest["layers"][0].update(digest=reg.put_blob(repository, altered), size=len(altered))
    reg.put_manifest(repository, tag, json.dumps(manifest).encode(), media_type)
