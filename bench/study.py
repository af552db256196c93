#!/usr/bin/env python3
"""Study benchmark: how long a researcher waits for a federated answer, against its floor.

    .venv/bin/python bench/study.py                 # both data sets, every analysis once
    .venv/bin/python bench/study.py --only gbsg2    # the demo study only (or --only lung)
    .venv/bin/python bench/study.py --method cox    # one analysis (on both data sets)
    .venv/bin/python bench/study.py --repeat 3      # median of three runs per analysis
    .venv/bin/python bench/study.py --standby last  # no [[standby]] in node.toml: the last job's image only
    .venv/bin/python bench/study.py --standby none  # the agents keep no standby round worker (--no-standby)

Runs the demo study's three analyses (demo/study.py: summary statistics, Kaplan–Meier
by hormonal therapy with the log-rank test, the Cox model stratified by hospital) on
the demo's three GBSG2 sites, and the same three on a 4-site split of the NCCTG lung
cancer data (bench/data/lung, see bench/README.md for its source), through a real
server, real node agents (`manage.py run_node`) and real containers: the live harness
of tests/nodeagent/live.py, in a temporary folder, on loopback.

Per analysis it prints:
  wall     from the researcher's create request until the central run is completed (the
           server's own finish time: the researcher's client hears it over its websocket,
           so the bench looks only every WATCH_POLL s and loads the server no more than it)
  rounds   subtasks the central method created
  starts   containers the nodes started for it (the central run's, and one per subtask
           run or, for images that opt in to round workers, one per job and node: Docker's
           own start events for the agents' containers, counted while the analysis ran; a
           standby worker a node started after the previous job is not among them)
  floor    one bare `docker run --rm --network none` of the same image per site, all at
           once, plus the method's pure computation with the local harness
           (vantage_algorithms.harness.run_local, in this process, imports already done)
  ratio    wall / floor
and the median seconds per subtask run from creation to claim, claim to container start
and start to finish, which say where a round's time goes. Each run of an analysis begins
on a quiet machine (SETTLE_*: what the agents do after a job, such as starting a standby
round worker, must not fall into the next run's bare starts or computation).

The federated answer is compared with the local harness's answer on the same files:
any difference above 1e-9 (relative) fails the benchmark.

Needs the Docker engine, registry and base image of `scripts/docker-env.sh up`.
Bounded: every wait has a deadline; the server, agents and containers are stopped and
removed on exit or Ctrl-C. Exit status 0 done, 2 failure (one line `bench: FAILED: ...`,
the temporary folder with the logs is kept), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

try:
    import docker
    import docker.errors
except ImportError:  # started with a Python other than the project's: use the project's
    if VENV_PYTHON.exists() and Path(sys.executable) != VENV_PYTHON:
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), *sys.argv])
    raise

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "algorithms"))

from bench._live import BenchError, log, run, shut_down, wait_listening  # noqa: E402
from nodeagent.job import AgentContext  # noqa: E402
from tests.nodeagent import images  # noqa: E402
from tests.nodeagent.live import LiveServer, NodeProcess, Researcher  # noqa: E402

FINAL = {"completed", "failed", "crashed", "killed", "rejected", "timed_out"}
TASK_TIMEOUT = 600.0
# Seconds between the bench's looks at the central run. It polled every 20 ms until
# 7 Dec 2026 (bench/README.md, third study session): 50 requests a second through the
# same server, on the same two cores as the analysis, which a researcher's client (told
# by websocket) does not cost.
WATCH_POLL = 0.25
BARE_TIMEOUT = 120.0
GBSG2_DIR = REPO / "demo" / "data" / "gbsg2"
LUNG_DIR = REPO / "bench" / "data" / "lung"
# The demo network's limits and disclosure policy (demo/network.py), except that a node
# may run the central method and its partials at once on the bench's fourth site too.
LIMITS = "max_concurrent_runs = 4"
ALGORITHM_ENV = {"VANTAGE_MIN_ROWS": "10", "VANTAGE_MIN_CELL": "5", "VANTAGE_MIN_EVENTS": "10",
                 "VANTAGE_MIN_RISKSET_LEAVERS": "5"}
# Agents hear of new runs over the websocket, as deployed nodes do; polling is the safety net.
AGENT_SERVER_SETTINGS = "poll_interval = 5\nkill_poll_interval = 5"
AGREEMENT = 1e-9
# Before each run: SETTLE_AFTER s for the agents' work after a job (a standby worker starts
# once a node has been quiet for a second), then until the CPUs are below SETTLE_BUSY for
# half a second, at most SETTLE_TIMEOUT s.
SETTLE_AFTER = 2.5
SETTLE_BUSY = 0.25
SETTLE_TIMEOUT = 20.0
STANDBY_SHOWN = {"named": "the analyses' images, named in node.toml", "last": "the last job's image",
                 "none": "none"}
STANDBY_TIMEOUT = 300.0  # --standby named: up to six per node, started one after another


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def settle() -> None:
    """Wait until the machine is quiet (at most SETTLE_TIMEOUT seconds)."""
    started = time.monotonic()
    time.sleep(SETTLE_AFTER)
    while time.monotonic() - started < SETTLE_TIMEOUT:
        busy, total = cpu_times()
        time.sleep(0.5)
        busy2, total2 = cpu_times()
        if total2 > total and (busy2 - busy) / (total2 - total) < SETTLE_BUSY:
            return


@dataclass(frozen=True)
class Analysis:
    dataset: str
    image: str
    kwargs: dict

    @property
    def name(self) -> str:
        return f"{self.dataset} {self.image}"


def analyses() -> list[Analysis]:
    from demo import study  # the demo's own analyses, so the bench measures exactly those

    demo = [Analysis("gbsg2", a.name, a.kwargs) for a in study.analyses()]
    lung = [
        Analysis("lung", "summary", {"columns": ["age", "ph_ecog", "ph_karno", "wt_loss", "time", "sex"],
                                     "categorical": ["sex"]}),
        Analysis("lung", "kaplan_meier", {"duration": "time", "event": "status", "group": "sex"}),
        Analysis("lung", "cox", {"duration": "time", "event": "status", "covariates": ["age", "sex", "ph_ecog"],
                                 "categories": {"sex": ["male", "female"]}, "ties": "efron",
                                 "model": "stratified", "baseline": False}),
    ]
    return demo + lung


def site_files() -> dict[str, list[Path]]:
    gbsg2 = sorted(GBSG2_DIR.glob("*.csv"))
    lung = sorted(LUNG_DIR.glob("*.csv"))
    if len(gbsg2) != 3 or len(lung) != 4:
        raise BenchError(f"expected 3 GBSG2 and 4 lung site files in {GBSG2_DIR} and {LUNG_DIR}")
    return {"gbsg2": gbsg2, "lung": lung}


@dataclass
class Measured:
    wall: list[float] = field(default_factory=list)
    rounds: int = 0
    starts: int = 0
    bare: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def floor(self) -> float:
        return statistics.median(self.bare) + statistics.median(self.compute)

    @property
    def ratio(self) -> float:
        return statistics.median(self.wall) / self.floor


def differences(federated, local, path: str = "") -> list[str]:
    """Where two JSON answers differ beyond AGREEMENT (relative), as readable paths."""
    if isinstance(federated, dict) and isinstance(local, dict):
        if set(federated) != set(local):
            return [f"{path or 'top'}: keys {sorted(set(federated) ^ set(local))}"]
        return [d for key in federated for d in differences(federated[key], local[key], f"{path}.{key}")]
    if isinstance(federated, list) and isinstance(local, list):
        if len(federated) != len(local):
            return [f"{path}: {len(federated)} vs {len(local)} items"]
        return [d for i, (a, b) in enumerate(zip(federated, local)) for d in differences(a, b, f"{path}[{i}]")]
    if isinstance(federated, (int, float)) and isinstance(local, (int, float)) \
            and not isinstance(federated, bool) and not isinstance(local, bool):
        if math.isclose(federated, local, rel_tol=AGREEMENT, abs_tol=AGREEMENT):
            return []
        return [f"{path}: {federated!r} vs {local!r}"]
    return [] if federated == local else [f"{path}: {federated!r} vs {local!r}"]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.label = f"vantage.bench={uuid.uuid4().hex[:12]}"
        self.client: docker.DockerClient | None = None
        self.server: LiveServer | None = None
        self.nodes: list[NodeProcess] = []
        self.images: dict[str, str] = {}

    # --- set-up and clean-up -------------------------------------------------------

    def build_images(self, names: set[str]) -> None:
        import build

        try:
            built = build.build(sorted(names))
        except build.BuildError as exc:
            raise BenchError(f"algorithms/build.py: {exc}")
        self.images = {name: entry.reference for name, entry in built.items()}

    def start_network(self, files: dict[str, list[Path]], chosen: list[Analysis]) -> dict:
        registry = images.registry()
        self.server = LiveServer(self.workdir)
        self.server.env["VANTAGE_ACCESS_TOKEN_MINUTES"] = "240"
        self.server.setup()
        world = self.server.seed("world", n_orgs=4, prefix="study-")
        policy = "\n".join(f'{key} = "{value}"' for key, value in ALGORITHM_ENV.items())
        named = []  # per node, how many standbys its node.toml names
        for index, entry in enumerate(world["nodes"]):
            folder = self.workdir / f"data-{index}"
            folder.mkdir()
            databases = {}
            for label, paths in files.items():
                if index < len(paths):  # the demo's GBSG2 has three sites; the fourth node has lung only
                    target = folder / f"{label}.csv"
                    shutil.copyfile(paths[index], target)
                    target.chmod(0o644)  # the algorithm runs as nobody
                    databases[label] = target
            limits = LIMITS + ("\nround_worker_standby = 0" if self.args.standby == "none" else "")
            # What a site that runs these methods names in its node.toml, as the demo
            # network's nodes do: a standby for each image, for the data set its jobs read.
            standbys = [f'{{image = "{self.images[a.image]}", databases = ["{a.dataset}"]}}'
                        for a in chosen if a.dataset in databases] if self.args.standby == "named" else []
            self.nodes.append(NodeProcess(self.workdir, f"node-{index}", server_url=self.server.url,
                                          api_key=entry["api_key"], registry=registry, databases=databases,
                                          limits=limits, algorithm_env=policy, server=AGENT_SERVER_SETTINGS,
                                          top=f"standby = [{', '.join(standbys)}]"))
            named.append(len(standbys))
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            wait_listening(node, timeout=90)
        self.wait_for_standbys(named)
        return world

    def wait_for_standbys(self, named: list[int]) -> None:
        """Until every node has started the standbys its node.toml names (`named`: how many,
        node by node; each node starts them one at a time)."""
        deadline = time.monotonic() + STANDBY_TIMEOUT
        for node, count in zip(self.nodes, named):
            while node.log().count("(standby) ready in") < count:
                if "no standby worker for image" in node.log():
                    raise BenchError(f"{node.dir.name} keeps no standby for an image it names; see {node.log_path}")
                if time.monotonic() > deadline:
                    raise BenchError(f"the nodes' standby workers not ready in {STANDBY_TIMEOUT:.0f} s; "
                                     f"logs in {self.workdir}")
                time.sleep(0.2)

    def close(self) -> None:
        shut_down(self.nodes, self.server, self.client, self.label)

    # --- measurements --------------------------------------------------------------

    def bare(self, image: str, sites: int) -> float:
        """One `docker run --network none` of the image per site, all at once, until all exited."""
        command = ["docker", "run", "--rm", "--network", "none", "--label", self.label, "--entrypoint", "true", image]
        started = time.monotonic()
        processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for _ in range(sites)]
        for process in processes:
            try:
                _, err = process.communicate(timeout=BARE_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise BenchError(f"docker run took longer than {BARE_TIMEOUT:.0f} s")
            if process.returncode != 0:
                raise BenchError(f"docker run exited with {process.returncode}: {err.strip()[-300:]}")
        return time.monotonic() - started

    def local(self, analysis: Analysis, paths: list[Path], organizations: list[int]) -> tuple[float, dict]:
        from vantage_algorithms.harness import run_local

        # The network's organisation ids, so the answers compare field by field.
        sites = {org: str(path) for org, path in zip(organizations, paths)}
        env = {org: ALGORITHM_ENV for org in sites}
        started = time.perf_counter()
        result = run_local(f"reference.{analysis.image}", analysis.image, kwargs=analysis.kwargs, sites=sites,
                           env=env)
        return time.perf_counter() - started, result

    def watch_starts(self) -> tuple[threading.Thread, list, object]:
        """Count the containers the agents start from now on, from Docker's event stream
        (live: the engine keeps only its last few hundred events for later queries)."""
        server_key = AgentContext.key_of(self.server.url)
        stream = self.client.events(decode=True, filters={
            "type": "container", "event": "start", "label": f"vantage.server={server_key}"})
        seen: list = []

        def collect():
            try:
                for event in stream:
                    if not event.get("Actor", {}).get("Attributes", {}).get("vantage.forwarder_slot"):
                        seen.append(event)
            except Exception:  # closed below
                pass

        thread = threading.Thread(target=collect, daemon=True)
        thread.start()
        return thread, seen, stream

    @staticmethod
    def stop_watching(watch) -> int:
        thread, seen, stream = watch
        time.sleep(0.3)  # the last start's event is on its way
        stream.close()
        thread.join(timeout=5)
        return len(seen)

    def federated(self, researcher: Researcher, world: dict, analysis: Analysis,
                  sites: int) -> tuple[float, dict, int, dict]:
        """Wall seconds from the create request to the completed central run; its result; task
        id; the central run as the server shows it."""
        organizations = world["organizations"]
        kwargs = {**analysis.kwargs, "organizations": organizations[:sites]}
        started = time.time()  # the server's run times are the same machine's clock
        task = researcher.create_task(collaboration=world["collaboration"], image=self.images[analysis.image],
                                      method=analysis.image, organizations=organizations[:1], kwargs=kwargs,
                                      databases=[{"label": analysis.dataset}])
        run_id = task["runs"][0]["id"]
        deadline = time.monotonic() + TASK_TIMEOUT
        while (detail := researcher.run(run_id))["status"] not in FINAL:
            if time.monotonic() > deadline:
                raise BenchError(f"{analysis.name}: task {task['id']} still {detail['status']} after "
                                 f"{TASK_TIMEOUT:.0f} s; logs in {self.workdir}")
            time.sleep(WATCH_POLL)
        wall = datetime.fromisoformat(detail["finished_at"]).timestamp() - started
        if detail["status"] != "completed":
            raise BenchError(f"{analysis.name}: task {task['id']} ended {detail['status']}: "
                             f"{(detail.get('log') or '').strip()[-400:]}")
        return wall, researcher.result(run_id), task["id"], detail

    def subtask_runs(self, researcher: Researcher, task_id: int) -> tuple[int, list[dict]]:
        response = researcher.api("GET", f"tasks/?parent={task_id}&page_size=1000")
        if response.status_code != 200:
            raise BenchError(f"listing the subtasks of task {task_id}: HTTP {response.status_code}")
        children = response.json()["results"]
        runs = []
        for order, child in enumerate(sorted(children, key=lambda c: c["id"])):
            runs += [{**r, "round": order, "round_created_at": child["created_at"]} for r in researcher.runs(child["id"])]
        return len(children), runs

    @staticmethod
    def phases(runs: list[dict], central: dict) -> dict[str, float]:
        spans = {"claim": ("created_at", "claimed_at"), "start": ("claimed_at", "started_at"),
                 "run": ("started_at", "finished_at")}
        found = {}
        for name, (a, b) in spans.items():
            values = [(datetime.fromisoformat(r[b]) - datetime.fromisoformat(r[a])).total_seconds()
                      for r in runs if r.get(a) and r.get(b)]
            if values:
                found[name] = statistics.median(values)
        # The central method's share between rounds: from the last site's result of one
        # round to the creation of the next (its polling, reading the results, its arithmetic).
        last_finished: dict[int, datetime] = {}
        created: dict[int, datetime] = {}
        for r in runs:
            if r.get("finished_at"):
                at = datetime.fromisoformat(r["finished_at"])
                last_finished[r["round"]] = max(at, last_finished.get(r["round"], at))
            created[r["round"]] = datetime.fromisoformat(r["round_created_at"])
        gaps = [(created[k + 1] - last_finished[k]).total_seconds() for k in last_finished if k + 1 in created]
        if gaps:
            found["between"] = statistics.median(gaps)
        # Where the central run's time went: until its first subtask (its own start), the first
        # round (the sites' workers or containers starting), the later rounds, and after the
        # last round (its last step, output, upload).
        if created and last_finished and central.get("created_at") and central.get("finished_at"):
            first, last = min(created), max(last_finished)
            found["lead"] = (created[first] - datetime.fromisoformat(central["created_at"])).total_seconds()
            found["round1"] = (last_finished[first] - created[first]).total_seconds()
            found["later"] = (last_finished[last] - last_finished[first]).total_seconds()
            found["tail"] = (datetime.fromisoformat(central["finished_at"]) - last_finished[last]).total_seconds()
        return found

    # --- main ------------------------------------------------------------------------

    def run(self) -> dict[str, Measured]:
        self.client = images.docker_client()
        files = site_files()
        chosen = [a for a in analyses() if self.args.only in (None, a.dataset)
                  and self.args.method in (None, a.image)]
        log(f"building the algorithm images ({', '.join(sorted({a.image for a in chosen}))})")
        self.build_images({a.image for a in chosen})
        log(f"starting a server and 4 node agents in {self.workdir}")
        world = self.start_network({label: paths for label, paths in files.items()}, chosen)
        researcher = Researcher(self.server, world["user"]["username"], world["user"]["password"])
        results: dict[str, Measured] = {}
        log(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
            f"{self.args.repeat} run(s) per analysis, bare starts and computation alternating with them; "
            f"standby workers: {STANDBY_SHOWN[self.args.standby]}")
        # Warm-up, not counted: every image once (first start of an image on a node, page cache).
        for image in sorted({a.image for a in chosen}):
            self.bare(self.images[image], 1)
        for analysis in chosen:
            paths = files[analysis.dataset]
            measured = results[analysis.name] = Measured()
            self.local(analysis, paths, world["organizations"])  # warm: imports and file cache, so the floor is the computation
            for _ in range(self.args.repeat):
                settle()
                measured.bare.append(self.bare(self.images[analysis.image], len(paths)))
                seconds, local_result = self.local(analysis, paths, world["organizations"])
                measured.compute.append(seconds)
                watch = self.watch_starts()
                wall, result, task_id, central = self.federated(researcher, world, analysis, len(paths))
                starts = self.stop_watching(watch)
                measured.wall.append(wall)
                wrong = differences(result, local_result)
                if wrong:
                    raise BenchError(f"{analysis.name}: the federated answer differs from the local harness: "
                                     + "; ".join(wrong[:3]))
                measured.rounds, runs = self.subtask_runs(researcher, task_id)
                measured.starts = starts
                measured.phases = self.phases(runs, central)
            walls = " ".join(f"{w:.2f}" for w in measured.wall)
            log(f"  {analysis.name:<20} wall {statistics.median(measured.wall):6.2f} s  rounds {measured.rounds:2d}  "
                f"floor {measured.floor:5.2f} s  ratio {measured.ratio:5.1f}  (answer equal to the local harness; "
                f"walls in order: {walls} s)")
        return results


def report(results: dict[str, Measured]) -> None:
    log("")
    log(f"{'analysis':<20} {'wall s':>7} {'rounds':>6} {'starts':>6} {'bare s':>7} {'compute s':>9} "
        f"{'floor s':>7} {'ratio':>6}   per subtask run (median): claim / start / run s; between rounds s")
    for name, m in results.items():
        phases = " / ".join(f"{m.phases.get(k, float('nan')):.2f}" for k in ("claim", "start", "run", "between"))
        log(f"{name:<20} {statistics.median(m.wall):7.2f} {m.rounds:6d} {m.starts:6d} "
            f"{statistics.median(m.bare):7.2f} {statistics.median(m.compute):9.3f} {m.floor:7.2f} "
            f"{m.ratio:6.1f}   {phases}")
    log("")
    log(f"{'analysis':<20} the central run's time, s: to its first subtask / round 1 / later rounds / after the last")
    for name, m in results.items():
        log(f"{name:<20} " + " / ".join(f"{m.phases.get(k, float('nan')):.2f}" for k in ("lead", "round1", "later", "tail")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("gbsg2", "lung"), help="one data set only")
    parser.add_argument("--method", choices=("summary", "kaplan_meier", "cox"), help="one analysis only")
    parser.add_argument("--repeat", type=int, default=1, help="runs per analysis; the median is shown (default 1)")
    parser.add_argument("--standby", choices=("named", "last", "none"), default="named",
                        help="named (default): every node.toml names the analyses' images as [[standby]], as "
                             "the demo network's do, so a first run starts no round worker; last: only a "
                             "standby for the last job's image; none: round_worker_standby = 0")
    parser.add_argument("--no-standby", dest="standby", action="store_const", const="none",
                        help="the same as --standby none")
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (logs) even on success")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be from 1 to 20")

    workdir = Path(tempfile.mkdtemp(prefix="vantage-bench-study-"))
    bench = Bench(args, workdir)

    def measure() -> int:
        results = bench.run()
        report(results)
        if args.json:
            args.json.write_text(json.dumps({name: {**m.__dict__, "floor": m.floor, "ratio": m.ratio}
                                             for name, m in results.items()}, indent=2))
        return 0

    return run(measure, bench.close, workdir, keep_tmp=args.keep_tmp)


if __name__ == "__main__":
    sys.exit(main())
