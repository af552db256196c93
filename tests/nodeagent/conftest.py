"""Fixtures for the node agent: Docker engine, registry, test images, live server.

The live server fixture duplicates what tests/live/conftest.py is meant to provide
(a server on a free loopback port with its own database); merge them once it lands.
"""

import time

import pytest

from tests.nodeagent import images
from tests.nodeagent.live import LiveServer, NodeProcess, Researcher, tear_down


@pytest.fixture(scope="session")
def docker_client():
    return images.docker_client()


@pytest.fixture(scope="session")
def registry(docker_client):
    return images.registry()


@pytest.fixture(scope="session")
def test_images(docker_client, registry):
    """{"probe": "127.0.0.1:5000/vantage-test/probe:<hash>@sha256:...", "nostart": ...}"""
    return {name: images.build_and_push(docker_client, registry, name) for name in ("probe", "nostart")}


@pytest.fixture(scope="session")
def hog_image(docker_client, registry, test_images):
    """algorithms/testimages/hog, pushed next to the probe (whose repository holds the base layers)."""
    return images.build_and_push(docker_client, registry, "hog", repository_path="vantage-test/probe")


@pytest.fixture(scope="session")
def rounds_image(docker_client, registry):
    """algorithms/testimages/rounds: a toolkit algorithm whose image opts in to round workers."""
    return images.build_and_push(docker_client, registry, "rounds", toolkit=True)


@pytest.fixture(scope="session")
def v6_image(docker_client, registry):
    """An algorithm on the unmodified vantage6-algorithm-tools 4.15.2 (algorithms/testimages/v6-stats)."""
    return images.build_and_push(docker_client, registry, "v6-stats", repository_path="vantage/test-v6-stats",
                                 wheels=images.v6_wheels())


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("live"))
    server.setup()
    yield server
    server.teardown()


class Site:
    """The world of one test: organisations with a node each, and a researcher."""

    def __init__(self, server, workdir, registry, world):
        self.server, self.workdir, self.registry, self.world = server, workdir, registry, world
        self.researcher = Researcher(server, world["user"]["username"], world["user"]["password"])
        self.nodes: list[NodeProcess] = []

    @property
    def organizations(self) -> list[int]:
        return self.world["organizations"]

    def node(self, index: int, *, rows=((1,), (2,)), registry=None, env=None, **config) -> NodeProcess:
        entry = self.world["nodes"][index]
        data = self.workdir / f"data-{entry['id']}.csv"
        data.write_text("value\n" + "".join(f"{r[0]}\n" for r in rows))
        data.chmod(0o644)
        node = NodeProcess(self.workdir, f"node-{entry['id']}", server_url=self.server.url, api_key=entry["api_key"],
                           registry=registry or self.registry, databases={"default": data}, **config)
        node.data = data
        node.env.update(env or {})
        node.start()
        self.nodes.append(node)
        return node

    def task(self, image, method, organizations=None, **kwargs):
        return self.researcher.create_task(collaboration=self.world["collaboration"], image=image, method=method,
                                           organizations=organizations or self.organizations[:1], **kwargs)

    def wait_status(self, run_id, statuses, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.researcher.run(run_id)
            if run["status"] in statuses:
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} is {run['status']}, not {statuses}\n{self.agent_logs()}")

    def agent_logs(self) -> str:
        return "\n".join(f"--- {n.dir.name}\n{n.log()[-4000:]}" for n in self.nodes)


@pytest.fixture
def site(api_server, registry, docker_client, tmp_path):
    made = Site(api_server, tmp_path, registry, api_server.world())
    yield made
    tear_down(made, api_server.url, docker_client)
