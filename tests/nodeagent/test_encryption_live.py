"""End to end in an encrypted collaboration: real node agents, real containers, real server.

The researcher uses the Python client (client/vantage_client), which seals each input
for its organisation; each node opens its input with its private key ([encryption] in
node.toml) and seals its output for the researcher's organisation; a central method's
subtasks go through the node proxy, which seals their inputs and opens their results.
The server's stored inputs and result files are checked to be envelopes, not JSON.
"""

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nodeagent.live import PYTHON, REPO_ROOT, NodeProcess, tear_down

CLIENT_DIR = REPO_ROOT / "client"
if str(CLIENT_DIR) not in sys.path:  # the client is its own distribution: see tests/client/conftest.py
    sys.path.insert(0, str(CLIENT_DIR))

from vantage_client import Client, crypto  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]


def _server_shell(server, code: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", "shell", "-c", code], cwd=REPO_ROOT, env=server.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class SealedSite:
    """A world whose collaboration is encrypted, each organisation with a published key."""

    def __init__(self, server, registry, workdir: Path, world: dict):
        self.server, self.registry, self.workdir, self.world = server, registry, workdir, world
        self.keys = {}
        for org in world["organizations"]:
            self.keys[org] = workdir / f"org-{org}.pem"
            crypto.write_private_key(self.keys[org], crypto.generate_private_key(2048))
        public = {org: crypto.public_key_pem(crypto.read_private_key(path)) for org, path in self.keys.items()}
        _server_shell(server, (
            "from collaborations.models import Collaboration, Organization\n"
            f"Collaboration.objects.filter(pk={world['collaboration']}).update(encrypted=True)\n"
            f"for pk, pem in {public!r}.items():\n"
            "    Organization.objects.filter(pk=pk).update(public_key=pem)\n"
        ))
        self.client = Client(server.url, private_key=self.keys[world["organizations"][0]])
        self.client.session.trust_env = False
        self.client.login(world["user"]["username"], world["user"]["password"])
        self.nodes: list[NodeProcess] = []

    @property
    def organizations(self) -> list[int]:
        return self.world["organizations"]

    def node(self, index: int, rows, key: Path | None) -> NodeProcess:
        entry = self.world["nodes"][index]
        data = self.workdir / f"data-{entry['id']}.csv"
        data.write_text("value\n" + "".join(f"{r}\n" for r in rows))
        data.chmod(0o644)
        node = NodeProcess(self.workdir, f"node-{entry['id']}", server_url=self.server.url, api_key=entry["api_key"],
                           registry=self.registry, databases={"default": data}, limits="max_concurrent_runs = 2")
        if key is not None:
            with open(node.config_path, "a") as fh:
                fh.write(f'[encryption]\nprivate_key_file = "{key}"\n')
        node.start()
        self.nodes.append(node)
        return node

    def stored(self, task_ids: list[int]) -> list[tuple[bytes, bytes | None]]:
        """(input, result) of every run of these tasks, as the server holds them (row or file)."""
        out = _server_shell(self.server, (
            "import base64, json\nfrom tasks.models import Run\nfrom tasks.selectors import run_result_file\n"
            f"for run in Run.objects.filter(task_id__in={task_ids!r}):\n"
            "    data = run_result_file(run=run).read() if run.has_stored_result else b''\n"
            "    print('RUN', json.dumps([base64.b64encode(bytes(run.input)).decode(), "
            "base64.b64encode(data).decode()]))\n"
        ))
        rows = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("RUN ")]
        return [(base64.b64decode(i), base64.b64decode(r) or None) for i, r in rows]

    def agent_logs(self, task_id: int | None = None) -> str:
        """The agents' logs, and the task's run logs as the researcher sees them."""
        runs = [self.client.get(f"runs/{run['id']}/") for run in self.client.runs(task_id)] if task_id else []
        return "\n".join([*(f"--- run {r['id']}: {r['status']}\n{r['log']}" for r in runs),
                          *(f"--- {n.dir.name}\n{n.log()[-4000:]}" for n in self.nodes)])


@pytest.fixture
def sealed_site(api_server, registry, docker_client, tmp_path):
    site = SealedSite(api_server, registry, tmp_path, api_server.world())
    yield site
    tear_down(site, api_server.url, docker_client)


def _assert_only_ciphertext(site: SealedSite, task_ids: list[int], expected_runs: int) -> None:
    stored = site.stored(task_ids)
    assert len(stored) == expected_runs
    for run_input, result in stored:
        assert crypto.is_envelope(run_input) and b"method" not in run_input
        assert result is not None and crypto.is_envelope(result) and b"sum" not in result


def test_partial_and_central_methods_on_an_encrypted_collaboration(sealed_site, test_images):
    site = sealed_site
    first, second = site.organizations
    for node in (site.node(0, [1, 2, 3], site.keys[first]), site.node(1, [10, 20], site.keys[second])):
        node.wait_connected()

    partial = site.client.tasks.create(collaboration=site.world["collaboration"], image=test_images["probe"],
                                       method="partial", kwargs={"column": "value"}, organizations=site.organizations,
                                       databases=["default"])
    assert site.client.tasks.wait(partial["id"], timeout=90)["status"] == "completed", site.agent_logs(partial["id"])
    results = {run["organization"]: run["result"] for run in site.client.runs(partial["id"])}
    assert results == {first: {"rows": 3, "sum": 6.0}, second: {"rows": 2, "sum": 30.0}}
    _assert_only_ciphertext(site, [partial["id"]], 2)

    central = site.client.tasks.create(collaboration=site.world["collaboration"], image=test_images["probe"],
                                       method="central", kwargs={"column": "value", "count": 2},
                                       organizations=[first], databases=["default"])
    assert site.client.tasks.wait(central["id"], timeout=120)["status"] == "completed", site.agent_logs(central["id"])
    (combined,) = site.client.results(central["id"])
    assert (combined["organizations"], combined["rows"], combined["sum"]) == (sorted(site.organizations), 5, 36.0)
    # The subtask's inputs were sealed by the proxy, its results by the nodes for the central organisation.
    _assert_only_ciphertext(site, [central["id"], combined["subtask"]], 3)


def test_an_input_the_node_cannot_decrypt_fails_the_run_with_a_clear_line(sealed_site, test_images):
    site = sealed_site
    first, second = site.organizations
    stranger = site.workdir / "stranger.pem"
    crypto.write_private_key(stranger, crypto.generate_private_key(2048))
    site.node(0, [1], stranger).wait_connected()  # org `first`'s node holds a key that is not its published one
    site.node(1, [2], None).wait_connected()  # and org `second`'s node holds none

    task = site.client.tasks.create(collaboration=site.world["collaboration"], image=test_images["probe"],
                                    method="partial", organizations=site.organizations, databases=["default"])
    assert site.client.tasks.wait(task["id"], timeout=60)["status"] == "failed"
    runs = {run["organization"]: site.client.get(f"runs/{run['id']}/") for run in site.client.runs(task["id"])}
    assert runs[first]["status"] == "failed"
    assert "the run's input does not decrypt with this node's private key: sealed for another key" in \
        runs[first]["log"], site.agent_logs()
    assert runs[second]["status"] == "failed"
    assert (f"collaboration {site.world['collaboration']} is encrypted but this node has no private key"
            in runs[second]["log"]), site.agent_logs()
