"""The executor against the real Docker engine: what every algorithm container gets."""

import uuid
from pathlib import Path

import docker.errors
import pytest

from nodeagent import config, volumes
from nodeagent import executor as executor_module
from nodeagent.executor import HOST_MASKED_PATHS, LABEL_PROBE, ContainerSpec, Executor, ImageError
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


def _spec(image_id: str, **extra) -> ContainerSpec:
    name = f"vantage-test-{uuid.uuid4().hex[:8]}"
    run_volume = volumes.run_volume_name(name)
    extra.setdefault("mounts", [])
    extra["mounts"] = [volumes.volume(run_volume, "/mnt/run", read_only=False), *extra["mounts"]]
    return ContainerSpec(name=name, image=image_id, environment={"A": "B"}, labels={"vantage.run_id": "1"},
                         run_volume=run_volume, **extra)


def test_every_container_is_isolated_and_limited(executor, test_images, tmp_path):
    image_id = executor.ensure_image(ImageRef.parse(test_images["probe"]))
    spec = _spec(image_id)
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
        # No bind mount: the run's own volume, never seeded from the image, labelled as the container.
        (mount,) = host["Mounts"]
        assert (mount["Type"], mount["Source"], mount["Target"], mount.get("ReadOnly", False)) == (
            "volume", spec.run_volume, "/mnt/run", False)
        assert mount["VolumeOptions"]["NoCopy"] is True
        assert executor.docker.api.inspect_volume(spec.run_volume)["Labels"] == {
            "vantage.run_id": "1", volumes.LABEL_VOLUME: "run"}
        # MaskedPaths replaces the engine's list: the engine's own defaults are all still there.
        plain = executor.docker.api.create_container(image_id, command=["true"])["Id"]
        try:
            defaults = executor.docker.api.inspect_container(plain)["HostConfig"]["MaskedPaths"]
        finally:
            executor.docker.api.remove_container(plain, force=True)
        assert defaults and set(defaults) <= set(host["MaskedPaths"])
        assert set(HOST_MASKED_PATHS) <= set(host["MaskedPaths"])
    finally:
        executor.remove(container)
    with pytest.raises(docker.errors.NotFound):  # the run's volume goes with its container
        executor.docker.api.inspect_volume(spec.run_volume)


def _probes(executor) -> set[str]:
    return {c["Id"] for c in executor.docker.api.containers(all=True, filters={"label": f"{LABEL_PROBE}=masked-paths"})}


def test_the_masked_paths_probe_leaves_no_container_and_removes_one_an_earlier_agent_left(
        executor, test_images, monkeypatch):
    image_id = executor.ensure_image(ImageRef.parse(test_images["probe"]))
    before = _probes(executor)
    # As an agent stopped between creating its probe and removing it leaves one behind.
    left = executor.docker.api.create_container(image_id, command=["true"], labels={LABEL_PROBE: "masked-paths"},
                                                host_config=executor.docker.api.create_host_config(
                                                    network_mode="none"))["Id"]
    try:
        executor.masked_paths(image_id)  # the first probe of this agent
        assert left in _probes(executor)  # just made: it could be another agent's probe in use
        monkeypatch.setattr(executor_module, "PROBE_LEFTOVER_SECONDS", 0)
        second = Executor(limits=executor.limits, registries=executor.registries, client=executor.docker)
        assert set(HOST_MASKED_PATHS) <= set(second.masked_paths(image_id))
        assert left not in _probes(executor) and _probes(executor) <= before
    finally:
        if left in _probes(executor):
            executor.docker.api.remove_container(left, force=True)


def test_a_container_reads_nothing_of_the_hosts_kernel_boot_or_paths(executor, test_images, tmp_path):
    """Through the node's own calls (create, put_files, start, fetch_file), as a run goes."""
    assert Path("/proc/cmdline").read_text().strip()  # the host has one to hide
    image_id = executor.ensure_image(ImageRef.parse(test_images["probe"]))
    script = ("for f in /proc/cmdline /proc/version /proc/sys/kernel/random/boot_id; do "
              "printf '%s=%s\\n' $f \"$(wc -c < $f)\"; done; ls /sys/devices/virtual/dmi 2>/dev/null | wc -l; "
              "cat /proc/self/mountinfo; cat /mnt/run/input > /mnt/run/output")
    spec = _spec(image_id, command=["sh", "-c", script])
    container = executor.create(spec)
    try:
        executor.put_files(container, "/mnt/run", [volumes.Entry("input", 0o444, data=b'{"in": 1}'),
                                                   volumes.Entry("output", 0o666, data=b"")])
        executor.start(container)
        assert executor.wait(container, 60).exit_code == 0, container.logs()
        printed = container.logs().decode()
        out = tmp_path / "output"
        assert executor.fetch_file(container, "/mnt/run/output", out, 1024) == 9 and out.read_bytes() == b'{"in": 1}'
    finally:
        executor.remove(container)
    assert "/proc/cmdline=0\n/proc/version=0\n/proc/sys/kernel/random/boot_id=0\n0\n" in printed, printed
    assert f"/var/lib/docker/volumes/{spec.run_volume}/_data /mnt/run " in printed
    assert str(tmp_path) not in printed and str(Path.home()) not in printed


def test_output_read_back_is_capped(executor, test_images, tmp_path):
    image_id = executor.ensure_image(ImageRef.parse(test_images["probe"]))
    spec = _spec(image_id, command=["sh", "-c", "head -c 300000 /dev/zero > /mnt/run/output"])
    container = executor.create(spec)
    try:
        executor.put_files(container, "/mnt/run", [volumes.Entry("output", 0o666, data=b"")])
        executor.start(container)
        executor.wait(container, 60)
        assert executor.fetch_file(container, "/mnt/run/output", tmp_path / "out", 100_001) == 100_001
        with pytest.raises(volumes.VolumeError, match="not in the container"):
            executor.fetch_file(container, "/mnt/run/absent", tmp_path / "absent", 10)
    finally:
        executor.remove(container)
    assert (tmp_path / "out").stat().st_size == 100_001


def test_a_database_is_copied_into_a_volume_once_per_version_of_its_file(executor, test_images, tmp_path):
    image_id = executor.ensure_image(ImageRef.parse(test_images["probe"]))
    data = tmp_path / "data.csv"
    data.write_text("value\n1\n")
    data.chmod(0o600)  # the agent reads it; the container reads the copy (0444)
    labels = {"vantage.server": f"test-{uuid.uuid4().hex[:8]}", "vantage.node_id": "1"}
    store = volumes.DataVolumes(executor.docker.api, state_dir=tmp_path / "state", labels=labels)
    api = executor.docker.api
    try:
        first = store.ensure("default", data, "default.csv", image_id)
        assert store.ensure("default", data, "default.csv", image_id) == first  # no second copy
        created = api.inspect_volume(first)["CreatedAt"]
        # A fresh agent (no memory of it) trusts its record of the finished copy.
        again = volumes.DataVolumes(api, state_dir=tmp_path / "state", labels=labels)
        assert again.ensure("default", data, "default.csv", image_id) == first
        assert api.inspect_volume(first)["CreatedAt"] == created
        spec = _spec(image_id, command=["sh", "-c", "cat /mnt/data/default/default.csv; "
                                                    "echo x >> /mnt/data/default/default.csv; "
                                                    "grep ' /mnt/data/default ' /proc/self/mountinfo"],
                     mounts=[volumes.volume(first, "/mnt/data/default", read_only=True)])
        container = executor.create(spec)
        try:
            executor.start(container)
            executor.wait(container, 60)
            printed = container.logs().decode()
        finally:
            executor.remove(container)
        assert "value\n1\n" in printed and "Permission denied" in printed, printed
        assert f"/var/lib/docker/volumes/{first}/_data /mnt/data/default ro," in printed, printed
        # The file changes: a new volume, and the old one goes.
        data.write_text("value\n1\n2\n")
        second = store.ensure("default", data, "default.csv", image_id)
        assert second != first
        with pytest.raises(docker.errors.NotFound):
            api.inspect_volume(first)
    finally:
        for found in api.volumes(filters={"label": [f"vantage.server={labels['vantage.server']}"]})["Volumes"] or []:
            api.remove_volume(found["Name"], force=True)


def test_a_local_image_with_the_pinned_digest_needs_no_pull(executor, test_images):
    ref = ImageRef.parse(test_images["probe"])
    assert executor.local_image(ref) == executor.ensure_image(ref)


def test_pull_of_a_missing_image_says_what_failed(executor, registry):
    with pytest.raises(ImageError, match="pulling .*/vantage-test/absent@sha256:0{64} failed"):
        executor.ensure_image(ImageRef.parse(f"{registry.host}/vantage-test/absent@sha256:{'0' * 64}"))
