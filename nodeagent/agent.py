"""The node agent's loop: connect, reconcile, then claim and hand out runs.

The loop itself does little: it asks the server for pending runs when it has a free
slot, claims them one by one (the server's compare-and-swap decides between nodes),
and gives each claimed run to a RunJob thread. Jobs tell the loop when they free a
slot, so the next run is claimed at once rather than at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time

import docker.errors

from nodeagent import VERSION, rounds, signatures
from nodeagent.airlock import RELEASED, REJECTED, Airlock
from nodeagent.client import ServerClient, ServerRefused, ServerUnavailable
from nodeagent.config import NodeConfig
from nodeagent.events import EventListener
from nodeagent.executor import LABEL_RUN, Executor, ImageError
from nodeagent.forwarders import ForwarderPool
from nodeagent.gate import Thresholds
from nodeagent.job import AgentContext, RunJob, backoff
from nodeagent.policy import image_refusal
from nodeagent.rounds import RoundWorkers, job_ended_by
from nodeagent.volumes import VolumeError
from nodeagent.workspace import Phase, TaskFolder

log = logging.getLogger(__name__)

REPORT_INTERVAL = 60.0
# Listing runs and kill requests while the websocket is up only guards against a lost event.
CONNECTED_POLL_SECONDS = 60.0
STOP_JOIN_SECONDS = 10.0
PENDING_PAGE = 100  # pending runs asked for at once; a full page says there may be more


class FatalError(Exception):
    """The agent cannot go on (refused API key, task folder in use)."""


class NodeAgent:
    def __init__(self, config: NodeConfig, stop: threading.Event, *, client: ServerClient | None = None,
                 executor: Executor | None = None):
        self.config = config
        self.stop = stop
        self.client = client or ServerClient(config.server.url, config.server.api_key)
        self.executor = executor
        self.task_folder = TaskFolder(config.task_folder)
        self.jobs: dict[int, RunJob] = {}
        self._jobs_lock = threading.Lock()
        self._wake = threading.Event()
        self._hints: list[int] = []
        self._list_requested = False  # by wake(): list pending runs at once
        self._slot_freed = False
        # Pending runs may be waiting for a slot (a listing or an event left some unclaimed):
        # only then is a freed slot worth a listing while the websocket brings new runs.
        self._backlog = True
        self.ctx: AgentContext | None = None
        self.events: EventListener | None = None
        self._next_report = 0.0
        self._sweeper: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def run(self) -> None:
        if self.executor is None:
            try:
                self.executor = Executor(limits=self.config.limits, registries=self.config.registries,
                                         pool_size=4 * self.config.limits.max_concurrent_runs + 8)
            except docker.errors.DockerException as exc:
                raise FatalError(f"no Docker engine answers: {exc}")
        try:
            self.task_folder.open()
        except RuntimeError as exc:
            raise FatalError(str(exc))
        try:
            node = self._connect()
            if node is None:
                return
            self.ctx = self._context(node["id"])
            log.info("node %s (organisation %s, collaboration %s) connected to %s",
                     node["id"], node.get("organization"), node.get("collaboration"), self.config.server.url)
            policy = self.config.policy
            if policy.require_signature and not policy.trusted_keys:
                # An older node.toml: it still loads, and says why every run will be rejected.
                log.warning("policy.require_signature is on%s and no trusted_keys are set: every run will be "
                            "rejected until [policy] trusted_keys names the reviewers' public keys "
                            "(or require_signature = false runs unsigned images, as before)",
                            "" if policy.require_signature_set else " (the default since signed images came in)")
            self._reconcile()
            # Forwarders for the free slots start while the loop claims: a run arriving
            # first waits for one of them rather than starting one more.
            threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
            if self.config.server.websocket:
                self.events = EventListener(client=self.client, stop=self.stop, on_new_run=self.hint_run,
                                            on_reconnect=self._reconnected, on_kill=self.request_kill, backoff=backoff)
                self.events.start()
            self._loop()
        finally:
            self._wind_down()
            if self.ctx is not None:
                self.ctx.forwarders.close()
                self.ctx.rounds.close()
            self.task_folder.close()

    def _warm_up(self) -> None:
        """Forwarders for the free slots, then the database files in their volumes, then the
        [[standby]] images admitted and pulled: all would otherwise be made by the first runs
        that need them. A database copied in the first round of a job cost that round
        0.4-0.6 s at each site (issue 18); the copy is made once per version of the file, and
        a run still makes it if this one failed."""
        self.ctx.forwarders.warm(self.config.limits.max_concurrent_runs)
        for label in self.config.databases:
            if self.stop.is_set():
                return
            try:
                # Any local image backs the never-started container that fills a volume: the
                # forwarder's is at hand now.
                self.ctx.data_volumes.mounts(self.config.databases, [label], self.config.forwarder_image)
            except VolumeError as exc:
                log.warning("database %s could not be copied into its volume ahead of the first run: %s", label, exc)
        for standby in self.config.standbys:
            if self.stop.is_set():
                return
            why = self._keep_standby(standby)
            if why:
                log.warning("no standby worker for image %s: %s", standby.image, why)

    def _keep_standby(self, standby) -> str | None:
        """Admit a [[standby]] image as a job's image would be admitted (the parts of the
        policy that do not depend on who sends the task, the signature, the catalogue),
        pull it, and have the round workers keep a standby ready for it. Every job that
        takes it is still admitted on its own first. The reason it gets none, or None."""
        why = image_refusal(self.config.policy, standby.image)
        if why:
            return f"refused by this node's policy: {why}"
        try:
            admitted = signatures.admit(self.config.policy, self.config.registries, standby.image,
                                        self.client.catalogue_status)
            image_id = self.executor.ensure_image(admitted.image)
        except signatures.Rejected as exc:
            return f"refused by this node's policy: {exc}"
        except (signatures.Unavailable, ImageError) as exc:
            return str(exc)
        except (ServerUnavailable, ServerRefused) as exc:
            return f"the catalogue could not be asked: {exc}"
        if not self.ctx.rounds.keep_standby(image_id, standby.databases):
            return (f"it does not declare the round-worker label ({rounds.IMAGE_LABEL}={rounds.PROTOCOL}), "
                    "so its runs get a container each")
        log.info("standby worker kept ready for image %s (%s), databases %s", admitted.image, image_id[:19],
                 ", ".join(standby.databases))
        return None

    def _context(self, node_id: int) -> AgentContext:
        server_key = AgentContext.key_of(self.config.server.url)
        pool = ForwarderPool(executor=self.executor, folder=self.task_folder.forwarders,
                             image=self.config.forwarder_image, port=self.config.proxy_port, server_key=server_key,
                             node_id=node_id, name_prefix=AgentContext.prefix_of(server_key, node_id))
        pool.adopt()
        ctx = AgentContext(config=self.config, client=self.client, executor=self.executor, node_id=node_id,
                           stop=self.stop, forwarders=pool)
        ctx.rounds = RoundWorkers(executor=self.executor, config=self.config, server_key=server_key, node_id=node_id,
                                  name_prefix=ctx.name_prefix, stop=self.stop, data_volumes=ctx.data_volumes,
                                  busy=self._running)
        ctx.rounds.clear_leftovers()  # before any run resumes: no worker outlives its agent
        ctx.rounds.start_reaper()
        return ctx

    def _connect(self) -> dict | None:
        """Authenticate and read our node record, waiting out an unreachable server."""
        attempt = 0
        while not self.stop.is_set():
            try:
                self.client.authenticate()
                node = self.client.me()
                self._report()
                return node
            except ServerUnavailable as exc:
                attempt += 1
                delay = backoff(attempt)
                log.warning("server unreachable (%s); retrying in %.1f s", exc, delay)
                self.stop.wait(delay)
            except ServerRefused as exc:
                raise FatalError(f"the server refused this node: {exc}")
        return None

    def _report(self) -> None:
        self.client.report({**self.config.summary(), "version": VERSION})
        self._next_report = time.monotonic() + REPORT_INTERVAL

    def _loop(self) -> None:
        """Claim when a slot is free (at each poll, at once when an event names a run, and
        when a job frees a slot that runs may wait for); watch for kill requests more often
        than that while containers run; send what the steward decided every kill_poll_interval."""
        failures = 0
        next_poll = next_kill_watch = next_sweep = 0.0
        settings = self.config.server
        while not self.stop.is_set():
            self._wake.clear()
            with self._jobs_lock:
                list_requested, self._list_requested = self._list_requested, False
                slot_freed, self._slot_freed = self._slot_freed, False
            now = time.monotonic()
            try:
                if now >= self._next_report:
                    self._report()
                # While the websocket delivers events, polling is only the last resort.
                live = self.events is not None and self.events.connected.is_set()
                if now >= next_sweep:
                    # Local work, websocket or not: a steward's decision must not wait for the
                    # next kill listing, which a live websocket makes rare.
                    next_sweep = now + settings.kill_poll_interval
                    self._sweep_airlock()
                if now >= next_kill_watch:
                    next_kill_watch = now + max(settings.kill_poll_interval, CONNECTED_POLL_SECONDS if live else 0)
                    self._watch_kills()
                hinted = self._take_hints()
                must_list = list_requested or now >= next_poll or (slot_freed and (self._backlog or not live))
                if hinted and not must_list:
                    self._backlog |= self._claim(hinted)  # told by an event: no need to list
                elif must_list:
                    next_poll = now + max(settings.poll_interval, CONNECTED_POLL_SECONDS if live else 0)
                    left = self._claim(hinted)
                    self._backlog = self._claim_what_fits() or left
                failures = 0
                wait = max(0.0, min(next_poll, next_kill_watch, next_sweep) - time.monotonic())
            except ServerUnavailable as exc:
                failures += 1
                wait = backoff(failures)
                next_poll = time.monotonic() + wait
                log.warning("server unreachable (%s); next try in %.1f s", exc, wait)
            except ServerRefused as exc:
                failures += 1
                wait = backoff(failures)
                next_poll = time.monotonic() + wait
                log.error("the server refused a request: %s", exc)
            self._wake.wait(wait)

    def _sweep_airlock(self) -> None:
        """Send what the steward decided (and reject, as not reviewed, what waited past
        hold_timeout), in a thread of its own: a large release must not hold up claims."""
        if self._sweeper is not None and self._sweeper.is_alive():
            return

        def sweep():
            airlock = Airlock(self.config.state_dir)
            try:
                airlock.expire(timeout=self.config.output.hold_timeout)
                min_cell = Thresholds.from_env(self.config.algorithm_env).min_cell
                for meta in airlock.entries():
                    if self.stop.is_set():
                        return
                    if meta["state"] in (RELEASED, REJECTED) and meta.get("server_url") == self.config.server.url:
                        airlock.deliver(meta["name"], self.client, min_cell=min_cell)
            except Exception:
                log.exception("the airlock sweep failed; it is tried again at the next one")

        self._sweeper = threading.Thread(target=sweep, name="airlock", daemon=True)
        self._sweeper.start()

    def _watch_kills(self) -> None:
        """One listing per state for all of this node's runs, instead of one request per run."""
        with self._jobs_lock:
            watched = {run_id: job for run_id, job in self.jobs.items() if job.holds_slot}
        if not watched:
            return
        for status in ("claimed", "running"):
            for run in self.client.list_runs(status=status, node=self.ctx.node_id):
                job = watched.get(run["id"])
                if job is not None and run.get("kill_requested"):
                    job.request_kill()

    def _running(self) -> bool:
        """A run is in progress here (round workers start no standby then)."""
        return self._free_slots() < self.config.limits.max_concurrent_runs

    def _free_slots(self) -> int:
        with self._jobs_lock:
            busy = sum(1 for job in self.jobs.values() if job.holds_slot)
        return self.config.limits.max_concurrent_runs - busy

    def _claim_what_fits(self) -> bool:
        """True when pending runs may be left waiting for a slot."""
        if self._free_slots() <= 0:
            return True
        pending = self.client.pending_runs(limit=PENDING_PAGE)
        return self._claim([run["id"] for run in pending]) or len(pending) == PENDING_PAGE

    def _claim(self, run_ids: list[int]) -> bool:
        """Claim these runs while slots are free; True when some were left for want of one."""
        for run_id in run_ids:
            if self.stop.is_set() or self._free_slots() <= 0:
                return True
            if run_id in self.jobs:
                continue
            claimed = self.client.claim(run_id)
            if claimed is None:
                continue  # another node of this organisation won it, or it was killed
            log.info("run %s: claimed", run_id)
            self._start(RunJob.claimed(self.ctx, self.task_folder.run(run_id), claimed))
        return False

    def hint_run(self, run_id: int) -> None:
        """An event named a new run: claim it without listing first."""
        with self._jobs_lock:
            self._hints.append(run_id)
        self._wake.set()

    def _take_hints(self) -> list[int]:
        with self._jobs_lock:
            hints, self._hints = self._hints, []
        return hints

    def _start(self, job: RunJob) -> None:
        with self._jobs_lock:
            self.jobs[job.run_id] = job
        job.start_thread(self._job_done)

    def _job_done(self, job: RunJob) -> None:
        with self._jobs_lock:
            self.jobs.pop(job.run_id, None)
            self._slot_freed = True
        self._wake.set()
        ended = job_ended_by(job)
        if ended is not None and self.ctx is not None:
            self.ctx.rounds.job_ended(ended)

    def wake(self) -> None:
        """List pending runs at once (the websocket is back: events may have been missed)."""
        with self._jobs_lock:
            self._list_requested = True
        self._wake.set()

    def _reconnected(self) -> None:
        """The websocket is back: catch up on missed runs, and send the outcomes held meanwhile."""
        self.wake()
        if self.ctx is not None:
            self.ctx.server_back.announce()

    def request_kill(self, run_id: int) -> None:
        with self._jobs_lock:
            job = self.jobs.get(run_id)
        if job is not None:
            job.request_kill()

    def _wind_down(self) -> None:
        """Let job threads notice the stop flag: they leave containers running and keep
        their state files, for the next agent to pick up."""
        self._wake.set()
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        for job in list(self.jobs.values()):
            if job.thread is not None:
                job.thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------- reconcile

    def _reconcile(self) -> None:
        """Continue what an earlier agent left: containers by label, folders by state file.

        A run whose container exists is never started again; a run with a decided
        outcome is only uploaded; a run that never got a container starts now.
        """
        node_id = self.ctx.node_id
        containers = {
            c.labels.get(LABEL_RUN): c for c in self.executor.node_containers(self.ctx.server_key, node_id)
        }
        for folder in self.task_folder.known_runs():
            containers.pop(str(folder.run_id), None)
            try:
                state = folder.load()
            except (OSError, ValueError, TypeError) as exc:
                log.error("run %s: unreadable state file (%s); its folder stays for inspection", folder.run_id, exc)
                continue
            log.info("run %s: resuming (phase %s)", folder.run_id, state.phase)
            job = RunJob(self.ctx, folder, state)
            if state.slot is not None and state.phase != Phase.FINISHED:
                # Its container may run in that slot's namespace: no other run may borrow it.
                job.slot = self.ctx.forwarders.reserve(state.slot, state.run_id)
            self._start(job)
        for run_id, container in containers.items():
            # A container of ours without a folder: its files are gone, it cannot report.
            log.error("container %s has no run folder; stopping and removing it", container.name)
            self.executor.remove(container)
            if run_id and run_id.isdigit():
                self._fail_orphan(int(run_id), "the node lost this run's folder; its container was removed")
        self._fail_lost_runs()

    def _fail_lost_runs(self) -> None:
        """Runs the server says this node holds, of which nothing is left here."""
        for status in ("claimed", "running"):
            try:
                runs = self.client.list_runs(status=status, node=self.ctx.node_id)
            except (ServerUnavailable, ServerRefused) as exc:
                log.warning("could not list %s runs to reconcile: %s", status, exc)
                return
            for run in runs:
                if run.get("node") == self.ctx.node_id and run["id"] not in self.jobs:
                    self._fail_orphan(run["id"], "this node holds the run but has no trace of it here (its agent "
                                                 "stopped before preparing it, or its task folder was lost)")

    def _fail_orphan(self, run_id: int, reason: str) -> None:
        self._start(RunJob.failed(self.ctx, self.task_folder.run(run_id), run_id, reason))
