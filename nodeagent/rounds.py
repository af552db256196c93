"""Round workers: one container per job at this node, serving that job's partial rounds.

A central method's rounds are subtasks, and each subtask run used to start a container
that imported its method anew for milliseconds of arithmetic (issue 18: 85-95 % of a
round). An image built on the toolkit may declare that its command can serve rounds:

    LABEL org.vantage.round-worker="1"

For such an image, a subtask run of job J (task tree J) at this node is not given a
container of its own: the node starts one container for J, the job's round worker, and
hands it each of J's partial rounds here one after another. Unmodified vantage6 images,
toolkit images without the label, central runs, and rounds a worker declines (a central
method in a subtask) keep one container per run exactly as before.

What stays the same for every round (RunJob does these steps, this module only replaces
"create, start and wait for the container"):
- policy and database checks before anything runs (the signature check and catalogue
  answer of the job's first round here hold for its later rounds while its worker lives:
  they run in the container started from that digest); the run's folder and state file;
  start and finish reported to the server; the kill and deadline of each run;
- the output: the worker's answer is written to the run's own output file and goes
  through the same checks (size, JSON, sealing) and the same output gate as a container's;
  what the round printed is that run's log.

The worker's isolation is a run container's (nodeagent/executor.py: network `none`, no
published port, read-only root, no capabilities, its limits, an unprivileged user) and it
sees only: the databases its job's subtasks asked for (read-only), its scratch tmpfs, and
one folder of its own, mounted read-only, in which the node listens on `round.sock`.
That folder lies in a private folder of the node's temporary directory
(`tempfile.mkdtemp`, 0700), not in the task folder, and the databases come from the
node's read-only data volumes (nodeagent/volumes.py), so that the worker, like a run
container, sees no path of the host's that names its operator or its data. The node is the listening side: the container can neither
write that folder nor make the node connect anywhere. No token, no proxy: partial methods
read their data and talk to no one.

Its life: started at the job's first round here; serves rounds of that job only, one at
a time; removed when
- the job ends (its central run finished at this node),
- it was idle `limits.round_worker_idle` seconds (the job ended elsewhere, or stalled),
- it has lived `limits.deadline` seconds (no container outlives a run's deadline),
- a round is killed or passes its deadline, or the worker dies, answers out of protocol
  or beyond limits.max_output (the round's outcome says which),
- another job needs a worker and the node already keeps max_concurrent_runs of them,
- the agent stops, and anything left over when an agent starts.
A round whose worker went away with the agent (phase `started`, no outcome) is served
again by the next agent: a partial round reads its data and has no other effect, and
nothing of it had left the node.

A standby worker takes the container start and the import out of a job's first round
here (1.5-2.5 s of a 3-4 s analysis on the study bench, where nothing else was left to
cut): once the node has been quiet for STANDBY_QUIET seconds (no run in progress, no
round for that long), it starts one worker, with the image and databases of the last job
that used a worker here, which serves no job. The next job whose round asks for that same
image id and those databases (after its own admission: signature, digest, catalogue) takes
it as its worker, and from then on it is that job's worker alone, living as any other;
unless a database file it mounts has changed since it started: then it goes, and the job
starts a worker that reads the new version.
Until then it has been sent nothing: no round, no input. One such standby per node at
most; it goes after `limits.round_worker_standby` seconds unused (0: never started), and
with the agent. A node's operator may also name images in node.toml (`[[standby]]`): the
agent admits each at its start as it would a job's image (policy, signature, digest,
catalogue) and keeps a standby ready for it while it runs, so that even the first job of
that image here starts no container. Standbys start one at a time, only while the node is
quiet; each adds one idle container to the max_concurrent_runs workers.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
from docker.models.containers import Container

from nodeagent import contract, volumes
from nodeagent import crypto as sealing
from nodeagent.executor import LABEL_SERVER, ContainerSpec, ExitInfo, StartupError, bind
from nodeagent.workspace import Outcome, Phase

log = logging.getLogger(__name__)

IMAGE_LABEL = "org.vantage.round-worker"  # vantage_algorithms/worker.py LABEL
PROTOCOL = "1"
SOCKET_ENV = "VANTAGE_ROUND_WORKER"
SOCKET_NAME = "round.sock"
MOUNT = "/mnt/rounds"
# Worker containers carry these instead of vantage.node_id/run_id: reconciling runs ignores them.
LABEL_ROUND_NODE = "vantage.round_worker_node"
LABEL_JOB = "vantage.job_id"
STATE_KEY = "round_worker"  # in RunState.run: the run was handed to a round worker
CLOSE_WAIT = 10  # seconds an agent's stop waits for a standby being started (its start sees the stop)
STANDBY_QUIET = 1.0  # seconds without a round or run here before a standby starts: it must not slow one
READY_SECONDS = 120  # create, start, import: a bare container start can take 10 s on a loaded host
TICK = 0.25  # seconds between looks at kill requests and deadlines while a round runs
MAX_HEADER = 64 * 1024
MAX_LOG_FRAME = 1024**2  # one piece of what a round prints (the worker sends lines, or 64 KiB)
# Frame kinds (vantage_algorithms/worker.py): 4 bytes length, 1 byte kind, payload.
HELLO, ROUND, INPUT, LOG, ANSWER, OUTPUT = b"H", b"R", b"I", b"L", b"A", b"O"
_LENGTH = struct.Struct(">I")


class _Gone(Exception):
    """The worker hung up or broke the protocol."""

    def __init__(self, why: str, *, hung_up: bool = False):
        super().__init__(why)
        self.hung_up = hung_up


class _Stopped(Exception):
    """Kill, deadline or the agent stopping interrupted the round."""


@dataclass
class RoundWorker:
    key: tuple  # (job, image id, database labels); job None for a standby
    job_id: int | None
    name: str
    dir: Path
    listener: socket.socket | None = None
    conn: socket.socket | None = None
    container: Container | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one round at a time
    started: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    rounds: int = 0
    gone: bool = False
    volumes: tuple[str, ...] | None = None  # the data volumes it mounts (set as it is created)

    def idle_for(self, now: float) -> float:
        return now - self.last_used


def served_by_worker(run_state) -> bool:
    """The run was handed to a round worker (RunJob._to_outcome serves it again after a restart)."""
    return bool(run_state.run.get(STATE_KEY))


def job_ended_by(job) -> int | None:
    """The job a finished run ends: its own, when it is the job's central run (a task
    without a parent). Its workers here go at once rather than after their idle limit."""
    if job.state.phase != Phase.FINISHED:
        return None
    task = job._task()
    if _id(task.get("parent")) is not None:
        return None
    return _id(task.get("job"))


def _bind(listener: socket.socket, path: Path) -> None:
    """Bind to path, also where it is longer than a socket address may be (108 bytes):
    through the folder's descriptor, which names the same place in fewer bytes."""
    if len(os.fsencode(str(path))) < 100:
        listener.bind(str(path))
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listener.bind(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


def _id(value) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class RoundWorkers:
    """This node's round workers, at most one per (job, image, databases)."""

    def __init__(self, *, executor, config, server_key: str, node_id: int, name_prefix: str,
                 stop: threading.Event, data_volumes: volumes.DataVolumes | None = None, folder: Path | None = None,
                 busy=lambda: False):
        self.executor = executor
        self.config = config
        self.data_volumes = data_volumes
        # The workers' socket folders: private to the agent's user (0700), named by nothing
        # but the agent's temporary directory, and gone when the agent stops.
        self.folder = folder or Path(tempfile.mkdtemp(prefix="vantage-rounds-"))
        self.server_key = server_key
        self.node_id = node_id
        self.name_prefix = name_prefix
        self.stop = stop
        self.idle_limit = config.limits.round_worker_idle
        self.enabled = self.idle_limit > 0
        self.standby_seconds = config.limits.round_worker_standby if self.enabled else 0
        self.busy = busy  # () -> bool: a run is in progress at this node (then no standby starts)
        self._standbys: dict[tuple, RoundWorker] = {}  # (image id, labels) → a standby, ready or starting
        self._wanted: tuple | None = None  # (image id, labels) of the last job given a worker here
        self._kept: list[tuple] = []  # (image id, labels) of node.toml's [[standby]], admitted at the start
        self._workers: dict[tuple, RoundWorker] = {}
        self._opted_in: dict[str, bool] = {}  # image id → declares the label (image ids name content)
        self._failed: set[tuple] = set()  # (job, image, databases) whose worker did not start: containers
        self._admissions: dict[tuple, object] = {}  # (job, task image) → signatures.Admitted
        self._lock = threading.Lock()
        self._starting: list[threading.Thread] = []  # standbys' start threads, waited for by close()
        self._closed = False
        self._count = 0
        self._reaper: threading.Thread | None = None

    # ---------------------------------------------------------------- life

    def clear_leftovers(self) -> None:
        """Workers of an agent that stopped or died: nothing may outlive its agent."""
        for container in self.executor.docker.containers.list(
                all=True, filters={"label": [f"{LABEL_SERVER}={self.server_key}",
                                             f"{LABEL_ROUND_NODE}={self.node_id}"]}):
            log.info("round worker %s from an earlier agent: removed", container.name)
            self.executor.remove(container)
        # Their folders, not ours: the folder itself stays, private, and is not made again.
        for leftover in self.folder.glob("*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def start_reaper(self) -> None:
        if self.enabled and self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="round-workers", daemon=True)
            self._reaper.start()

    def close(self) -> None:
        """The agent stops: every worker goes (its rounds are served again by the next agent).
        A standby still starting is waited for (at most CLOSE_WAIT s): its container must not
        be created after the agent has gone."""
        with self._lock:
            self._closed = True
            workers, self._workers = list(self._workers.values()), {}
            workers += self._standbys.values()
            self._standbys = {}
            starting, self._starting = self._starting, []
        for worker in workers:
            self._retire(worker, "the node agent stops")
        deadline = time.monotonic() + CLOSE_WAIT
        for thread in starting:
            thread.join(max(0.0, deadline - time.monotonic()))
        shutil.rmtree(self.folder, ignore_errors=True)

    def job_ended(self, job_id: int) -> None:
        with self._lock:
            ended = [w for w in self._workers.values() if w.job_id == job_id]
        for worker in ended:
            self._retire_when_idle(worker, "its job ended")

    def _reap(self) -> None:
        while not self.stop.wait(1.0):
            now = time.monotonic()
            with self._lock:
                workers = list(self._workers.values())
                live = {w.job_id for w in workers}
                for key in [k for k in self._admissions if k[0] not in live]:
                    del self._admissions[key]
                if len(self._failed) > 1000:  # jobs long over: a later round may try a worker again
                    self._failed.clear()
                # Taken from the pool under the lock, so that no job can take it meanwhile. A
                # [[standby]] of node.toml is kept ready for as long as the agent runs.
                expired = [standby for key, standby in self._standbys.items()
                           if key not in self._kept and not standby.lock.locked()
                           and standby.idle_for(now) >= self.standby_seconds]
                for standby in expired:
                    del self._standbys[standby.key[1:]]
                    if self._wanted == standby.key[1:]:
                        self._wanted = None  # unused: no other until a job uses a worker here again
            for worker in workers:
                if worker.idle_for(now) >= self.idle_limit:
                    self._retire_when_idle(worker, f"idle for {self.idle_limit} s")
                elif now - worker.started >= self.config.limits.deadline:
                    self._retire_when_idle(worker, f"it has lived limits.deadline ({self.config.limits.deadline} s)")
            for standby in expired:
                self._retire(standby, f"no job took it in {self.standby_seconds} s")
            self._replenish(now)

    # ---------------------------------------------------------------- the standbys

    def keep_standby(self, image_id: str, labels: tuple[str, ...]) -> bool:
        """Keep a standby ready for this image and these databases while the agent runs
        (node.toml's [[standby]], admitted by the agent first). False: the image does not
        declare the round-worker protocol (or round workers are off), so it gets none."""
        if not self.enabled or not self.opted_in(image_id):
            return False
        with self._lock:
            if (image_id, labels) not in self._kept:
                self._kept.append((image_id, labels))
        return True

    def _wanted_keys(self) -> list[tuple]:
        """What the standbys should be: node.toml's, then the last job's. Called with self._lock held."""
        last = [self._wanted] if self.standby_seconds > 0 and self._wanted not in (None, *self._kept) else []
        return [*self._kept, *last]

    def _replenish(self, now: float) -> None:
        """Start a missing standby, once the node is quiet: one at a time, so that an agent
        keeping several does not start them all at once on the CPUs its runs need."""
        if self.stop.is_set():
            return
        with self._lock:
            wanted = self._wanted_keys()
            if all(key in self._standbys for key in wanted):
                return
            if any(w.lock.locked() or w.idle_for(now) < STANDBY_QUIET for w in self._workers.values()):
                return
        if self.busy():
            return
        with self._lock:
            wanted = self._wanted_keys()
            if self._closed or any(standby.lock.locked() for standby in self._standbys.values()):
                return  # the agent stops, or one is still starting
            # The last job's image replaces that of a job before it that no job asked for since.
            old = [standby for key, standby in self._standbys.items() if key not in wanted]
            for standby in old:
                del self._standbys[standby.key[1:]]
            missing = [key for key in wanted if key not in self._standbys]
            if missing:
                self._count += 1
                worker = RoundWorker(key=(None, *missing[0]), job_id=None,
                                     name=f"{self.name_prefix}-standby{self._count}",
                                     dir=self.folder / f"worker{self._count}-standby")
                self._standbys[missing[0]] = worker
                worker.lock.acquire()  # until it is ready: a job taking it meanwhile waits for it
                thread = threading.Thread(target=self._start_standby, args=(worker,), name="round-standby",
                                          daemon=True)
                self._starting = [t for t in self._starting if t.is_alive()] + [thread]
                thread.start()  # under the lock: close() never finds it listed and not yet started
        for standby in old:
            self._retire(standby, "a standby for the last job's image replaces it")

    def _start_standby(self, worker: RoundWorker) -> None:
        failure = self._start_or_retire(worker)
        if failure is not None:
            with self._lock:
                kept = worker.key[1:] in self._kept
                if kept:  # not tried every second: the agent's next start tries again
                    self._kept.remove(worker.key[1:])
            log.warning("round worker standby %s did not start (%s); none again until %s", worker.name, failure,
                        "the agent restarts" if kept else "a job uses a worker here")

    def _take_standby(self, key: tuple, job_id: int) -> RoundWorker | None:
        """The standby, now the worker of this job, if it has this round's image and databases.
        Called with self._lock held; a standby still starting keeps its lock until it is ready."""
        standby = self._standbys.get(key[1:])
        if standby is None or standby.gone:
            return None
        del self._standbys[key[1:]]
        if standby.volumes is not None and standby.volumes != self.data_volumes.current(self.config.databases,
                                                                                        key[2]):
            # A database file changed since it started: the job reads the new version, in a new
            # worker; the next standby mounts it too.
            threading.Thread(target=self._retire, args=(standby, "a database it mounts changed since it started"),
                             daemon=True).start()
            return None
        standby.key, standby.job_id = key, job_id
        # Its life as the job's worker (idle limit, limits.deadline) counts from now.
        standby.started = standby.last_used = time.monotonic()
        self._workers[key] = standby
        log.info("round worker %s, a standby, now serves job %s", standby.name, job_id)
        return standby

    def _retire_when_idle(self, worker: RoundWorker, why: str) -> None:
        if worker.lock.acquire(blocking=False):
            try:
                self._retire(worker, why)
            finally:
                worker.lock.release()

    def _retire(self, worker: RoundWorker, why: str) -> None:
        with self._lock:
            if self._workers.get(worker.key) is worker:
                del self._workers[worker.key]
            if self._standbys.get(worker.key[1:]) is worker:
                del self._standbys[worker.key[1:]]
            if not any(w.job_id == worker.job_id for w in self._workers.values()):
                for key in [k for k in self._admissions if k[0] == worker.job_id]:
                    del self._admissions[key]
        if worker.gone:
            return
        worker.gone = True
        for sock in (worker.conn, worker.listener):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        if worker.container is not None:
            self.executor.remove(worker.container)
        shutil.rmtree(worker.dir, ignore_errors=True)
        log.info("round worker %s (%s) removed after %d round(s): %s", worker.name,
                 "standby" if worker.job_id is None else f"job {worker.job_id}", worker.rounds, why)

    # ---------------------------------------------------------------- which runs

    def _job_of(self, job) -> int | None:
        """The job (task tree) of a subtask run; None for a job's own central run."""
        task = job._task()
        if _id(task.get("parent")) is None:
            return None
        return _id(task.get("job"))

    def opted_in(self, image_id: str) -> bool:
        known = self._opted_in.get(image_id)
        if known is None:
            try:
                labels = self.executor.docker.api.inspect_image(image_id).get("Config", {}).get("Labels") or {}
            except docker.errors.APIError as exc:
                log.warning("image %s could not be inspected for its round-worker label: %s", image_id, exc)
                return False
            known = self._opted_in[image_id] = labels.get(IMAGE_LABEL) == PROTOCOL
        return known

    def admit(self, job, image, admit):
        """`admit()` (signatures.admit) for this run, or, when its job's worker here is alive,
        what admit() decided for the job's earlier round: every run of a job names the same
        image (the server takes a subtask's from its parent), and the round runs in the
        worker's container, whose image is the one admitted then. The registry requests of
        a signature check (and the catalogue's answer) are not repeated every round."""
        job_id = self._job_of(job) if self.enabled else None
        if job_id is None:
            return admit()
        key = (job_id, str(image))
        with self._lock:
            cached = self._admissions.get(key)
            live = any(w.job_id == job_id for w in self._workers.values())
        if cached is not None and live:
            return cached
        admitted = admit()
        job.round_admission = (key, admitted)  # kept for the job's next rounds once a worker serves this one
        return admitted

    def may_serve(self, job) -> bool:
        """Before the image is at hand: will this run likely go to a worker already running?
        (Then RunJob does not fetch a container token it would not use.)"""
        if not self.enabled or sealing.is_encrypted(job.state.run):
            return False
        job_id = self._job_of(job)
        with self._lock:
            return job_id is not None and any(w.job_id == job_id for w in self._workers.values())

    # ---------------------------------------------------------------- serving

    def serve(self, job, image_id: str, labels: list[str]) -> bool:
        """Serve this run in its job's worker. True: its outcome is decided (or the agent is
        stopping and the next one serves it); False: give it a container of its own."""
        job_id = self._job_of(job)
        if not self.enabled or job_id is None or not self.opted_in(image_id):
            return False
        if sealing.is_encrypted(job.state.run) and not job._token_ready(None):
            return True  # the key the output is sealed for could not be had: outcome decided
        key = (job_id, image_id, tuple(sorted(labels)))
        if key in self._failed:
            return False
        for _attempt in range(2):  # a worker found dead before the round was handed over: one more
            worker = self._worker_for(key, job_id, job)
            if worker is None:
                return self.stop.is_set()  # stopping: the next agent takes the run from its state file
            while not worker.lock.acquire(timeout=TICK):  # another round of this job runs here
                if self.stop.is_set():
                    return True
                if job._kill_requested.is_set():
                    job._decide(Outcome("killed", None, "killed", "kill requested before the round started"))
                    return True
            try:
                if worker.gone:
                    continue
                handled = self._round(worker, job)
                admission = getattr(job, "round_admission", None)
                if handled and admission is not None and not worker.gone:
                    with self._lock:
                        self._admissions.setdefault(*admission)
                if handled is not None:
                    return handled
            finally:
                worker.last_used = time.monotonic()
                worker.lock.release()
        return False

    def _worker_for(self, key: tuple, job_id: int, job) -> RoundWorker | None:
        with self._lock:
            worker = self._workers.get(key)
            if worker is not None:
                return worker
            if len(self._workers) >= self.config.limits.max_concurrent_runs and not self._evict_locked():
                return None  # every worker is busy with a round: this run gets a container
            self._wanted = key[1:]
            worker = self._take_standby(key, job_id)
            if worker is not None:
                return worker
            self._count += 1
            worker = RoundWorker(key=key, job_id=job_id, name=f"{self.name_prefix}-job{job_id}-worker{self._count}",
                                 dir=self.folder / f"worker{self._count}-job{job_id}")
            self._workers[key] = worker
            worker.lock.acquire()  # until it is ready: other rounds of the job wait for it
        failure = self._start_or_retire(worker, failed=key)
        if failure is not None:
            log.warning("run %s: no round worker (%s); the job's runs here get containers of their own",
                        job.run_id, failure)
            return None
        return worker

    def _start_or_retire(self, worker: RoundWorker, *, failed: tuple | None = None) -> StartupError | None:
        """Start a worker whose lock the caller holds, and release it; one that cannot start
        is retired, its (job, image, databases) `failed` noted, and no standby of it follows."""
        try:
            self._start(worker)
            return None
        except StartupError as exc:
            with self._lock:
                if failed is not None:
                    self._failed.add(failed)
                if self._wanted == worker.key[1:]:
                    self._wanted = None
            self._retire(worker, "it did not start")
            return exc
        finally:
            worker.last_used = time.monotonic()
            worker.lock.release()

    def _evict_locked(self) -> bool:
        idle = sorted((w for w in self._workers.values() if not w.lock.locked()), key=lambda w: w.last_used)
        if not idle:
            return False
        victim = idle[0]
        del self._workers[victim.key]
        threading.Thread(target=self._retire, args=(victim, "another job needed a worker"), daemon=True).start()
        return True

    def _start(self, worker: RoundWorker) -> None:
        try:
            self._start_container(worker)
        except (OSError, docker.errors.APIError, volumes.VolumeError) as exc:
            raise StartupError(f"the round worker could not start: {exc}")

    def _start_container(self, worker: RoundWorker) -> None:
        worker.dir.mkdir(mode=0o700, exist_ok=True)
        # The worker's unprivileged user enters the folder (read-only in the container) and connects.
        worker.dir.chmod(0o755)
        path = worker.dir / SOCKET_NAME
        worker.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _bind(worker.listener, path)
        os.chmod(path, 0o666)
        worker.listener.listen(1)
        spec = self._spec(worker)
        worker.container = self.executor.create(spec)
        if worker.gone:  # retired meanwhile (the agent stops): nothing may outlive it
            self.executor.remove(worker.container)
            raise StartupError("the round worker was removed while it started")
        self.executor.start(worker.container)
        worker.started = time.monotonic()
        deadline = worker.started + READY_SECONDS
        worker.listener.settimeout(0.5)
        while worker.conn is None:
            try:
                worker.conn, _ = worker.listener.accept()
            except socket.timeout:
                if self.stop.is_set() or time.monotonic() > deadline:
                    raise StartupError("the round worker did not connect in time")
                if self.executor.exit_info(worker.container) is not None:
                    raise StartupError("the round worker exited before it was ready")
        worker.listener.close()  # one connection, ever: a second one could not be the worker's
        worker.listener = None
        try:
            hello = json.loads(self._recv(worker, HELLO, MAX_HEADER,
                                          lambda: self._startup_check(worker, deadline)))
        except (_Gone, _Stopped, ValueError) as exc:
            raise StartupError(f"the round worker did not say it was ready ({exc or type(exc).__name__})")
        if not isinstance(hello, dict) or str(hello.get("ready")) != PROTOCOL:
            raise StartupError("the round worker speaks another protocol")
        log.info("round worker %s (%s) ready in %.2f s", worker.name,
                 "standby" if worker.job_id is None else f"job {worker.job_id}",
                 time.monotonic() - worker.started)

    def _startup_check(self, worker: RoundWorker, deadline: float) -> None:
        if self.stop.is_set() or time.monotonic() > deadline:
            raise _Stopped("startup")

    def _spec(self, worker: RoundWorker) -> ContainerSpec:
        labels = list(worker.key[2])  # sorted: a standby has no job's own order to keep
        config = self.config
        data, data_mounts = self.data_volumes.mounts(config.databases, labels, worker.key[1])
        worker.volumes = tuple(mount["Source"] for mount in data)
        mounts = [bind(str(worker.dir), MOUNT, read_only=True), *data]
        environment = contract.container_environment(config, labels, data_mounts)
        environment[SOCKET_ENV] = contract.encode_value(f"{MOUNT}/{SOCKET_NAME}")
        return ContainerSpec(
            name=worker.name, image=worker.key[1], environment=environment,
            labels={LABEL_SERVER: self.server_key, LABEL_ROUND_NODE: str(self.node_id),
                    # A standby's says "standby": a container's labels cannot change when a job takes it.
                    LABEL_JOB: "standby" if worker.job_id is None else str(worker.job_id)},
            mounts=mounts, network_mode="none", scratch=contract.TEMP_PATH,
        )

    # ---------------------------------------------------------------- one round

    def _round(self, worker: RoundWorker, job) -> bool | None:
        """None: the worker was found gone before the round was handed over (try another)."""
        if self._hung_up(worker):
            self._retire(worker, "it exited while idle")
            return None
        # One state write before the worker has the round: a restarted agent serves it again.
        job.state.run[STATE_KEY] = worker.name
        if job.state.phase != Phase.STARTED:  # reported at the first look, or with the finish
            job._enter_started(time.time())
        job.folder.save(job.state)
        try:
            payload = job.folder.input.read_bytes()
            self._send(worker, ROUND, json.dumps({"run": job.run_id}).encode())
            self._send(worker, INPUT, payload)
        except OSError:
            self._retire(worker, "it hung up")
            return None
        worker.rounds += 1
        # The start is reported only if the round is still running at the first look (TICK):
        # a quick round's finish carries its start and digest instead (one request less per
        # site and round).
        interrupt = lambda: self._check(worker, job)  # noqa: E731
        try:
            header = json.loads(self._answer(worker, job, interrupt))
            if not isinstance(header, dict) or header.get("run") != job.run_id:
                raise _Gone("answered another round")
            if "decline" in header:
                log.info("run %s: the round worker declined it (%s); the run gets a container of its own",
                         job.run_id, str(header["decline"])[:200])
                job.state.run.pop(STATE_KEY, None)
                job.folder.save(job.state)
                return False
            code = header.get("exit_code")
            if not isinstance(code, int) or isinstance(code, bool):
                raise _Gone("no exit code")
            too_large = self._recv_output(worker, job, interrupt)
        except _Stopped:
            if self.stop.is_set() and job._kill_reason is None:
                self._retire(worker, "the node agent stops")
                return True  # the state file keeps the round for the next agent
            self._retire(worker, f"its round was stopped ({job._kill_reason})")
            job._decide(job._outcome(ExitInfo(exit_code=137, oom_killed=False, error="")), gated=True)
            return True
        except (_Gone, OSError, ValueError) as exc:
            why = str(exc) or type(exc).__name__
            if self.stop.is_set():  # the stopping agent closed it: the round is the next agent's
                self._retire(worker, "the node agent stops")
                return True
            # A worker that hung up is ending: its exit code and OOM flag say why, as a container's would.
            exit_info = self._exit_of(worker) if isinstance(exc, _Gone) and exc.hung_up else None
            self._retire(worker, f"it ended during a round ({why})")
            if exit_info is not None and exit_info.exit_code != 0:
                outcome = job._outcome(exit_info)
            else:
                outcome = Outcome("crashed", exit_info.exit_code if exit_info else None, "algorithm",
                                  f"[node] the round worker ended this round without an answer ({why})")
            job._decide(outcome, gated=True)
            return True
        if too_large:
            self._retire(worker, "its output was larger than limits.max_output")
            limit = self.config.limits.max_output
            job._decide(Outcome("crashed", code, "algorithm",
                                f"[node] the algorithm exited with code {code}\n"
                                f"[node] it tried to write a file larger than {limit} bytes (limits.max_output)"),
                        gated=True)
            return True
        job._decide(job._outcome(ExitInfo(exit_code=code, oom_killed=False, error="")), gated=True)
        return True

    def _check(self, worker: RoundWorker, job) -> None:
        """Between reads: what a container's supervision looks at (nodeagent/job.py)."""
        if self.stop.is_set():
            raise _Stopped("stop")
        reason = job._tick(worker.container, "round worker")
        if reason:
            raise _Stopped(reason)

    def _hung_up(self, worker: RoundWorker) -> bool:
        try:
            readable, _, _ = select.select([worker.conn], [], [], 0)
            if not readable:
                return False
            return worker.conn.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _exit_of(self, worker: RoundWorker) -> ExitInfo | None:
        """How the worker's container ended (it may take the engine a moment to say)."""
        for _ in range(20):
            try:
                info = self.executor.exit_info(worker.container)
            except docker.errors.APIError:
                return None
            if info is not None:
                return info
            time.sleep(0.1)
        return None

    # ---------------------------------------------------------------- frames

    def _send(self, worker: RoundWorker, kind: bytes, payload: bytes) -> None:
        worker.conn.settimeout(30)
        worker.conn.sendall(_LENGTH.pack(len(payload) + 1) + kind)
        worker.conn.sendall(payload)

    def _recv_exactly(self, worker: RoundWorker, size: int, interrupt, sink=None) -> bytes:
        conn = worker.conn
        conn.settimeout(TICK)
        chunks, left = [], size
        while left:
            try:
                chunk = conn.recv(min(left, 1024 * 1024))
            except socket.timeout:
                interrupt()
                continue
            if not chunk:
                raise _Gone("it hung up", hung_up=True)
            left -= len(chunk)
            if sink is None:
                chunks.append(chunk)
            else:
                sink(chunk)
        return b"".join(chunks)

    def _frame(self, worker: RoundWorker, interrupt) -> tuple[bytes, int]:
        """The next frame's kind and payload length."""
        head = self._recv_exactly(worker, _LENGTH.size + 1, interrupt)
        (size,) = _LENGTH.unpack(head[:_LENGTH.size])
        if size < 1:
            raise _Gone("an empty frame")
        return head[_LENGTH.size:], size - 1

    def _recv(self, worker: RoundWorker, kind: bytes, limit: int, interrupt) -> bytes:
        got, size = self._frame(worker, interrupt)
        if got != kind or size > limit:
            raise _Gone(f"a frame of kind {got!r} and {size} bytes where {kind!r} was due")
        return self._recv_exactly(worker, size, interrupt)

    def _answer(self, worker: RoundWorker, job, interrupt) -> bytes:
        """The round's answer; what it prints until then goes to the run's log as it comes."""
        while True:
            kind, size = self._frame(worker, interrupt)
            if kind == LOG and size <= MAX_LOG_FRAME:
                self._recv_exactly(worker, size, interrupt, sink=job.logs.feed)
            elif kind == ANSWER and size <= MAX_HEADER:
                return self._recv_exactly(worker, size, interrupt)
            else:
                raise _Gone(f"a frame of kind {kind!r} and {size} bytes where an answer was due")

    def _recv_output(self, worker: RoundWorker, job, interrupt) -> bool:
        """Into the run's own output file; True (and nothing written) when it is larger than
        limits.max_output, as RLIMIT_FSIZE stops a container writing more."""
        kind, size = self._frame(worker, interrupt)
        if kind != OUTPUT:
            raise _Gone(f"a frame of kind {kind!r} where the output was due")
        if size > self.config.limits.max_output:
            return True
        with open(job.folder.output, "wb") as fh:
            self._recv_exactly(worker, size, interrupt, sink=fh.write)
        return False
