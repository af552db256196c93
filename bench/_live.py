"""What bench/node.py and bench/study.py share: a live server and node agents from the
test harness (tests/nodeagent/live.py), and their clean-up.

Imported after each script has made sure it runs in the project's .venv (docker,
requests) and put the repository on sys.path.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import requests

from tests.nodeagent import images
from tests.nodeagent.live import AgentDidNotStop, LiveServer, NodeProcess


class BenchError(Exception):
    """The benchmark cannot go on; the message is its one line."""


def log(message: str) -> None:
    print(message, flush=True)


def wait_listening(node: NodeProcess, timeout: float) -> None:
    """Until the agent's websocket is up: runs then reach it by event, as on a deployed node."""
    deadline = time.monotonic() + timeout
    while "websocket connected" not in node.log():
        if node.process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"node agent {node.dir.name} has no websocket; its log: {node.log_path}")
        time.sleep(0.05)


def stop_agents(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        if node.process is None or node.process.poll() is not None:
            continue
        try:
            node.stop()
        except AgentDidNotStop:  # aborted by then; its log holds its threads' stacks
            log(f"node agent {node.dir.name} did not stop on SIGTERM; its log: {node.log_path}")


def remove_leftovers(client: docker.DockerClient | None, label: str, server: LiveServer | None) -> None:
    """The bench's own containers (by `label`) and those the agents leave behind (by
    design, a stopped agent leaves its containers for the next one), then the agents'
    copies of their databases (kept across agent restarts): this server is gone for good."""
    if client is None:
        return
    for container in client.api.containers(all=True, filters={"label": label}):
        try:
            client.api.remove_container(container["Id"], force=True)
        except docker.errors.NotFound:
            pass
    if server is not None:
        images.remove_server_leftovers(client, server.url)


def shut_down(nodes: list[NodeProcess], server: LiveServer | None, client: docker.DockerClient | None,
              label: str) -> None:
    """The bench's network, whatever state it reached: agents, then the server, then what they left."""
    stop_agents(nodes)
    if server is not None:
        server.teardown()
    remove_leftovers(client, label, server)


def _interrupted(signum, frame):
    """SIGTERM ends the benchmark like Ctrl-C: through the clean-up."""
    raise KeyboardInterrupt


def run(measure: Callable[[], int], close: Callable[[], None], workdir: Path, *, keep_tmp: bool) -> int:
    """The exit status of `measure()`; 130 when interrupted, 2 with one `bench: FAILED:`
    line when it fails. `close()` runs in every case, a second Ctrl-C notwithstanding; the
    temporary folder goes unless it is wanted (`keep_tmp`, a failure, an interruption)."""
    signal.signal(signal.SIGTERM, _interrupted)
    status, keep = 2, keep_tmp
    try:
        status = measure()
    except KeyboardInterrupt:
        log("bench: interrupted")
        status, keep = 130, True
    except (BenchError, AssertionError, RuntimeError, requests.RequestException, docker.errors.DockerException) as exc:
        message = " ".join(str(exc).split())[:600] or type(exc).__name__
        log(f"bench: FAILED: {message} (logs kept in {workdir})")
        status, keep = 2, True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return status
