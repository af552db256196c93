"""Docker engine, registry and test images for the node agent tests.

Real components: the tests run real containers from images they build and push to
the local registry that scripts/docker-env.sh starts. Without a Docker engine the
tests skip, except under CI=true, where a missing engine must fail the run loudly.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "algorithms" / "testimages"
BASE_IMAGE = os.environ.get("VANTAGE_BASE_IMAGE", "vantage/algorithm-base:bookworm-1")
REGISTRY = f"127.0.0.1:{os.environ.get('VANTAGE_REGISTRY_PORT', '5000')}"
REGISTRY_USER = "vantage"
STATE_DIR = Path(os.environ.get("VANTAGE_STATE_DIR") or Path.home() / ".cache" / "vantage")


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


def content_hash(folder: Path, base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_and_push(client: docker.DockerClient, reg: Registry, name: str) -> str:
    """Build algorithms/testimages/<name> (unless this content was built before), push
    it with credentials, and return `host/vantage-test/<name>:<hash>@sha256:<digest>`."""
    folder = IMAGES_DIR / name
    tag = content_hash(folder, client.images.get(BASE_IMAGE).id)
    repository = f"{reg.host}/vantage-test/{name}"
    reference = f"{repository}:{tag}"
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        image, _ = client.images.build(path=str(folder), tag=reference, pull=False, rm=True, network_mode="none")
    auth = {"username": reg.username, "password": reg.password}
    for event in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
        if "error" in event:
            raise RuntimeError(f"push of {reference} failed: {event['error']}")
    image.reload()
    digests = [d for d in image.attrs.get("RepoDigests", []) if d.startswith(f"{repository}@")]
    if not digests:
        raise RuntimeError(f"{reference} was pushed but has no digest for {repository}")
    return f"{reference}@{digests[0].split('@', 1)[1]}"
