"""Docker: pull by digest with the site's credentials, run isolated containers.

Every algorithm container gets: network `none`; a read-only root filesystem with a
small noexec tmpfs on /tmp; its scratch folder (TEMPORARY_FOLDER) a noexec tmpfs of
`limits.scratch` bytes, counted within its memory limit; no file it writes larger than
`limits.max_output` + 1 bytes (RLIMIT_FSIZE: the output file is bounded while the
container runs, not only checked after); no capabilities; no-new-privileges; memory
(no swap on top), CPU and pids limits; an unprivileged user; database files mounted
read-only; and only its own input/output/token files. Containers carry the
labels `vantage.server`, `vantage.node_id` and `vantage.run_id`, so an agent that
restarts finds its own containers and no one else's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import LogConfig, Mount, Ulimit

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
RELAY_SCRIPT = Path(__file__).with_name("relay.py")
RELAY_PATH = "/opt/vantage/relay.py"
PROXY_MOUNT = "/mnt/proxy"
FORWARDER_READY_SECONDS = 20
FORWARDER_LIMITS = {"memory": 64 * 1024 * 1024, "cpus": 0.5, "pids": 64}


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
            raise ImageError(f"registry {creds.host} refused the credentials of {creds.username}: {_explain(exc)}")

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
            raise ImageError(f"the Docker engine could not look up {ref}: {_explain(exc)}")

    def forwarder_image_problem(self, name: str) -> str | None:
        """Why the forwarder image can be neither found locally nor pulled, or None."""
        try:
            self.docker.images.get(name)
            return None
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            return f"the Docker engine could not look up {name}: {_explain(exc)}"
        try:
            ref = ImageRef.parse(name)
        except BadReference as exc:
            return f"{name} is not an image reference: {exc}"
        try:
            # Asks the registry for the manifest only: "pullable" without pulling.
            self.docker.api.inspect_distribution(ref.pull_reference, auth_config=self.auth_for(ref))
        except docker.errors.APIError as exc:
            return f"{name} is not on this Docker engine and cannot be pulled: {_explain(exc)}"
        return None

    def ensure_named_image(self, name: str) -> None:
        """An image by name (the forwarder's): kept as found locally, else pulled."""
        try:
            self.docker.images.get(name)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ImageError(f"the Docker engine could not look up {name}: {_explain(exc)}")
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
            raise ImageError(f"pulling {ref.pull_reference} failed: {_explain(exc)}")
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
            created = api.create_container(
                spec.image, command=spec.command, name=spec.name, environment=spec.environment,
                labels=spec.labels, user=limits.user, detach=True, host_config=host_config,
            )
            # The low-level call: containers.create would inspect the new container once more,
            # and nothing here reads more of it than its id and name before it runs.
            return self.docker.containers.prepare_model({"Id": created["Id"], "Name": f"/{spec.name}"})
        except docker.errors.ImageNotFound as exc:
            raise StartupError(f"the image is gone from the Docker engine: {_explain(exc)}")
        except docker.errors.APIError as exc:
            raise StartupError(f"the container could not be created: {_explain(exc)}")

    def _tmpfs(self, spec: ContainerSpec) -> dict[str, str]:
        mounts = {"/tmp": f"rw,noexec,nosuid,nodev,size={self.limits.tmpfs}"}
        if spec.scratch:
            mounts[spec.scratch] = f"rw,noexec,nosuid,nodev,size={self.limits.scratch},mode=1777"
        return mounts

    def start(self, container: Container) -> None:
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise StartupError(f"the container could not start: {_explain(exc)}")

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
            log.debug("kill %s: %s", container.name, _explain(exc))

    def remove(self, container: Container | str) -> None:
        """Stop and remove a container, or the one of this name if there is one."""
        name = container if isinstance(container, str) else container.name
        try:
            self.docker.api.remove_container(container if isinstance(container, str) else container.id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove container %s: %s", name, _explain(exc))

    def logs(self, container: Container, since: float | None) -> Iterator[bytes]:
        """stdout and stderr as they come, until the container stops."""
        kwargs = {"stream": True, "follow": True, "stdout": True, "stderr": True}
        if since:
            kwargs["since"] = since
        return container.logs(**kwargs)


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return explanation.decode() if isinstance(explanation, bytes) else str(explanation)
    return str(exc)
