"""The executor against the real Docker engine: what every algorithm container gets."""

import uuid

import pytest

from nodeagent import config
from nodeagent.executor import ContainerSpec, Executor, ImageError, bind
from nodeagent.images import ImageRef

pytestmark = pytest.mark.slow


@pytest.fixture
def executor(docker_client, registry, tmp_path):
    cfg = config.parse({
        "task_folder": "tasks", "server": {"url": "http://127.0.0.1:1", "api_key": "k"},
        "limits": {"cpus": 0.5, "memory": "128m", "pids": 64, "tmpfs": "16m"},
        "registries": {registry.host: {"username": registry.username, "password": registry.password}},
    }, source="node.toml", base_dir=tmp_path)
    return Executor(limits=cfg.limits, registries=cfg.registries, client=docker_client)


def test_every_container_is_isolated_and_limited(executor, test_images, tmp_path):
    image_id = executor.ensure_image(ImageRef.parse(test_images["probe"]))
    data = tmp_path / "data.csv"
    data.write_text("value\n1\n")
    spec = ContainerSpec(
        name=f"vantage-test-{uuid.uuid4().hex[:8]}", image=image_id, environment={"A": "B"},
        labels={"vantage.run_id": "1"}, mounts=[bind(str(data), "/mnt/data/default.csv", read_only=True)],
    )
    container = executor.create(spec)
    try:
        container = executor.docker.containers.get(spec.name)  # as the engine has it
        host = container.attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["Privileged"] is False
        assert (host["Memory"], host["MemorySwap"]) == (128 * 1024**2, 128 * 1024**2)
        assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 64
        assert host["Tmpfs"] == {"/tmp": f"rw,noexec,nosuid,nodev,size={16 * 1024**2}"}
        assert container.attrs["Config"]["User"] == "65534:65534"
        assert container.attrs["Config"]["Labels"]["vantage.run_id"] == "1"
        (mount,) = host["Mounts"]
        assert (mount["Source"], mount["Target"], mount["ReadOnly"]) == (str(data), "/mnt/data/default.csv", True)
    finally:
        executor.remove(container)


def test_a_local_image_with_the_pinned_digest_needs_no_pull(executor, test_images):
    ref = ImageRef.parse(test_images["probe"])
    assert executor.local_image(ref) == executor.ensure_image(ref)


def test_pull_of_a_missing_image_says_what_failed(executor, registry):
    with pytest.raises(ImageError, match="pulling .*/vantage-test/absent@sha256:0{64} failed"):
        executor.ensure_image(ImageRef.parse(f"{registry.host}/vantage-test/absent@sha256:{'0' * 64}"))
