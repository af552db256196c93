#!/usr/bin/env python3
"""Node agent benchmark: what the platform adds to the bare cost of starting containers.

    .venv/bin/python bench/node.py                # 7 rounds, 50 queued runs
    .venv/bin/python bench/node.py --quick        # 3 rounds, 20 queued runs
    .venv/bin/python bench/node.py --rounds 10 --queue 100

Measured on this machine, with a real Docker engine, registry and live server
(tests/nodeagent/live.py: the server on loopback, `manage.py run_node` agents):

(a) three `docker run --rm --network none <base image> true`, started at once, until
    all three have exited;
(b) a trivial task (the probe image's `partial`) for three organisations through the
    server and three node agents: from the researcher's create request until every
    result is downloaded by the researcher, who hears of the end on the live events
    websocket (/ws/events/, `task.completed`), as the client and portal do.

Rounds alternate a/b (and which of them goes first), after one uncounted warm-up of
each. Printed: median and p95 of both, and median(b) / median(a) against the goal 1.5.

Then `--queue` N one-organisation tasks are queued for one node before its agent
starts, with at most 4 runs at a time: all must complete exactly once (server: N
completed runs, one per task, each with its result; agent log: one claim and one
outcome per run), and the agent's RSS is sampled from /proc while it works: the peak
(VmHWM) is printed, and RSS must not grow more than 15 % after the first tenth of the
runs.

Needs the Docker engine, the registry and the base image of `scripts/docker-env.sh up`.
Loopback only; every wait is bounded; the server, agents and containers are stopped
and removed on exit or Ctrl-C. Exit status: 0 goals met, 1 a goal missed, 2 failure
(one line `bench: FAILED: ...`; the temporary folder with the server and agent logs is
kept), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

try:
    import docker
    import docker.errors
    import requests
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect as ws_connect
except ImportError:  # started with a Python other than the project's: use the project's
    if VENV_PYTHON.exists() and Path(sys.executable) != VENV_PYTHON:
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), *sys.argv])
    raise

sys.path.insert(0, str(REPO))

from bench._live import BenchError, log, remove_leftovers, run, shut_down, stop_agents, wait_listening  # noqa: E402
from tests.nodeagent import images  # noqa: E402
from tests.nodeagent.live import LiveServer, NodeProcess, Researcher  # noqa: E402

GOAL_RATIO = 1.5
GOAL_RSS_GROWTH = 0.15
QUEUE_CONCURRENCY = 4
FINAL = {"completed", "failed", "crashed", "killed", "rejected", "timed_out"}
TASK_TIMEOUT = 120.0
BARE_TIMEOUT = 120.0
# Agents hear of new runs over the websocket; polling is only the safety net here.
AGENT_SERVER_SETTINGS = "poll_interval = 5\nkill_poll_interval = 5"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, as bench/api.py."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def preflight() -> tuple[docker.DockerClient, images.Registry]:
    """The Docker engine, base image and registry, or one line saying what is missing."""
    hint = "start them with scripts/docker-env.sh up"
    if shutil.which("docker") is None:
        raise BenchError(f"no docker command on PATH; {hint}")
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as exc:
        raise BenchError(f"no Docker engine answers ({exc}); {hint}")
    try:
        client.images.get(images.BASE_IMAGE)
    except docker.errors.ImageNotFound:
        raise BenchError(f"the base image {images.BASE_IMAGE} is missing; {hint}")
    password_file = images.STATE_DIR / "registry-password"
    if not password_file.exists():
        raise BenchError(f"no registry password at {password_file}; {hint}")
    try:
        requests.get(f"http://{images.REGISTRY}/v2/", timeout=5)
    except requests.RequestException as exc:
        raise BenchError(f"no registry answers on {images.REGISTRY} ({exc}); {hint}")
    return client, images.registry()


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.label = f"vantage.bench={uuid.uuid4().hex[:12]}"
        self.client: docker.DockerClient | None = None
        self.registry: images.Registry | None = None
        self.probe = ""
        self.server: LiveServer | None = None
        self.nodes: list[NodeProcess] = []
        self.goals_missed: list[str] = []

    # --- set-up and clean-up -------------------------------------------------------

    def start_agent(self, name: str, entry: dict, limits: str = "") -> NodeProcess:
        data = self.workdir / f"{name}.csv"
        data.write_text("value\n1\n2\n3\n")
        data.chmod(0o644)
        node = NodeProcess(self.workdir, name, server_url=self.server.url, api_key=entry["api_key"],
                           registry=self.registry, databases={"default": data}, limits=limits,
                           server=AGENT_SERVER_SETTINGS)
        self.nodes.append(node)
        node.start()
        return node

    def close(self) -> None:
        shut_down(self.nodes, self.server, self.client, self.label)

    # --- (a) and (b) ---------------------------------------------------------------

    def bare(self) -> float:
        command = ["docker", "run", "--rm", "--network", "none", "--label", self.label, images.BASE_IMAGE, "true"]
        started = time.monotonic()
        processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for _ in range(3)]
        for process in processes:
            try:
                _, err = process.communicate(timeout=BARE_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise BenchError(f"docker run took longer than {BARE_TIMEOUT:.0f} s")
            if process.returncode != 0:
                raise BenchError(f"docker run exited with {process.returncode}: {err.strip()[-300:]}")
        return time.monotonic() - started

    def task(self, researcher: Researcher, world: dict, events) -> float:
        started = time.monotonic()
        task = researcher.create_task(collaboration=world["collaboration"], image=self.probe, method="partial",
                                      organizations=world["organizations"], kwargs={"column": "value"})
        deadline = started + TASK_TIMEOUT
        while True:
            try:
                event = json.loads(events.recv(timeout=max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise BenchError(f"task {task['id']}: no task.completed event after {TASK_TIMEOUT:.0f} s: "
                                 f"{[run['status'] for run in researcher.runs(task['id'])]}")
            if event.get("type") == "task.completed" and event.get("task", {}).get("id") == task["id"]:
                break
        runs = researcher.runs(task["id"])
        if len(runs) != len(world["organizations"]):
            raise BenchError(f"task {task['id']}: {len(runs)} runs for {len(world['organizations'])} organisations")
        bad = [(run["id"], run["status"]) for run in runs if run["status"] != "completed"]
        if bad:
            raise BenchError(f"task {task['id']}: runs did not complete: {bad}; agent logs in {self.workdir}")
        for run in runs:
            if researcher.result(run["id"]).get("rows") != 3:
                raise BenchError(f"run {run['id']}: unexpected result {researcher.result(run['id'])}")
        return time.monotonic() - started

    def compare(self) -> None:
        world = self.server.seed("world", n_orgs=3, prefix="bench-")
        agents = [self.start_agent(f"site{i}", entry) for i, entry in enumerate(world["nodes"])]
        for agent in agents:
            wait_listening(agent, timeout=60)
        researcher = Researcher(self.server, world["user"]["username"], world["user"]["password"])
        bare_times, task_times = [], []
        with self.researcher_events(researcher) as events:
            log("warm-up: one bare start and one task, not counted")
            self.bare()
            self.task(researcher, world, events)
            for round_no in range(self.args.rounds):
                steps = [("a", self.bare, bare_times), ("b", lambda: self.task(researcher, world, events), task_times)]
                for _name, step, times in steps if round_no % 2 == 0 else reversed(steps):
                    times.append(step())
                log(f"  round {round_no + 1}/{self.args.rounds}: (a) {bare_times[-1]:.2f} s   "
                    f"(b) {task_times[-1]:.2f} s")
        stop_agents(self.nodes)
        remove_leftovers(self.client, self.label, self.server)

        a, b = statistics.median(bare_times), statistics.median(task_times)
        ratio = b / a
        met = ratio <= GOAL_RATIO
        if not met:
            self.goals_missed.append(f"(b)/(a) = {ratio:.2f} > {GOAL_RATIO}")
        log("")
        log(f"{'':44} {'median':>8} {'p95':>8}")
        log(f"{'(a) 3 x docker run --network none, at once':44} {a:7.2f}s {pct(bare_times, 0.95):7.2f}s")
        log(f"{'(b) task on 3 organisations, 3 node agents':44} {b:7.2f}s {pct(task_times, 0.95):7.2f}s")
        log(f"ratio (b)/(a) of medians: {ratio:.2f}   goal <= {GOAL_RATIO}: {'met' if met else 'MISSED'}")

    @contextlib.contextmanager
    def researcher_events(self, researcher: Researcher):
        """The researcher's live events socket, past its hello."""
        url = self.server.url.replace("http://", "ws://", 1) + "/ws/events/"
        headers = {"Authorization": researcher.session.headers["Authorization"]}
        try:
            with ws_connect(url, additional_headers=headers, open_timeout=10, close_timeout=2) as socket:
                hello = json.loads(socket.recv(timeout=10))
                if hello.get("type") != "hello":
                    raise BenchError(f"the researcher's websocket said {hello} instead of hello")
                yield socket
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise BenchError(f"the researcher's websocket {url} failed: {exc}")

    # --- queue -----------------------------------------------------------------------

    def queue(self) -> None:
        count = self.args.queue
        world = self.server.seed("world", n_orgs=1, prefix="queue-")
        organization, node_entry = world["organizations"][0], world["nodes"][0]
        researcher = Researcher(self.server, world["user"]["username"], world["user"]["password"])
        log("")
        log(f"queueing {count} one-organisation tasks for one node (max {QUEUE_CONCURRENCY} at a time)")
        task_ids = {researcher.create_task(collaboration=world["collaboration"], image=self.probe, method="partial",
                                           organizations=[organization], kwargs={"column": "value"})["id"]
                    for _ in range(count)}
        agent = self.start_agent("queue", node_entry, limits=f"max_concurrent_runs = {QUEUE_CONCURRENCY}")
        status_path = Path(f"/proc/{agent.process.pid}/status")
        started = time.monotonic()
        deadline = started + 60 + 5 * count
        samples: list[tuple[float, int, int]] = []  # (seconds, runs completed, RSS KiB)
        most_in_flight = 0
        while True:
            runs = researcher.api("GET", f"runs/?organization={organization}&page_size=1000").json()["results"]
            if agent.process.poll() is not None:
                raise BenchError(f"the queue's node agent exited with {agent.process.returncode}: {agent.log_path}")
            statuses = Counter(run["status"] for run in runs)
            most_in_flight = max(most_in_flight, statuses["claimed"] + statuses["running"])
            samples.append((time.monotonic() - started, statuses["completed"], _proc_kib(status_path, "VmRSS")))
            if sum(statuses[s] for s in FINAL) == len(runs) == count:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"queue not done after {deadline - started:.0f} s: {dict(statuses)}")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        peak = _proc_kib(status_path, "VmHWM")
        stop_agents(self.nodes)
        remove_leftovers(self.client, self.label, self.server)

        problems = _queue_problems(runs, task_ids, node_entry["id"], agent.log())
        for run in runs:
            if run["status"] == "completed" and researcher.result(run["id"]).get("rows") != 3:
                problems.append(f"run {run['id']}: unexpected result")
        log(f"{count} runs on one node, {QUEUE_CONCURRENCY} at a time: {elapsed:.1f} s "
            f"({count / elapsed:.2f} runs/s), at most {most_in_flight} claimed or running at once")
        if problems:
            raise BenchError("queue: " + "; ".join(problems[:5]) + f"; agent log: {agent.log_path}")
        log(f"  server: {count} runs, {count} completed, one per task, each with its result; "
            f"agent log: {count} claims and {count} outcomes, one per run")

        warm = next(rss for _, done, rss in samples if done >= max(1, count // 10))
        final = samples[-1][2]
        growth = (final - warm) / warm
        log("  agent RSS (MiB) by runs completed: " + _rss_series(samples, count))
        flat = growth <= GOAL_RSS_GROWTH
        if not flat:
            self.goals_missed.append(f"agent RSS grew {growth:+.0%} after the first tenth of the runs")
        log(f"  agent RSS after {max(1, count // 10)} runs {warm / 1024:.1f} MiB, at the end {final / 1024:.1f} MiB "
            f"({growth:+.1%}); peak (VmHWM) {peak / 1024:.1f} MiB   "
            f"flat (growth <= {GOAL_RSS_GROWTH:.0%}): {'met' if flat else 'MISSED'}")

    # --- main ------------------------------------------------------------------------

    def run(self) -> None:
        self.client, self.registry = preflight()
        log(f"building and pushing the probe image to {images.REGISTRY}")
        self.probe = images.build_and_push(self.client, self.registry, "probe")
        self.server = LiveServer(self.workdir)
        database = "PostgreSQL" if self.server.database_url.startswith("postgres") else "SQLite"
        log(f"starting the server ({database}) on {self.server.url}")
        self.server.setup()
        log(f"(a) vs (b), {self.args.rounds} rounds alternating; machine: {os.cpu_count()} cores, "
            f"Docker {self.client.version().get('Version')}")
        self.compare()
        if self.args.queue:
            self.queue()


def _proc_kib(path: Path, key: str) -> int:
    try:
        line = next(line for line in path.read_text().splitlines() if line.startswith(key + ":"))
    except (OSError, StopIteration):
        raise BenchError(f"cannot read {key} from {path}: the agent is gone")
    return int(line.split()[1])


def _queue_problems(runs: list[dict], task_ids: set[int], node_id: int, agent_log: str) -> list[str]:
    """Everything that says a run was lost or ran twice, from the server and the agent's log."""
    problems = []
    per_task = Counter(run["task"] for run in runs)
    if set(per_task) != task_ids or any(n != 1 for n in per_task.values()):
        problems.append(f"server: {len(runs)} runs for {len(per_task)} of {len(task_ids)} tasks")
    not_done = [(run["id"], run["status"]) for run in runs if run["status"] != "completed"]
    if not_done:
        problems.append(f"server: not completed: {not_done[:5]}")
    elsewhere = [run["id"] for run in runs if run["node"] != node_id]
    if elsewhere:
        problems.append(f"server: runs finished by another node: {elsewhere[:5]}")
    empty = [run["id"] for run in runs if run["status"] == "completed" and not run["result_size"]]
    if empty:
        problems.append(f"server: completed without a result: {empty[:5]}")
    run_ids = {run["id"] for run in runs}
    for what, pattern in (("claims", r"run (\d+): claimed$"), ("outcomes", r"run (\d+): (?:completed|failed|crashed)")):
        seen = Counter(int(m) for m in re.findall(pattern, agent_log, flags=re.MULTILINE))
        if set(seen) != run_ids or any(n != 1 for n in seen.values()):
            twice = [run_id for run_id, n in seen.items() if n > 1]
            problems.append(f"agent log: {sum(seen.values())} {what} for {len(run_ids)} runs"
                            + (f", twice: {twice[:5]}" if twice else ""))
    return problems


def _rss_series(samples: list[tuple[float, int, int]], count: int) -> str:
    """RSS at 0, 10 %, ..., 100 % of the runs completed: flat memory shows as one number."""
    shown = []
    for step in range(11):
        target = count * step // 10
        sample = next((s for s in samples if s[1] >= target), samples[-1])
        shown.append(f"{sample[1]}:{sample[2] / 1024:.1f}")
    return "  ".join(dict.fromkeys(shown))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="counted rounds of (a) and (b) (default 7; 3 with --quick)")
    parser.add_argument("--queue", type=int, help="queued runs on one node (default 50; 20 with --quick; 0: skip)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a shorter queue")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (logs) even on success")
    args = parser.parse_args()
    args.rounds = args.rounds if args.rounds is not None else (3 if args.quick else 7)
    args.queue = args.queue if args.queue is not None else (20 if args.quick else 50)
    if args.rounds < 1 or args.queue < 0:
        parser.error("--rounds must be at least 1 and --queue at least 0")

    workdir = Path(tempfile.mkdtemp(prefix="vantage-bench-node-"))
    bench = Bench(args, workdir)

    def measure() -> int:
        bench.run()
        if bench.goals_missed:
            log("goals missed: " + "; ".join(bench.goals_missed))
            return 1
        return 0

    return run(measure, bench.close, workdir, keep_tmp=args.keep_tmp)


if __name__ == "__main__":
    sys.exit(main())
