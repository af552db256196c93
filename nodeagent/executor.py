"""Docker: pull by digest with the site's credentials, run isolated containers.

Every algorithm container gets: network `none`; a read-only root filesystem with a
small noexec tmpfs on /tmp; its scratch folder (TEMPORARY_FOLDER) a noexec tmpfs of
`limits.scratch` bytes, counted within its memory limit; no file it writes larger than
`limits.max_output` + 1 bytes (RLIMIT_FSIZE: the output file is bounded while the
container runs, not only checked after); no capabilities; no-new-privileges; memory
(no swap on top), CPU and pids limits; an unprivileged user; database files mounted
read-only; and only its own input/output/token files, in named volumes whose paths name
nothing of the host (nodeagent/volumes.py). Besides the paths the engine itself masks,
the host's kernel command line and build string, boot id and machine identity read as
empty (MASKED_PATHS). Containers carry the labels `vantage.server`, `vantage.node_id`
and `vantage.run_id`, so an agent that restarts finds its own containers and no one else's.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import LogConfig, Mount, Ulimit

from nodeagent import volumes
from nodeagent.config import Limits, RegistryCredentials
from nodeagent.images import BadReference, ImageRef

log = logging.getLogger(__name__)

LABEL_SERVER = "vantage.server"  # which server's node ids these are (one engine may serve several)
LABEL_NODE = "vantage.node_id"
LABEL_RUN = "vantage.run_id"
LABEL_TASK = "vantage.task_id"
# Forwarders carry these instead of LABEL_NODE/LABEL_RUN: reconciling runs ignores them.
LABEL_FORWARDER_NODE = "vantage.forwarder_node_id"
LABEL_FORWARDER_SLOT = "vantage.forwarder_slot"
# The container made (never started) to read the engine's default masked paths. It lives
# for milliseconds; one older than PROBE_LEFTOVER_SECONDS was left by an agent stopped
# mid-probe, on this engine, and the next probe removes it.
LABEL_PROBE = "vantage.probe"
PROBE_LEFTOVER_SECONDS = 60
RELAY_SCRIPT = Path(__file__).with_name("relay.py")
RELAY_PATH = "/opt/vantage/relay.py"
PROXY_MOUNT = "/mnt/proxy"
FORWARDER_READY_SECONDS = 20
FORWARDER_LIMITS = {"memory": 64 * 1024 * 1024, "cpus": 0.5, "pids": 64}
# Docker's HostConfig.MaskedPaths replaces the engine's default list when set, so every
# container gets the engine's own defaults (read from the engine once: ENGINE_MASKED_PATHS
# is what Docker 20.10 to 29 mask, kept if the engine cannot be asked) and these, which
# tell a container about the host it runs on: the kernel command line (boot parameters,
# root device, hypervisor settings), the kernel's build string (the build host and
# compiler; the release an algorithm may need is still in uname(2)), bootconfig (boot
# parameters again), the boot id (one id per host boot, the same in every container) and
# the machine's DMI identity (vendor, model, BIOS). A masked file reads as empty, a
# masked folder as an empty read-only one; a path the host lacks is skipped by runc.
HOST_MASKED_PATHS = (
    "/proc/cmdline", "/proc/version", "/proc/bootconfig", "/proc/sys/kernel/random/boot_id",
    "/sys/devices/virtual/dmi",
)
ENGINE_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)


class ImageError(Exception):
    """The image could not be had: not found, credentials refused, registry down."""


class StartupError(Exception):
    """The container could not be created or started."""


@dataclass
class ContainerSpec:
    name: str
    image: str  # an image id: what runs is exactly what was checked and pulled
    environment: dict[str, str]
    labels: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    # "none", or "container:<forwarder id>": the run's forwarder's namespace, where
    # 127.0.0.1:<proxy_port> is the relay to the node proxy and nothing else exists.
    network_mode: str = "none"
    command: list[str] | None = None  # None: the image's own CMD
    scratch: str | None = None  # where the run's size-limited scratch tmpfs goes (algorithm containers)
    # The run's own named volume (nodeagent/volumes.py), made with the container, labelled as it.
    run_volume: str | None = None


@dataclass(frozen=True)
class ExitInfo:
    exit_code: int
    oom_killed: bool
    error: str  # the engine's own error for a container that failed to run


def bind(source: str, target: str, *, read_only: bool) -> Mount:
    return Mount(target=target, source=source, type="bind", read_only=read_only)


class Executor:
    def __init__(self, *, limits: Limits, registries: dict[str, RegistryCredentials], client=None,
                 pool_size: int = 16):
        self.limits = limits
        self.registries = registries
        self.docker = client or docker.from_env(max_pool_size=pool_size, timeout=120)
        self._engine_masked: tuple[str, ...] | None = None
        self._masked_lock = threading.Lock()

    def ping(self) -> str:
        """The engine's version; raises docker.errors.DockerException when it is not there."""
        return self.docker.version().get("Version", "?")

    # ---------------------------------------------------------------- images

    def auth_for(self, ref: ImageRef) -> dict | None:
        creds = self.registries.get(ref.registry)
        if creds is None:
            return None
        return {"username": creds.username, "password": creds.password}

    def login(self, creds: RegistryCredentials) -> None:
        """Check credentials against the registry (raises ImageError when refused)."""
        try:
            self.docker.login(username=creds.username, password=creds.password, registry=creds.host, reauth=True)
        except docker.errors.APIError as exc:
            raise ImageError(f"registry {creds.host} refused the credentials of {creds.username}: "
                             f"{volumes.explain(exc)}")

    def local_image(self, ref: ImageRef) -> str | None:
        """The id of a local image with exactly this digest; a digest names content, so
        a local copy is the same image and needs no second pull."""
        if not ref.digest:
            return None
        try:
            return self.docker.images.get(ref.pull_reference).id
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise ImageError(f"the Docker engine could not look up {ref}: {volumes.explain(exc)}")

    def forwarder_image_problem(self, name: str) -> str | None:
        """Why the forwarder image can be neither found locally nor pulled, or None."""
        try:
            self.docker.images.get(name)
            return None
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            return f"the Docker engine could not look up {name}: {volumes.explain(exc)}"
        try:
            ref = ImageRef.parse(name)
        except BadReference as exc:
            return f"{name} is not an image reference: {exc}"
        try:
            # Asks the registry for the manifest only: "pullable" without pulling.
            self.docker.api.inspect_distribution(ref.pull_reference, auth_config=self.auth_for(ref))
        except docker.errors.APIError as exc:
            return f"{name} is not on this Docker engine and cannot be pulled: {volumes.explain(exc)}"
        return None

    def ensure_named_image(self, name: str) -> None:
        """An image by name (the forwarder's): kept as found locally, else pulled."""
        try:
            self.docker.images.get(name)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ImageError(f"the Docker engine could not look up {name}: {volumes.explain(exc)}")
        try:
            ref = ImageRef.parse(name)
        except BadReference as exc:
            raise ImageError(f"{name} is not an image reference: {exc}")
        self.ensure_image(ref)

    def ensure_image(self, ref: ImageRef) -> str:
        """Pull (by digest when pinned) and return the local image id."""
        local = self.local_image(ref)
        if local:
            return local
        tag = ref.digest or ref.tag or "latest"
        try:
            stream = self.docker.api.pull(ref.repository, tag=tag, stream=True, decode=True,
                                          auth_config=self.auth_for(ref))
            for event in stream:
                if "error" in event:
                    raise ImageError(f"pulling {ref.pull_reference} failed: {event['error']}")
        except docker.errors.APIError as exc:
            raise ImageError(f"pulling {ref.pull_reference} failed: {volumes.explain(exc)}")
        except requests.RequestException as exc:
            raise ImageError(f"pulling {ref.pull_reference} failed: the Docker engine did not answer ({exc})")
        try:
            image = self.docker.images.get(ref.pull_reference)
        except docker.errors.ImageNotFound:
            raise ImageError(f"pulling {ref.pull_reference} reported success but the image is not there")
        return image.id

    # ---------------------------------------------------------------- containers

    def create(self, spec: ContainerSpec, *, memory: int | None = None, cpus: float | None = None,
               pids: int | None = None) -> Container:
        limits = self.limits
        memory = memory or limits.memory
        api = self.docker.api
        try:
            if spec.run_volume:
                api.create_volume(name=spec.run_volume, labels={**spec.labels, volumes.LABEL_VOLUME: "run"})
            host_config = api.create_host_config(
                mounts=spec.mounts,
                network_mode=spec.network_mode,
                read_only=True,
                tmpfs=self._tmpfs(spec),
                ulimits=[Ulimit(name="fsize", soft=limits.max_output + 1, hard=limits.max_output + 1)],
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=int((cpus or limits.cpus) * 1e9),
                pids_limit=pids or limits.pids,
                ipc_mode="private",
                log_config=LogConfig(type=LogConfig.types.JSON, config={"max-size": "20m", "max-file": "2"}),
            )
            # Not a create_host_config argument in docker-py; the engine reads it from HostConfig (API >= 1.30).
            host_config["MaskedPaths"] = self.masked_paths(spec.image)
            created = api.create_container(
                spec.image, command=spec.command, name=spec.name, environment=spec.environment,
                labels=spec.labels, user=limits.user, detach=True, host_config=host_config,
            )
            # The low-level call: containers.create would inspect the new container once more,
            # and nothing here reads more of it than its id and name before it runs.
            return self.docker.containers.prepare_model({"Id": created["Id"], "Name": f"/{spec.name}"})
        except docker.errors.ImageNotFound as exc:
            raise StartupError(f"the image is gone from the Docker engine: {volumes.explain(exc)}")
        except docker.errors.APIError as exc:
            raise StartupError(f"the container could not be created: {volumes.explain(exc)}")

    def masked_paths(self, image: str) -> list[str]:
        """The engine's default masked paths, and HOST_MASKED_PATHS."""
        with self._masked_lock:
            if self._engine_masked is None:
                self._engine_masked = self._engine_default_masked_paths(image)
            engine = self._engine_masked or ()
        return sorted(set(engine) | set(ENGINE_MASKED_PATHS) | set(HOST_MASKED_PATHS))

    def _engine_default_masked_paths(self, image: str) -> tuple[str, ...] | None:
        """What this engine masks when HostConfig says nothing: a container created (never
        started) without MaskedPaths shows the engine's list in its HostConfig. Once per
        agent; None (asked again next time, ENGINE_MASKED_PATHS meanwhile) when it fails."""
        api = self.docker.api
        self._remove_leftover_probes()
        probe = None
        try:
            probe = api.create_container(image, command=["true"], network_disabled=True,
                                         labels={LABEL_PROBE: "masked-paths"},
                                         host_config=api.create_host_config(network_mode="none"))["Id"]
            found = api.inspect_container(probe).get("HostConfig", {}).get("MaskedPaths")
            return tuple(found) if isinstance(found, list) else ENGINE_MASKED_PATHS
        except docker.errors.APIError as exc:
            log.warning("the engine's default masked paths could not be read (%s); using Docker's known list",
                        volumes.explain(exc))
            return None
        finally:
            if probe is not None:
                try:
                    api.remove_container(probe, force=True)
                except docker.errors.APIError:
                    log.warning("could not remove container %s (made to read the engine's masked paths)", probe)

    def _remove_leftover_probes(self) -> None:
        """Remove probes that agents stopped mid-probe left on this engine (never started, no mounts)."""
        try:
            probes = self.docker.api.containers(all=True, filters={"label": f"{LABEL_PROBE}=masked-paths"})
        except docker.errors.APIError:
            return  # the probe itself reports an engine that does not answer
        for probe in probes:
            if time.time() - probe.get("Created", 0) < PROBE_LEFTOVER_SECONDS:
                continue  # another agent's probe, in use now
            try:
                self.docker.api.remove_container(probe["Id"], force=True)
                log.info("removed container %s, left by an agent stopped while reading the engine's masked paths",
                         probe["Id"][:12])
            except docker.errors.APIError:
                pass  # gone meanwhile, or the engine refused: the next probe tries again

    def put_files(self, container: Container, directory: str, entries: list[volumes.Entry]) -> None:
        """Write a run's files into its created container's volume before it starts."""
        try:
            volumes.put_files(self.docker.api, container.id, directory, entries)
        except volumes.VolumeError as exc:
            raise StartupError(str(exc))

    def fetch_file(self, container: Container, path: str, target: Path, limit: int) -> int:
        """Copy a file out of the container (its output) to `target`, at most `limit` bytes;
        raises volumes.VolumeError."""
        return volumes.fetch_file(self.docker.api, container.id, path, target, limit)

    def _tmpfs(self, spec: ContainerSpec) -> dict[str, str]:
        mounts = {"/tmp": f"rw,noexec,nosuid,nodev,size={self.limits.tmpfs}"}
        if spec.scratch:
            mounts[spec.scratch] = f"rw,noexec,nosuid,nodev,size={self.limits.scratch},mode=1777"
        return mounts

    def start(self, container: Container) -> None:
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise StartupError(f"the container could not start: {volumes.explain(exc)}")

    def start_forwarder(self, *, name: str, image: str, labels: dict[str, str], socket_dir: Path,
                        port: int) -> Container:
        """A forwarder, started and listening: network `none`, the same isolation as an
        algorithm, the relay script and its slot's proxy folder its only mounts."""
        old = self.find(name)
        if old is not None:
            self.remove(old)  # stopped, or from an agent that stopped before its run started
        self.ensure_named_image(image)
        spec = ContainerSpec(
            name=name, image=image, environment={}, labels=labels,
            mounts=[bind(str(RELAY_SCRIPT), RELAY_PATH, read_only=True),
                    bind(str(socket_dir), PROXY_MOUNT, read_only=True)],
            command=["python3", RELAY_PATH, str(port), f"{PROXY_MOUNT}/proxy.sock"],
        )
        container = self.create(spec, **FORWARDER_LIMITS)
        try:
            self.start(container)
            deadline = time.monotonic() + FORWARDER_READY_SECONDS
            while b"relay: ready" not in container.logs():
                if time.monotonic() > deadline or self.exit_info(container) is not None:
                    output = container.logs().decode(errors="replace").strip()[-500:]
                    raise StartupError(f"the run's forwarder did not start listening: {output or 'no output'}")
                time.sleep(0.02)
        except StartupError:
            self.remove(container)
            raise
        return container

    def find(self, name: str) -> Container | None:
        try:
            return self.docker.containers.get(name)
        except docker.errors.NotFound:
            return None

    def node_containers(self, server: str, node_id: int) -> list[Container]:
        return self.docker.containers.list(
            all=True, filters={"label": [f"{LABEL_SERVER}={server}", f"{LABEL_NODE}={node_id}"]}
        )

    def forwarders(self, server: str, node_id: int) -> list[Container]:
        return self.docker.containers.list(
            all=True, filters={"label": [f"{LABEL_SERVER}={server}", f"{LABEL_FORWARDER_NODE}={node_id}"]}
        )

    def wait(self, container: Container, timeout: float) -> ExitInfo | None:
        """The exit of the container, or None if it still runs after `timeout` seconds."""
        try:
            status = container.wait(timeout=timeout)
        except (requests.ConnectionError, requests.ReadTimeout):
            return None
        if status.get("StatusCode") == 0 and not status.get("Error"):
            return ExitInfo(exit_code=0, oom_killed=False, error="")  # a clean exit needs no inspection
        return self.exit_info(container)

    def exit_info(self, container: Container) -> ExitInfo | None:
        container.reload()
        state = container.attrs.get("State", {})
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        return ExitInfo(exit_code=int(state.get("ExitCode", -1)), oom_killed=bool(state.get("OOMKilled")),
                        error=state.get("Error") or "")

    def is_running(self, container: Container) -> bool:
        container.reload()
        return container.status == "running"

    def kill(self, container: Container) -> None:
        try:
            container.kill()
        except docker.errors.APIError as exc:
            # Already stopped between our check and the kill: nothing left to do.
            log.debug("kill %s: %s", container.name, volumes.explain(exc))

    def remove(self, container: Container | str) -> None:
        """Stop and remove a container, or the one of this name if there is one, and its
        run volume if it has one."""
        name = container if isinstance(container, str) else container.name
        try:
            self.docker.api.remove_container(container if isinstance(container, str) else container.id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove container %s: %s", name, volumes.explain(exc))
            return
        try:
            self.docker.api.remove_volume(volumes.run_volume_name(name))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove the volume of container %s: %s", name, volumes.explain(exc))

    def logs(self, container: Container, since: float | None) -> Iterator[bytes]:
        """stdout and stderr as they come, until the container stops."""
        kwargs = {"stream": True, "follow": True, "stdout": True, "stderr": True}
        if since:
            kwargs["since"] = since
        return container.logs(**kwargs)
