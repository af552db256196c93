"""The live algorithm network: a real server, three real node agents, real containers.

`algorithm_network` (session-scoped) starts the server (its own database) and
three node agents, one per organisation A, B, C, as a hospital would run them. Each
node holds every bundled dataset (`gbsg2`, `rossi`, `lung`, `breast_cancer`) split
unevenly over the three sites (about 20% / 30% / 50%, see tests/algorithms/pooled.py),
and `small`: six rows at A, so a site below the default minimum of rows can be shown
refusing. Images are built by algorithms/build.py on first use (only when changed).

    result = algorithm_network.run("summary", "summary", {"columns": ["age"]}, "gbsg2")

creates the task through the REST API as the researcher of organisation A (the central
method runs on A), waits for it, and returns the decoded result; a failed run fails the
test with the runs' logs. `algorithm_network.sites[label]` holds the split rows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.algorithms import pooled
from tests.nodeagent import images
from tests.nodeagent.live import LiveServer, NodeProcess, Researcher

ALGORITHMS_DIR = Path(__file__).resolve().parents[2] / "algorithms"
FINAL = {"completed", "failed", "crashed", "killed", "rejected", "timed_out"}
# A central method and the partials it fans out run on one node at once: room for both.
LIMITS = "max_concurrent_runs = 4"
# The nodes' disclosure policy: defaults, except that minimum and maximum may be released,
# so the live tests compare them with the pooled data too.
ALGORITHM_ENV = 'VANTAGE_ALLOW_MIN_MAX = "true"'
# The nodes' output gate: a new node's defaults (opaque outputs held for a steward), so
# every reference study here, iterative ones included, shows that typed outputs pass the
# gate without a person; logs leave on failure only, so a refusal's reason reaches the test.
OUTPUT = 'logs = "on_failure"'
SMALL_ROWS = 6
# A Newton-Raphson fit is one round of three containers per iteration: on a machine
# shared with other work, minutes.
TASK_TIMEOUT = 900


def build_image(name: str) -> str:
    if str(ALGORITHMS_DIR) not in sys.path:
        sys.path.insert(0, str(ALGORITHMS_DIR))
    import build

    try:
        return build.build([name])[name].reference
    except build.BuildError as exc:
        pytest.fail(f"algorithms/build.py: {exc}", pytrace=False)


class AlgorithmNetwork:
    def __init__(self, server: LiveServer, workdir: Path, registry, docker_client):
        self.server, self.workdir, self.docker_client = server, workdir, docker_client
        self.world = server.seed("world", n_orgs=3, prefix="alg-")
        self.organizations: list[int] = self.world["organizations"]
        self.researcher = Researcher(server, self.world["user"]["username"], self.world["user"]["password"])
        self.sites: dict[str, list] = {label: pooled.split(frame) for label, frame in pooled.datasets().items()}
        self.images: dict[str, str] = {}
        self.nodes: list[NodeProcess] = []
        for index, entry in enumerate(self.world["nodes"]):
            folder = workdir / f"data-{entry['organization']}"
            folder.mkdir()
            databases = {}
            for label, frames in self.sites.items():
                databases[label] = self._write(folder / f"{label}.csv", frames[index])
            small = self.sites["gbsg2"][index].head(SMALL_ROWS if index == 0 else len(self.sites["gbsg2"][index]))
            databases["small"] = self._write(folder / "small.csv", small)
            self.nodes.append(NodeProcess(workdir, f"node-{entry['organization']}", server_url=server.url,
                                          api_key=entry["api_key"], registry=registry, databases=databases,
                                          limits=LIMITS, algorithm_env=ALGORITHM_ENV, output=OUTPUT))
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_connected(timeout=60)

    @staticmethod
    def _write(path: Path, frame) -> Path:
        frame.to_csv(path, index=False)
        path.chmod(0o644)
        return path

    def image(self, name: str) -> str:
        if name not in self.images:
            self.images[name] = build_image(name)
        return self.images[name]

    def submit(self, image_name: str, method: str, kwargs: dict, database: str,
               organizations: list[int] | None = None, timeout: float = TASK_TIMEOUT) -> dict:
        """Run the central method on organisation A; the central run's detail once final."""
        if organizations is not None:
            kwargs = {**kwargs, "organizations": organizations}
        task = self.researcher.create_task(collaboration=self.world["collaboration"], image=self.image(image_name),
                                           method=method, organizations=self.organizations[:1], kwargs=kwargs,
                                           databases=[{"label": database}])
        run_id, self.last_task = task["runs"][0]["id"], task["id"]
        deadline = time.monotonic() + timeout
        while (detail := self.researcher.run(run_id))["status"] not in FINAL:
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task['id']} still {detail['status']} after {timeout} s\n"
                                     f"{self.logs(task['id'])}")
            time.sleep(0.1)
        detail["task"] = task["id"]
        return detail

    def run(self, image_name: str, method: str, kwargs: dict, database: str,
            organizations: list[int] | None = None, timeout: float = TASK_TIMEOUT):
        detail = self.submit(image_name, method, kwargs, database, organizations, timeout)
        if detail["status"] != "completed":
            raise AssertionError(f"{image_name}.{method} ended {detail['status']}:\n{self.logs(detail['task'])}")
        return self.researcher.result(detail["id"])

    def subtask_runs(self, task_id: int) -> list[dict]:
        """Every run of the task's subtasks, with logs, as the researcher sees them."""
        response = self.researcher.api("GET", f"tasks/?parent={task_id}&page_size=100")
        children = response.json().get("results", []) if response.status_code == 200 else []
        return [self.researcher.run(r["id"]) for child in children for r in self.researcher.runs(child["id"])]

    def phases(self) -> str:
        """Median seconds of the last task's subtask runs: created → claimed → started → finished."""
        from datetime import datetime
        from statistics import median

        runs = self.subtask_runs(self.last_task)
        if not runs:
            return "no subtask runs"
        at = {key: [datetime.fromisoformat(r[key]) for r in runs] for key in
              ("created_at", "claimed_at", "started_at", "finished_at")}
        spans = [("claim", "created_at", "claimed_at"), ("start", "claimed_at", "started_at"),
                 ("run", "started_at", "finished_at")]
        return ", ".join(f"{name} {median((b - a).total_seconds() for a, b in zip(at[x], at[y])):.2f} s"
                         for name, x, y in spans) + f" (median over {len(runs)} subtask runs)"

    def logs(self, task_id: int) -> str:
        runs = [self.researcher.run(r["id"]) for r in self.researcher.runs(task_id)] + self.subtask_runs(task_id)
        lines = [f"--- run {r['id']} (organisation {r['organization']}) {r['status']}\n{r.get('log', '')[-3000:]}"
                 for r in runs]
        return "\n".join(lines + [f"--- agent {n.dir.name}\n{n.log()[-2000:]}" for n in self.nodes])

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        # Stopped agents leave their containers and data volumes for the next agent; in a test there is none.
        images.remove_server_leftovers(self.docker_client, self.server.url)


@pytest.fixture(scope="session")
def algorithm_network(tmp_path_factory):
    docker_client = images.docker_client()
    registry = images.registry()
    server = LiveServer(tmp_path_factory.mktemp("algorithm-network"))
    # One researcher login serves the whole session, longer than the default 15 minutes.
    server.env["VANTAGE_ACCESS_TOKEN_MINUTES"] = "240"
    server.setup()
    network = None
    try:
        network = AlgorithmNetwork(server, server.workdir, registry, docker_client)
        yield network
    finally:
        if network is not None:
            network.close()
        server.teardown()
