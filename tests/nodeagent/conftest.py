"""Fixtures for the node agent: Docker engine, registry, test images, live server.

The live server fixture duplicates what tests/live/conftest.py is meant to provide
(daphne on a free loopback port with its own database); merge them once it lands.
"""

import pytest

from tests.nodeagent import images
from tests.nodeagent.live import LiveServer


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


@pytest.fixture(scope="module")
def daphne_server(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("live"))
    server.setup()
    yield server
    server.teardown()
