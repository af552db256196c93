#!/usr/bin/env python3
"""Live events benchmark: N simulated nodes on websockets, one server process.

    .venv/bin/python bench/events.py                # N = 10, 100, 1000
    .venv/bin/python bench/events.py --quick        # fewer tasks, 10 s polling window
    .venv/bin/python bench/events.py --nodes 100 --tasks 50 --json /tmp/events.json

For each N, one fresh `python -m vantage.server` process (SQLite, in-memory channel
layer: the embedded defaults) holds N node websockets, all opened by this one asyncio
process. Measured, each against its goal:

- run.created fan-out: tasks created over HTTP for all 10 organisations, each reaching
  every connected node; the time from the create response to each node reading its
  run.created (p50 < 20 ms at N = 100);
- the server's RSS with N idle connections (1,000 in < 300 MB);
- task.completed: the time from the last result's finish response to the researcher's
  websocket reading task.completed (p95 < 50 ms);
- for comparison, nodes that poll their pending runs every --poll-interval seconds
  (60 s: vantage6 4.15's only periodic node timer, see bench/README.md).

Loopback only; every wait is bounded; the server is stopped and the temporary folder
removed on exit or Ctrl-C. Exit status: 0 goals met, 1 a goal missed, 2 failure,
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

try:
    from websockets.asyncio.client import connect as websocket_connect
    from websockets.exceptions import ConnectionClosed
except ImportError:  # started with a Python other than the project's: use the project's
    if VENV_PYTHON.exists() and Path(sys.executable) != VENV_PYTHON:
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), *sys.argv])
    raise

from api import HOST, BenchError, Client, ServerProcess, free_port, log, multipart, proc_group_cpu_seconds, run_checked

ORGANIZATIONS = 10
PASSWORD = "Bench-Events-Passw0rd!"
RUN_INPUT = base64.b64encode(json.dumps({"method": "partial", "args": [], "kwargs": {}}).encode()).decode()
RESULT = json.dumps({"n": 120, "sum": 5012.5}).encode()
MB = 1000 * 1000

GOAL_FANOUT_P50_MS = 20.0  # at N = 100
GOAL_RSS_MB = 300.0  # at N = 1000
GOAL_COMPLETED_P95_MS = 50.0

# vantage6 4.15.2 (vantage6/common/globals.py, client/__init__.py wait_for_results):
V6_PING_INTERVAL_SECONDS = 60
V6_WAIT_FIRST_INTERVAL, V6_WAIT_MULTIPLIER, V6_WAIT_MAX_INTERVAL = 1.0, 1.5, 300.0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, as bench/api.py."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise BenchError(f"no {field_name} for pid {pid}")


def raise_fd_limit(needed: int) -> None:
    """Each websocket costs a descriptor here and one in the server (which inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"need {needed} file descriptors, the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# ---------------------------------------------------------------------------
# Seed (runs inside the server's environment: bench/events.py --_seed ...)
# ---------------------------------------------------------------------------
def seed(params: dict) -> None:
    import django

    django.setup()
    from django.db import transaction
    from collaborations.authentication import node_access_token
    from accounts.services import api_login_create, user_create
    from collaborations.services import collaboration_create, node_create, organization_create

    per_org, pollers = params["per_org"], params["pollers"]
    with transaction.atomic():
        orgs = [organization_create(actor=None, name=f"bench-events-org-{i + 1}") for i in range(ORGANIZATIONS)]
        poll_org = organization_create(actor=None, name="bench-events-pollers")
        collab = collaboration_create(actor=None, name="bench-events", organizations=[*orgs, poll_org])
        user = user_create(actor=None, username="bench-researcher", password=PASSWORD, organization=orgs[0],
                           roles=["researcher"])

        def tokens(org, count: int, prefix: str) -> list[str]:
            return [
                str(node_access_token(node_create(actor=None, organization=org, collaboration=collab,
                                                  name=f"{prefix}-{org.pk}-{i}")[0]))
                for i in range(count)
            ]

        out = {
            "collaboration": collab.pk,
            "organizations": [org.pk for org in orgs],
            "poll_organization": poll_org.pk,
            "user_token": str(api_login_create(user=user).access_token),
            "nodes": {str(org.pk): tokens(org, per_org, "node") for org in orgs},
            "pollers": tokens(poll_org, pollers, "poller"),
        }
    Path(params["out"]).write_text(json.dumps(out))


# ---------------------------------------------------------------------------
# HTTP (in worker threads: one keep-alive Client each, timestamps taken there)
# ---------------------------------------------------------------------------
def create_task(client: Client, token: str, collaboration: int, organizations: list[int]) -> tuple[float, float, dict]:
    body = {"collaboration": collaboration, "name": "bench-events", "image": "127.0.0.1:5000/bench:1",
            "method": "partial", "organizations": [{"id": org, "input": RUN_INPUT} for org in organizations]}
    sent = time.perf_counter()
    task = client.json("POST", "/api/tasks/", json_body=body, token=token, expect=(201,))
    return sent, time.perf_counter(), task


def run_to_finish(client: Client, token: str, run_id: int) -> tuple[float, float]:
    """Claim, start and finish a run with a small result; times of the finish request and response."""
    for step in ("claim", "start"):
        client.json("POST", f"/api/runs/{run_id}/{step}/", token=token)
    body, content_type = multipart({"status": "completed", "exit_code": "0"}, {"result": ("output", RESULT)})
    sent = time.perf_counter()
    client.json("POST", f"/api/runs/{run_id}/finish/", body=body, token=token, headers={"Content-Type": content_type})
    return sent, time.perf_counter()


def pending_run_ids(client: Client, token: str) -> tuple[float, set[int]]:
    page = client.json("GET", "/api/runs/?status=pending&page_size=100", token=token)
    return time.perf_counter(), {run["id"] for run in page["results"]}


# ---------------------------------------------------------------------------
# Websockets: every simulated node in this one event loop
# ---------------------------------------------------------------------------
class Listeners:
    """Websockets read by one task each; arrival times of one event type, per task id."""

    def __init__(self, event_type: str, task_id_of):
        self.event_type = event_type
        self.task_id_of = task_id_of
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self._waiting: dict[int, tuple[int, asyncio.Event]] = {}
        self.sockets = []
        self.readers: list[asyncio.Task] = []

    async def open(self, url: str, tokens: list[str], batch: int, timeout: float) -> None:
        for start in range(0, len(tokens), batch):
            await asyncio.wait_for(
                asyncio.gather(*(self._open_one(url, token) for token in tokens[start:start + batch])), timeout,
            )

    async def _open_one(self, url: str, token: str) -> None:
        # No client keepalive pings: the server pings each socket itself (every 20 s).
        socket = await websocket_connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, compression=None, proxy=None,
            ping_interval=None, open_timeout=60, max_queue=None,
        )
        self.sockets.append(socket)
        hello = json.loads(await socket.recv())
        if hello.get("type") != "hello":
            raise BenchError(f"{url}: expected hello, got {hello}")
        self.readers.append(asyncio.create_task(self._read(socket)))

    async def _read(self, socket) -> None:
        try:
            async for frame in socket:
                at = time.perf_counter()
                event = json.loads(frame)
                if event.get("type") == self.event_type:
                    task_id = self.task_id_of(event)
                    self.arrivals[task_id].append(at)
                    waiting = self._waiting.get(task_id)
                    if waiting and len(self.arrivals[task_id]) >= waiting[0]:
                        waiting[1].set()
        except ConnectionClosed:
            pass

    async def wait(self, task_id: int, count: int, timeout: float) -> list[float]:
        """The arrival times of `count` events about the task (fewer when the time runs out)."""
        done = asyncio.Event()
        self._waiting[task_id] = (count, done)
        if len(self.arrivals[task_id]) >= count:
            done.set()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            pass
        del self._waiting[task_id]
        return self.arrivals.pop(task_id, [])

    async def close(self) -> None:
        await asyncio.gather(*(socket.close() for socket in self.sockets), return_exceptions=True)
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------
@dataclass
class Round:
    nodes: int
    connect_seconds: float = 0.0
    rss_idle_kib: int = 0
    rss_connected_kib: int = 0
    rss_after_kib: int = 0
    after_response_ms: list[float] = field(default_factory=list)
    after_request_ms: list[float] = field(default_factory=list)
    last_node_ms: list[float] = field(default_factory=list)
    missing: int = 0
    completed_ms: list[float] = field(default_factory=list)
    completed_after_request_ms: list[float] = field(default_factory=list)
    completed_missing: int = 0
    server_cpu_ms_per_task: float = 0.0
    client_cpu_share: float = 0.0

    def summary(self) -> dict:
        def stats(values):
            return {"n": len(values), "p50": pct(values, 0.5), "p95": pct(values, 0.95),
                    "max": max(values, default=float("nan"))}

        return {
            "nodes": self.nodes, "connect_seconds": self.connect_seconds,
            "rss_idle_kib": self.rss_idle_kib, "rss_connected_kib": self.rss_connected_kib,
            "rss_after_kib": self.rss_after_kib,
            "run_created_after_response_ms": stats(self.after_response_ms),
            "run_created_after_request_ms": stats(self.after_request_ms),
            "run_created_last_node_ms": stats(self.last_node_ms), "run_created_missing": self.missing,
            "task_completed_after_response_ms": stats(self.completed_ms),
            "task_completed_after_request_ms": stats(self.completed_after_request_ms),
            "task_completed_missing": self.completed_missing,
            "server_cpu_ms_per_task": self.server_cpu_ms_per_task, "client_cpu_share": self.client_cpu_share,
        }


class Server:
    """One `python -m vantage.server` process."""

    def __init__(self, args, env: dict, tmp: Path, name: str):
        self.port = free_port()
        self.process = ServerProcess(
            f"server ({name})",
            [str(VENV_PYTHON), "-m", "vantage.server", "-b", HOST, "-p", str(self.port), "vantage.asgi:application"],
            env=env, cwd=REPO, logfile=tmp / f"server-{name}.log",
        )
        try:
            self.process.wait_healthy(self.port, "/api/health/", args.start_timeout)
        except BaseException:
            self.process.stop()
            raise
        self.pid = self.process.proc.pid
        self.ws_url = f"ws://{HOST}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


async def measure_round(args, seeded: dict, server: Server, n: int) -> Round:
    result = Round(nodes=n)
    orgs = seeded["organizations"]
    per_org = n // ORGANIZATIONS
    node_tokens = [token for org in orgs for token in seeded["nodes"][str(org)][:per_org]]
    collaboration, user_token = seeded["collaboration"], seeded["user_token"]
    researcher_http, node_http = Client(server.port), Client(server.port)
    finisher_token = seeded["nodes"][str(orgs[0])][0]

    # Warm up the code paths (imports, caches, the first database connection of a thread).
    await asyncio.to_thread(create_task, researcher_http, user_token, collaboration, orgs)
    await asyncio.sleep(1)
    result.rss_idle_kib = rss_kib(server.pid)

    nodes = Listeners("run.created", lambda event: event["task"])
    researcher = Listeners("task.completed", lambda event: event["task"]["id"])
    try:
        started = time.perf_counter()
        await nodes.open(f"{server.ws_url}/ws/node/", node_tokens, args.connect_batch, args.connect_timeout)
        result.connect_seconds = time.perf_counter() - started
        await researcher.open(f"{server.ws_url}/ws/events/", [user_token], 1, args.connect_timeout)
        await asyncio.sleep(2)
        result.rss_connected_kib = rss_kib(server.pid)
        log(f"N={n}: {n} nodes connected in {result.connect_seconds:.1f} s, "
            f"server RSS {result.rss_idle_kib * 1024 / MB:.0f} -> {result.rss_connected_kib * 1024 / MB:.0f} MB")

        server_cpu, client_cpu, wall = proc_group_cpu_seconds(server.pid), _own_cpu(), time.perf_counter()
        for index in range(args.tasks + 1):  # the first one warms the websocket paths up
            sent, responded, task = await asyncio.to_thread(
                create_task, researcher_http, user_token, collaboration, orgs)
            arrivals = await nodes.wait(task["id"], n, args.event_timeout)
            if index:
                result.missing += n - len(arrivals)
                result.after_response_ms += [(at - responded) * 1000 for at in arrivals]
                result.after_request_ms += [(at - sent) * 1000 for at in arrivals]
                if len(arrivals) == n:
                    result.last_node_ms.append((max(arrivals) - responded) * 1000)
            await asyncio.sleep(args.gap)
        wall = time.perf_counter() - wall
        result.server_cpu_ms_per_task = (proc_group_cpu_seconds(server.pid) - server_cpu) * 1000 / (args.tasks + 1)
        result.client_cpu_share = (_own_cpu() - client_cpu) / wall
        log(f"N={n}: run.created p50 {pct(result.after_response_ms, 0.5):.1f} ms, "
            f"p95 {pct(result.after_response_ms, 0.95):.1f} ms after the create response")

        for index in range(args.completions + 1):
            _, _, task = await asyncio.to_thread(create_task, researcher_http, user_token, collaboration, orgs[:1])
            sent, responded = await asyncio.to_thread(run_to_finish, node_http, finisher_token, task["runs"][0]["id"])
            arrivals = await researcher.wait(task["id"], 1, args.event_timeout)
            if not index:
                continue
            if arrivals:
                result.completed_ms.append((arrivals[0] - responded) * 1000)
                result.completed_after_request_ms.append((arrivals[0] - sent) * 1000)
            else:
                result.completed_missing += 1
            await asyncio.sleep(args.gap)
        result.rss_after_kib = rss_kib(server.pid)
        log(f"N={n}: task.completed p50 {pct(result.completed_ms, 0.5):.1f} ms, "
            f"p95 {pct(result.completed_ms, 0.95):.1f} ms after the finish response")
    finally:
        await nodes.close()
        await researcher.close()
        researcher_http.close()
        node_http.close()
    return result


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Polling:
    interval: float
    pollers: int
    latencies_s: list[float] = field(default_factory=list)
    missing: int = 0


async def measure_polling(args, seeded: dict, server: Server) -> Polling:
    """Pollers spread evenly over one interval; each task is seen by each at its next poll.

    A task created at a random moment is found by each poller after a delay uniform in
    [0, interval) plus one list request: the latency distribution of a polling node,
    measured in one interval rather than waiting intervals per sample.
    """
    result = Polling(interval=args.poll_interval, pollers=args.pollers)
    tokens = seeded["pollers"][:args.pollers]
    clients = [Client(server.port) for _ in tokens]
    http = Client(server.port)
    seen: dict[tuple[int, int], float] = {}
    created: list[tuple[int, float]] = []
    begin = time.perf_counter() + 1.0
    creation_window = min(5.0, args.poll_interval / 4)
    stop_at = begin + creation_window + args.poll_interval + 1.0

    async def poll(index: int) -> None:
        next_at = begin + args.poll_interval * (index + random.random()) / len(tokens)
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            at, run_ids = await asyncio.to_thread(pending_run_ids, clients[index], tokens[index])
            for run_id in run_ids:
                seen.setdefault((index, run_id), at)
            next_at += args.poll_interval

    async def create() -> None:
        offsets = sorted(random.uniform(0, creation_window) for _ in range(args.poll_tasks))
        for offset in offsets:
            await asyncio.sleep(max(0.0, begin + offset - time.perf_counter()))
            _, responded, task = await asyncio.to_thread(
                create_task, http, seeded["user_token"], seeded["collaboration"], [seeded["poll_organization"]])
            created.append((task["runs"][0]["id"], responded))

    try:
        await asyncio.gather(create(), *(poll(i) for i in range(len(tokens))))
    finally:
        for client in (*clients, http):
            client.close()
    for run_id, responded in created:
        for index in range(len(tokens)):
            if (index, run_id) in seen:
                result.latencies_s.append(seen[(index, run_id)] - responded)
            else:
                result.missing += 1
    return result


def v6_wait_delay(finished_after: float) -> float:
    """How late vantage6 4.15's client.wait_for_results() (defaults) notices a finished task.

    It asks for the task's status at once, then sleeps 1 s, 1.5 s, 2.25 s, ... (x1.5,
    at most 300 s) between requests; request durations are left out.
    """
    at, interval = 0.0, V6_WAIT_FIRST_INTERVAL
    while at < finished_after:
        at += interval
        interval = min(interval * V6_WAIT_MULTIPLIER, V6_WAIT_MAX_INTERVAL)
    return at - finished_after


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def report(rounds: list[Round], polling: Polling | None, args, meta: dict) -> bool:
    print()
    print(f"Live events: one `python -m vantage.server` process, SQLite, in-memory channel layer; "
          f"{ORGANIZATIONS} organisations, N/{ORGANIZATIONS} nodes each; {args.tasks} tasks per N, each for all "
          f"{ORGANIZATIONS} organisations (every node gets one run.created per task)")
    print(f"load average {meta['load_before']:.1f} -> {os.getloadavg()[0]:.1f}, commit {meta['commit']}")
    print()
    print("run.created, ms from the create response to each node reading it (negative: read before the response)")
    header = (f"{'N':>6} {'connect s':>9} {'RSS idle MB':>11} {'RSS N conn MB':>13} {'KiB/conn':>8} "
              f"{'p50':>7} {'p95':>7} {'max':>7} {'last p50':>8} {'from req p50':>12} {'missing':>7} "
              f"{'srv CPU ms/task':>15} {'client CPU':>10}")
    print(header)
    print("-" * len(header))
    for r in rounds:
        per_conn = (r.rss_connected_kib - r.rss_idle_kib) / r.nodes
        print(f"{r.nodes:>6} {r.connect_seconds:>9.1f} {r.rss_idle_kib * 1024 / MB:>11.1f} "
              f"{r.rss_connected_kib * 1024 / MB:>13.1f} {per_conn:>8.1f} "
              f"{pct(r.after_response_ms, 0.5):>7.1f} {pct(r.after_response_ms, 0.95):>7.1f} "
              f"{max(r.after_response_ms, default=float('nan')):>7.1f} {pct(r.last_node_ms, 0.5):>8.1f} "
              f"{pct(r.after_request_ms, 0.5):>12.1f} {r.missing:>7} {r.server_cpu_ms_per_task:>15.1f} "
              f"{r.client_cpu_share:>9.0%}")
    print()
    print("task.completed, ms from the last result's finish response to the researcher's websocket reading it")
    print(f"{'N':>6} {'p50':>7} {'p95':>7} {'max':>7} {'from req p50':>12} {'missing':>7}")
    for r in rounds:
        print(f"{r.nodes:>6} {pct(r.completed_ms, 0.5):>7.1f} {pct(r.completed_ms, 0.95):>7.1f} "
              f"{max(r.completed_ms, default=float('nan')):>7.1f} {pct(r.completed_after_request_ms, 0.5):>12.1f} "
              f"{r.completed_missing:>7}")
    if polling is not None:
        lat = polling.latencies_s
        print()
        print(f"polling instead: {polling.pollers} nodes listing their pending runs every {polling.interval:g} s "
              f"(phases spread over one interval), {len(lat)} sightings, {polling.missing} missed:")
        print(f"  s from the create response to the poll that found the run: p50 {pct(lat, 0.5):.1f}, "
              f"p95 {pct(lat, 0.95):.1f}, mean {sum(lat) / len(lat) if lat else float('nan'):.1f}, "
              f"max {max(lat, default=float('nan')):.1f} (uniform over the interval: mean {polling.interval / 2:g})")
    print()
    print("vantage6 4.15 researcher client, wait_for_results() defaults (computed, requests not counted): "
          + ", ".join(f"a task done after {d:g} s is seen {v6_wait_delay(d):.1f} s late" for d in (10, 60, 600)))

    ok = True
    print()
    by_n = {r.nodes: r for r in rounds}
    checks = []
    if 100 in by_n:
        checks.append((f"run.created p50 at N=100 < {GOAL_FANOUT_P50_MS:g} ms",
                       pct(by_n[100].after_response_ms, 0.5) < GOAL_FANOUT_P50_MS and not by_n[100].missing,
                       f"{pct(by_n[100].after_response_ms, 0.5):.1f} ms"))
    if 1000 in by_n:
        checks.append((f"RSS with 1000 connections < {GOAL_RSS_MB:g} MB",
                       by_n[1000].rss_connected_kib * 1024 / MB < GOAL_RSS_MB,
                       f"{by_n[1000].rss_connected_kib * 1024 / MB:.1f} MB"))
    for r in rounds:
        checks.append((f"task.completed p95 at N={r.nodes} < {GOAL_COMPLETED_P95_MS:g} ms",
                       pct(r.completed_ms, 0.95) < GOAL_COMPLETED_P95_MS and not r.completed_missing,
                       f"{pct(r.completed_ms, 0.95):.1f} ms"))
    for label, met, measured in checks:
        ok &= met
        print(f"  {'met ' if met else 'MISS'}  {label}: {measured}")
    return ok


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="10,100,1000",
                   help=f"comma-separated N, each a multiple of {ORGANIZATIONS} (default 10,100,1000)")
    p.add_argument("--tasks", type=int, help="timed task creations per N (default 30; --quick 10)")
    p.add_argument("--completions", type=int, help="timed task completions per N (default 20; --quick 5)")
    p.add_argument("--pollers", type=int, default=20, help="polling nodes in the comparison (default 20)")
    p.add_argument("--poll-interval", type=float,
                   help=f"seconds between a polling node's requests (default {V6_PING_INTERVAL_SECONDS}; --quick 10)")
    p.add_argument("--poll-tasks", type=int, default=3, help="tasks created while the pollers run (default 3)")
    p.add_argument("--no-polling", action="store_true", help="skip the polling comparison")
    p.add_argument("--quick", action="store_true", help="fewer tasks and a 10 s polling interval")
    p.add_argument("--gap", type=float, default=0.1, help="pause between timed operations, s (default 0.1)")
    p.add_argument("--connect-batch", type=int, default=50, help="websockets opened at once (default 50)")
    p.add_argument("--connect-timeout", type=float, default=120, help="time limit per batch of connections, s")
    p.add_argument("--event-timeout", type=float, default=10, help="time limit for one task's events, s")
    p.add_argument("--start-timeout", type=float, default=60, help="time limit for a server start, s")
    p.add_argument("--json", dest="json_out", help="also write the results to this file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (server logs, database)")
    p.add_argument("--_seed", dest="seed", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seed:
        return args
    try:
        args.nodes = [int(n) for n in args.nodes.split(",")]
    except ValueError:
        p.error("--nodes: comma-separated whole numbers")
    if any(n <= 0 or n % ORGANIZATIONS for n in args.nodes):
        p.error(f"--nodes: each N must be a positive multiple of {ORGANIZATIONS}")
    args.tasks = args.tasks or (10 if args.quick else 30)
    args.completions = args.completions or (5 if args.quick else 20)
    args.poll_interval = args.poll_interval or (10.0 if args.quick else float(V6_PING_INTERVAL_SECONDS))
    if args.pollers < 1 or args.poll_tasks < 1 or args.poll_interval <= 0:
        p.error("--pollers, --poll-tasks and --poll-interval must be positive")
    return args


def git_commit() -> str:
    head = REPO / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (REPO / ".git" / ref[5:]).read_text().strip()[:7]
        return ref[:7]
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.seed:
        seed(json.loads(args.seed))
        return 0

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="vantage-bench-events-"))
    meta = {"load_before": os.getloadavg()[0], "commit": git_commit(), "nodes": args.nodes, "tasks": args.tasks,
            "completions": args.completions, "poll_interval": args.poll_interval, "pollers": args.pollers}
    rounds: list[Round] = []
    polling = None
    server = None
    failed = True
    try:
        raise_fd_limit(2 * max(args.nodes) + 1024)
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "DJANGO_SETTINGS_MODULE": "vantage.settings",
            "VANTAGE_DATA_DIR": str(tmp),
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DEBUG": "false",
            "VANTAGE_ACCESS_TOKEN_MINUTES": "600",
            "VANTAGE_NODE_TOKEN_MINUTES": "600",
            "PYTHONPATH": str(REPO),
        }
        log("migrate")
        run_checked([str(VENV_PYTHON), "manage.py", "migrate", "--noinput", "-v", "0"], what="manage.py migrate",
                    timeout=300, env=env, cwd=REPO, logfile=tmp / "setup.log")
        per_org = max(args.nodes) // ORGANIZATIONS
        log(f"seeding {ORGANIZATIONS} organisations x {per_org} nodes, {args.pollers} polling nodes, a researcher")
        seed_file = tmp / "seed.json"
        run_checked([str(VENV_PYTHON), str(BENCH_DIR / "events.py"), "--_seed",
                     json.dumps({"per_org": per_org, "pollers": args.pollers, "out": str(seed_file)})],
                    what="seeding", timeout=900, env=env, cwd=REPO, logfile=tmp / "setup.log")
        seeded = json.loads(seed_file.read_text())
        for n in args.nodes:
            server = Server(args, env, tmp, f"n{n}")
            rounds.append(asyncio.run(measure_round(args, seeded, server, n)))
            server.stop()
        if not args.no_polling:
            log(f"polling comparison: {args.pollers} nodes every {args.poll_interval:g} s")
            server = Server(args, env, tmp, "polling")
            polling = asyncio.run(measure_polling(args, seeded, server))
            server.stop()
        ok = report(rounds, polling, args, meta)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({
                "meta": meta, "rounds": [r.summary() for r in rounds],
                "polling": None if polling is None else {
                    "interval": polling.interval, "pollers": polling.pollers, "missing": polling.missing,
                    "p50_s": pct(polling.latencies_s, 0.5), "p95_s": pct(polling.latencies_s, 0.95),
                    "samples": len(polling.latencies_s)},
            }, indent=2) + "\n")
        failed = False
        return 0 if ok else 1
    except BenchError as exc:
        if rounds:
            report(rounds, polling, args, meta)
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        failed = False
        return 130
    except Exception as exc:  # a bug or an unexpected answer: one line, details in a file
        import traceback

        (tmp / "traceback.txt").write_text(traceback.format_exc())
        print(f"bench: FAILED: unexpected {type(exc).__name__}: {exc} (traceback in {tmp}/traceback.txt)",
              file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
        if args.keep_tmp or failed:
            print(f"bench: logs and database kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
