"""The researcher's client against a real server process (tests/live/conftest.py's harness).

The client is its own distribution (client/pyproject.toml), which requirements.txt
installs editable; `client/` is also put on the path here, which is what that install
gives, so these tests run in a virtualenv made before it.
"""

import json
import sys
from pathlib import Path

import pytest
import requests

from tests.live.conftest import api_server, live_db, live_seed  # noqa: F401  (fixtures reused, not copied)

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))


@pytest.fixture(scope="session")
def client_seed(live_db) -> dict:  # noqa: F811
    out = live_db.manage("shell", "-c", "from tests.client.seed import main; main()")
    line = next(line for line in out.splitlines() if line.startswith("CLIENTSEED "))
    return json.loads(line[len("CLIENTSEED "):])


class FakeNode:
    """A node's side of a run over the REST API, for client tests that need finished runs
    without containers (tests/nodeagent/test_encryption_live.py runs the real agent)."""

    def __init__(self, server_url: str, token: str):
        self.url = server_url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"

    def claim(self, run_id: int) -> dict:
        response = self.session.post(f"{self.url}/api/runs/{run_id}/claim/", timeout=30)
        assert response.status_code == 200, response.text
        started = self.session.post(f"{self.url}/api/runs/{run_id}/start/", timeout=30)
        assert started.status_code == 200, started.text
        return response.json()

    def finish(self, run_id: int, result: bytes) -> None:
        response = self.session.post(f"{self.url}/api/runs/{run_id}/finish/",
                                     data={"status": "completed", "exit_code": "0"},
                                     files={"result": ("output", result)}, timeout=30)
        assert response.status_code == 200, response.text

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def fake_nodes(api_server, client_seed):  # noqa: F811
    """fake_nodes("plain" | "sealed") -> {organisation id: FakeNode}."""
    made = []

    def build(collaboration: str) -> dict:
        nodes = {}
        for org in (client_seed["org_1"], client_seed["org_2"]):
            nodes[org] = FakeNode(api_server.url, client_seed["node_tokens"][f"{collaboration}-{org}"])
            made.append(nodes[org])
        return nodes

    yield build
    for node in made:
        node.close()
