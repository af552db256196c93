"""One run's life on the node, in its own thread.

    claimed → policy → image → files → container → supervise → outcome → upload → clean up

Each step that must survive a restart is written to the run's state file first
(workspace.RunState), so a restarted agent continues where this one stopped and a
container is created at most once per run: `resume()` picks the step from the state
file and from the container found under the run's fixed name.

The agent stopping (SIGTERM) does not stop algorithms: the thread leaves the container
running and the state file in place, and the next agent re-attaches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

from docker.models.containers import Container

from nodeagent import contract, signatures, volumes
from nodeagent import crypto as sealing
from nodeagent import gate
from nodeagent.client import Conflict, NotFound, ServerClient, ServerRefused, ServerUnavailable
from nodeagent.config import NodeConfig
from nodeagent.executor import (
    LABEL_NODE, LABEL_RUN, LABEL_SERVER, LABEL_TASK, ContainerSpec, Executor, ExitInfo, ImageError, StartupError,
)
from nodeagent.forwarders import ForwarderPool, Slot
from nodeagent.images import BadReference, ImageRef
from nodeagent.logbuffer import LogBuffer
from nodeagent.outputs import output_gate, report_held
from nodeagent.policy import refusal
from nodeagent.proxy import RunProxy
from nodeagent.rounds import RoundWorkers, served_by_worker
from nodeagent.workspace import Outcome, Phase, RunFolder, RunState

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between looks at a running container
# json.load holds ~27 times the size of an output like `[[],[],...]`: small outputs are
# checked here (at most ~30 MB), larger ones in a child process whose address space is
# capped, so an output built to blow up the parser costs the host JSON_CHECK_MEMORY at most.
IN_PROCESS_JSON_BYTES = 1024 * 1024
JSON_CHECK_MEMORY = 1024**3
JSON_CHECK_TIMEOUT = 600
LOG_BATCH_CHARS = 64 * 1024  # one POST /log/ at most
RETRY_BASE, RETRY_MAX = 1.0, 30.0


class ServerBack:
    """Told when the websocket connects again, so that outcomes held through a server
    outage go at once rather than at their next retry, up to RETRY_MAX later."""

    def __init__(self):
        self._changed = threading.Condition()
        self.count = 0

    def announce(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float, stop: threading.Event) -> None:
        """Until `timeout` has passed, the server came back after `seen`, or stop is set."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.count == seen and not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(min(left, 0.5))  # stop is an Event of its own: look at it twice a second


@dataclass
class AgentContext:
    """What every job shares with the agent."""

    config: NodeConfig
    client: ServerClient
    executor: Executor
    node_id: int
    stop: threading.Event
    forwarders: ForwarderPool
    server_back: ServerBack = field(default_factory=ServerBack)
    rounds: RoundWorkers | None = None  # nodeagent/rounds.py: one container per job for opted-in images

    @staticmethod
    def key_of(server_url: str) -> str:
        """Short and stable per server URL: node and run ids are only unique per server."""
        return hashlib.sha256(server_url.encode()).hexdigest()[:10]

    @staticmethod
    def prefix_of(server_key: str, node_id: int) -> str:
        return f"vantage-{server_key}-node{node_id}"

    @property
    def server_key(self) -> str:
        return self.key_of(self.config.server.url)

    @property
    def name_prefix(self) -> str:
        return self.prefix_of(self.server_key, self.node_id)

    def container_name(self, run_id: int) -> str:
        return f"{self.name_prefix}-run{run_id}"

    @cached_property
    def data_volumes(self) -> volumes.DataVolumes:
        """The node's database files in read-only volumes, shared by its runs (nodeagent/volumes.py)."""
        return volumes.DataVolumes(self.executor.docker.api, state_dir=self.config.state_dir,
                                   labels={LABEL_SERVER: self.server_key, LABEL_NODE: str(self.node_id)})


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: spreads the retries of many runs (and nodes)
    over time instead of all hitting a server that just came back at once."""
    ceiling = min(RETRY_MAX, RETRY_BASE * 2 ** min(attempt, 10))
    return ceiling * (0.5 + random.random() / 2)


class RunJob:
    def __init__(self, ctx: AgentContext, folder: RunFolder, state: RunState, *, input_bytes: bytes | None = None):
        self.ctx = ctx
        self.folder = folder
        self.state = state
        self.input_bytes = input_bytes
        self.logs = LogBuffer()
        self.uploading = False
        self.thread: threading.Thread | None = None
        self._kill_reason: str | None = None
        self._start_reported = state.phase != Phase.PREPARED
        self._kill_requested = threading.Event()
        self._next_log_flush_try = 0.0
        self._log_failures = 0
        self.proxy: RunProxy | None = None
        self.slot: Slot | None = None

    @property
    def run_id(self) -> int:
        return self.state.run_id

    @property
    def holds_slot(self) -> bool:
        """A job waiting only to upload does not count against max_concurrent_runs."""
        return not self.uploading

    # ---------------------------------------------------------------- entry points

    @classmethod
    def claimed(cls, ctx: AgentContext, folder: RunFolder, run: dict) -> RunJob:
        """A run this agent just claimed: decode its input, keep the rest in the state file."""
        encoded = run.get("input") or ""
        info = {k: v for k, v in run.items() if k != "input"}
        state = RunState(run_id=run["id"], container_name=ctx.container_name(run["id"]), run=info)
        try:
            input_bytes = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            input_bytes = None
        return cls(ctx, folder, state, input_bytes=input_bytes)

    @classmethod
    def failed(cls, ctx: AgentContext, folder: RunFolder, run_id: int, reason: str) -> RunJob:
        """A run this node cannot carry out any more; the job only reports that."""
        job = cls(ctx, folder, RunState(run_id=run_id, container_name=ctx.container_name(run_id)))
        job._decide(Outcome("failed", None, "internal", reason))
        return job

    def start_thread(self, on_done) -> None:
        def body():
            try:
                self.execute()
            except Exception:
                log.exception("run %s: unexpected error in the node agent", self.run_id)
            finally:
                on_done(self)

        self.thread = threading.Thread(target=body, name=f"run-{self.run_id}", daemon=True)
        self.thread.start()

    def execute(self) -> None:
        """Carry the run from wherever its state file says it is to the end."""
        try:
            if self.state.phase != Phase.FINISHED:
                self._to_outcome()
        except Exception as exc:  # the node's own fault: report it rather than leave the run hanging
            log.exception("run %s: internal error", self.run_id)
            self._decide(Outcome("failed", None, "internal", f"node internal error: {type(exc).__name__}: {exc}"))
            self._remove_container_before_release()
        finally:
            self._close_proxy()
            if self.state.phase == Phase.FINISHED:
                self._release_slot()
        if self.state.phase == Phase.FINISHED and not self.ctx.stop.is_set():
            self.uploading = True
            self._upload()

    # ---------------------------------------------------------------- steps

    def _to_outcome(self) -> None:
        # A run claimed just now (its input still in memory) has no container yet.
        container = None if self.input_bytes is not None else self.ctx.executor.find(self.state.container_name)
        if container is None:
            if self.state.phase == Phase.STARTED and not served_by_worker(self.state):
                self._decide(Outcome("failed", None, "internal",
                                     "the container of this run disappeared while the node agent was away"))
                return
            container = self._launch()
            if container is None:
                return
        elif self.state.phase == Phase.PREPARED:
            # A container from before a restart, perhaps never started: its token file may
            # still be empty.
            if not self._token_ready(None):
                self.ctx.executor.remove(container)
                return
            self._adopt(container)
            if self.state.phase != Phase.STARTED:
                return
        else:
            # A container from before a restart: its forwarder still relays to this socket path.
            self._open_proxy()
        self._supervise(container)

    def _launch(self) -> Container | None:
        """Policy, image, files, container: every failure here is a final outcome."""
        task = self._task()
        if self.input_bytes is None and not self.folder.input.exists():
            self._decide(Outcome("failed", None, "internal", "the run's input is not valid base64"))
            return None
        try:
            image = ImageRef.parse(task.get("image") or "", digest=task.get("digest") or "")
        except BadReference as exc:
            self._decide(Outcome("failed", None, "image", f"the task's image cannot be used: {exc}"))
            return None
        created_by = task.get("created_by")
        why = refusal(
            self.ctx.config.policy, image=image, init_organization=_id(task.get("init_organization")),
            created_by=_id(created_by), created_by_username=_username(task, created_by),
        )
        if why:
            self._decide(Outcome("rejected", None, "policy", f"refused by this node's policy: {why}"))
            return None
        try:
            # Before anything is pulled: the digest is resolved here and is what runs.
            def admit() -> signatures.Admitted:
                return signatures.admit(self.ctx.config.policy, self.ctx.config.registries, image,
                                        self.ctx.client.catalogue_status)

            # A round its job's worker here serves runs in the container admitted at its start.
            admitted = self.ctx.rounds.admit(self, image, admit) if self.ctx.rounds is not None else admit()
        except signatures.Rejected as exc:
            self._decide(Outcome("rejected", None, "policy", f"refused by this node's policy: {exc}"))
            return None
        except signatures.Unavailable as exc:
            self._decide(Outcome("failed", None, "image", str(exc)))
            return None
        except (ServerUnavailable, ServerRefused) as exc:
            self._decide(Outcome("failed", None, "internal", f"the catalogue could not be asked: {exc}"))
            return None
        image = admitted.image
        self.state.run["executed_digest"] = image.digest
        # The steward page shows who vouched for the code that made a held result.
        self.state.run["signer"] = admitted.signer_text()
        labels = [entry.get("label") for entry in task.get("databases") or [] if isinstance(entry, dict)]
        missing = [label for label in labels if label not in self.ctx.config.databases]
        if missing:
            have = ", ".join(self.ctx.config.databases) or "none"
            self._decide(Outcome("rejected", None, "policy",
                                 f"database {', '.join(missing)} is not configured on this node (it has: {have})"))
            return None
        # The container token (and, in an encrypted collaboration, the key the output is
        # sealed for) is fetched while the image is checked and the container created:
        # only the container's start needs it.
        credentials = None
        if self.input_bytes is not None:
            try:
                # In an encrypted collaboration the container reads the opened input.
                run_input = sealing.open_input(self.state.run, self.input_bytes, self.ctx.config.private_key)
            except sealing.SealingError as exc:
                self._decide(Outcome("failed", None, "startup", str(exc)))
                return None
            # A round its job's worker will serve needs no container token (nodeagent/rounds.py).
            credentials = (None if self.ctx.rounds is not None and self.ctx.rounds.may_serve(self)
                           else _in_background(self._fetch_credentials, name=f"token-{self.run_id}"))
            self.folder.prepare(input_bytes=run_input)
            self.input_bytes = None
            self.folder.save(self.state)
        try:
            image_id = self.ctx.executor.ensure_image(image)
        except ImageError as exc:
            self._decide(Outcome("failed", None, "image", str(exc)))
            return None
        if self.ctx.stop.is_set():
            return None  # the next agent starts from the state file
        if self._kill_requested.is_set():
            self._decide(Outcome("killed", None, "killed", "kill requested before the container started"))
            return None
        log.debug("run %s: image %s ready", self.run_id, image)
        if self.ctx.rounds is not None and self.ctx.rounds.serve(self, image_id, labels):
            return None  # its job's round worker served it: the outcome is decided
        try:
            self.slot = self.ctx.forwarders.acquire(self.run_id, reserved=self.slot)
        except StartupError as exc:
            self._decide(Outcome("failed", None, "startup", f"the node proxy could not start for this run: {exc}"))
            return None
        # Before the container exists: a restarted agent gives this run back its slot.
        self.state.slot = self.slot.index
        self.folder.save(self.state)
        try:
            spec = self._spec(image_id, labels, network_mode=f"container:{self.slot.container.id}")
            container = self.ctx.executor.create(spec)
        except (StartupError, volumes.VolumeError) as exc:
            self._decide(Outcome("failed", None, "startup", str(exc)))
            return None
        if not self._token_ready(credentials):
            self.ctx.executor.remove(container)
            return None
        return self._start(container)

    def _fetch_credentials(self) -> tuple[str, str | None]:
        """The run's container token, and the public key its output is sealed for (fixed
        now, while the server answers) when the collaboration is encrypted."""
        token = self.ctx.client.container_token(self.run_id)
        if not sealing.is_encrypted(self.state.run):
            return token, None
        return token, sealing.fetch_public_key(self.ctx.config.server.url, token,
                                               _id(self._task().get("init_organization")))

    def _token_ready(self, credentials: Future | None) -> bool:
        """Fill the token file before the container starts, and open the run's proxy with it;
        False with the run's outcome decided when that cannot be done.

        `credentials` is the fetch started at the claim; without it (a restarted agent) a
        token file that is still empty is filled now."""
        if credentials is not None or not self.folder.token.stat().st_size:
            try:
                token, result_key = credentials.result() if credentials is not None else self._fetch_credentials()
            except (ServerUnavailable, ServerRefused) as exc:
                self._decide(Outcome("failed", None, "internal", f"the run's container token could not be had: {exc}"))
                return False
            except sealing.SealingError as exc:
                self._decide(Outcome("failed", None, "startup", str(exc)))
                return False
            if result_key is not None:
                self.state.run["result_public_key"] = result_key
                self.folder.save(self.state)
            # After the state file: a token in its file says the result key is saved too.
            self.folder.write_token(token)
        try:
            self._open_proxy()
        except OSError as exc:
            self._decide(Outcome("failed", None, "startup", f"the node proxy could not start for this run: {exc}"))
            return False
        return True

    def _open_proxy(self) -> None:
        if self.proxy is None and self.slot is not None:
            run_sealing = (sealing.RunSealing(self.ctx.config.private_key)
                           if sealing.is_encrypted(self.state.run) else None)
            self.proxy = RunProxy(socket_dir=self.slot.dir, run_id=self.run_id,
                                  server_url=self.ctx.config.server.url, token=self.folder.token.read_text(),
                                  sealing=run_sealing)

    def _close_proxy(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None

    def _remove_container_before_release(self) -> None:
        """After an internal error the container may still run: it must not share its slot's
        namespace with the next run. If even removing it fails, the slot is never lent again."""
        try:
            container = self.ctx.executor.find(self.state.container_name)
            if container is not None:
                self.ctx.executor.remove(container)
                if self.ctx.executor.find(self.state.container_name) is None:
                    return
        except Exception:
            log.exception("run %s: could not remove its container", self.run_id)
        else:
            if container is None:
                return
        log.error("run %s: its forwarder slot is retired: the container may still be there", self.run_id)
        self.slot = None

    def _release_slot(self) -> None:
        """Only once the container has exited or never started: see nodeagent/forwarders.py."""
        if self.slot is not None:
            self.ctx.forwarders.release(self.slot, self.run_id)
            self.slot = None

    def _adopt(self, container: Container) -> None:
        """A container of ours from before a restart, in state file phase PREPARED."""
        if self.ctx.executor.is_running(container) or self.ctx.executor.exit_info(container) is not None:
            started = _docker_time(container.attrs.get("State", {}).get("StartedAt"))
            self._mark_started(started or time.time())
        else:
            self._start(container)

    def _start(self, container: Container) -> Container | None:
        try:
            # The run's files go into its volume now, the token with them: one copy per run.
            self.ctx.executor.put_files(container, contract.RUN_DIR, [
                volumes.Entry("input", 0o444, path=self.folder.input),
                volumes.Entry("token", 0o444, path=self.folder.token),
                volumes.Entry("output", 0o666, data=b""),
            ])
            self.ctx.executor.start(container)
        except StartupError as exc:
            self.ctx.executor.remove(container)
            self._decide(Outcome("failed", None, "startup", str(exc)))
            return None
        self._mark_started(time.time())
        log.debug("run %s: container %s started", self.run_id, container.name)
        return container

    def _mark_started(self, started_at: float) -> None:
        self._enter_started(started_at)
        self.folder.save(self.state)
        self._report_start()

    def _enter_started(self, started_at: float) -> None:
        """The run's state from its start on (phase, start, deadline); saving it is the caller's."""
        self.state.phase = Phase.STARTED
        self.state.started_at = started_at
        self.state.deadline_at = started_at + self.ctx.config.limits.deadline

    def _report_start(self) -> None:
        try:
            self.ctx.client.start(self.run_id, self.state.run.get("executed_digest") or "")
            self._start_reported = True
        except ServerUnavailable as exc:
            log.warning("run %s: could not tell the server it started (will retry): %s", self.run_id, exc)
        except ServerRefused as exc:
            # Already running (a restart) or killed meanwhile: the kill poll sees the latter.
            self._start_reported = True
            log.info("run %s: start not recorded: %s", self.run_id, exc)

    def _spec(self, image_id: str, labels: list[str], *, network_mode: str) -> ContainerSpec:
        """No bind mount: the run's files and its data are named volumes whose paths name
        nothing of the host (nodeagent/volumes.py). A database is copied into its volume
        once per version of its file (raises VolumeError when that fails)."""
        config = self.ctx.config
        run_volume = volumes.run_volume_name(self.state.container_name)
        data, data_mounts = self.ctx.data_volumes.mounts(config.databases, labels, image_id)
        mounts = [volumes.volume(run_volume, contract.RUN_DIR, read_only=False), *data]
        return ContainerSpec(
            name=self.state.container_name,
            image=image_id,
            environment=contract.container_environment(config, labels, data_mounts),
            labels={LABEL_SERVER: self.ctx.server_key, LABEL_NODE: str(self.ctx.node_id), LABEL_RUN: str(self.run_id),
                    LABEL_TASK: str(_id(self.state.run.get("task")) or "")},
            mounts=mounts,
            network_mode=network_mode,
            scratch=contract.TEMP_PATH,
            run_volume=run_volume,
        )

    # ---------------------------------------------------------------- supervision

    def _supervise(self, container: Container) -> None:
        executor = self.ctx.executor
        reader = threading.Thread(target=self._read_logs, args=(container,), name=f"logs-{self.run_id}", daemon=True)
        reader.start()
        exit_info = None
        while exit_info is None:
            if self.ctx.stop.is_set():
                self._flush_logs()
                return  # leave the container running; the next agent re-attaches
            exit_info = executor.wait(container, TICK)
            if exit_info is not None:
                break
            self._tick(container, "container")
        log.debug("run %s: container exited with %s", self.run_id, exit_info.exit_code)
        reader.join(timeout=5)
        problem = self._collect_output(container) if self._kill_reason is None else None
        # What is still buffered travels with the finish request: one request less.
        if problem:
            self._decide(Outcome("failed", exit_info.exit_code, "internal", f"[node] {problem}"), gated=True)
        else:
            self._decide(self._outcome(exit_info), gated=True)

    def _tick(self, container: Container, what: str) -> str | None:
        """One look at a running run, in `container` (its own, or the round worker serving it:
        `what`): its start reported, a kill when it passed its deadline or one was asked for,
        what it printed released. Which kill (deadline, kill), or None."""
        if not self._start_reported:
            self._report_start()
        reason = None
        if self._kill_reason is None and self.state.deadline_at and time.time() >= self.state.deadline_at:
            self._kill(container, "deadline",
                       f"the run passed its deadline of {self.ctx.config.limits.deadline} s; {what} killed")
            reason = "deadline"
        elif self._kill_reason is None and self._kill_requested.is_set():
            self._kill(container, "kill", f"kill requested; {what} killed")
            reason = "kill"
        self._flush_logs()
        return reason

    def _collect_output(self, container: Container) -> str | None:
        """The output file, out of the run's volume into its folder (at most max_output + 1
        bytes, which is all RLIMIT_FSIZE lets the container write); why not, or None."""
        try:
            self.ctx.executor.fetch_file(container, contract.OUTPUT_PATH, self.folder.output,
                                         self.ctx.config.limits.max_output + 1)
        except volumes.VolumeError as exc:
            return f"the output could not be read back from the container: {exc}"
        return None

    def _read_logs(self, container: Container) -> None:
        try:
            for chunk in self.ctx.executor.logs(container, since=self.state.log_sent_until):
                self.logs.feed(chunk)
        except Exception as exc:  # the engine closing the stream must not kill the run
            log.debug("run %s: log stream ended: %s", self.run_id, exc)

    def request_kill(self) -> None:
        """The researcher asked to stop this run (seen by the agent's kill watch)."""
        self._kill_requested.set()

    def _kill(self, container: Container, reason: str, line: str) -> None:
        self._kill_reason = reason
        self.logs.write(f"[node] {line}")
        self.ctx.executor.kill(container)

    def _flush_logs(self) -> None:
        """Send what the container printed, in bounded batches; keep it if the server is away.
        Only where the node releases logs unseen ([output] logs = "release"): otherwise the
        log waits for the output gate at the end of the run."""
        if self.ctx.config.output.logs != "release" or time.monotonic() < self._next_log_flush_try:
            return
        fed_until = self.logs.last_fed_at
        while len(self.logs):
            text = self.logs.take(LOG_BATCH_CHARS)
            try:
                self.ctx.client.append_log(self.run_id, text)
            except ServerUnavailable:
                self.logs.give_back(text)
                self._log_failures += 1
                self._next_log_flush_try = time.monotonic() + backoff(self._log_failures)
                return
            except ServerRefused as exc:
                log.warning("run %s: log batch refused: %s", self.run_id, exc)
            self._log_failures = 0
        if fed_until and fed_until != self.state.log_sent_until:
            self.state.log_sent_until = fed_until
            self.folder.save(self.state)

    def _outcome(self, exit_info: ExitInfo) -> Outcome:
        code = exit_info.exit_code
        if self._kill_reason == "deadline":
            return Outcome("timed_out", code, "timeout", "")
        if self._kill_reason == "kill":
            return Outcome("killed", code, "killed", "")
        if code != 0:
            lines = [f"[node] the algorithm exited with code {code}"]
            if exit_info.oom_killed:
                lines.append(f"[node] it ran out of memory (limit {self.ctx.config.limits.memory} bytes)")
            limit = self.ctx.config.limits.max_output
            if self.folder.output.exists() and self.folder.output.stat().st_size > limit:
                lines.append(f"[node] it tried to write a file larger than {limit} bytes (limits.max_output)")
            if exit_info.error:
                lines.append(f"[node] Docker: {exit_info.error}")
            return Outcome("crashed", code, "algorithm", "\n".join(lines))
        problem = self._check_output()
        if problem:
            return Outcome("failed", code, "output", f"[node] {problem}")
        if sealing.is_encrypted(self.state.run):
            try:
                sealing.seal_output(self.folder.output, self._sealed_output,
                                    self.state.run.get("result_public_key") or "")
            except sealing.SealingError as exc:
                return Outcome("failed", code, "output", f"[node] {exc}")
        return Outcome("completed", code, "", self.proxy.summary() if self.proxy else "", has_result=True)

    @property
    def _sealed_output(self) -> Path:
        return self.folder.path / "output.sealed"

    def _result_file(self) -> Path:
        """What is uploaded: the output, sealed for the task's organisation where required."""
        return self._sealed_output if sealing.is_encrypted(self.state.run) else self.folder.output

    def _check_output(self) -> str | None:
        path = self.folder.output
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "the output file is missing"
        limit = self.ctx.config.limits.max_output
        if size > limit:
            return f"the output is {size} bytes, more than this node's limit of {limit} (limits.max_output)"
        if size == 0:
            return "the algorithm wrote no output (the output file is empty)"
        problem = json_problem(path, size)
        return f"the output is not valid JSON: {problem}" if problem else None

    def _decide(self, outcome: Outcome, *, gated: bool = False) -> None:
        """Fix the outcome on disk before anything else, with every log line not yet sent.
        `gated`: the container ran, and its output and log pass the output gate first."""
        remaining = self.logs.take(self.logs.limit)
        if gated:
            outcome = output_gate(self, outcome, remaining)
        else:
            if remaining and self.ctx.config.output.logs != "release":
                # A container ran, but its outcome is the node's (an internal error): its
                # log has not passed the gate, so it stays here.
                remaining = gate.withheld_log_note(remaining, self.ctx.config.output.logs)
            lines = [remaining.rstrip("\n")] if remaining else []
            if outcome.log:
                lines.append(outcome.log if outcome.log.startswith("[node]") else f"[node] {outcome.log}")
            outcome.log = "\n".join(lines) + ("\n" if lines else "")
        self.state.outcome = outcome
        self.state.phase = Phase.FINISHED
        if not self.folder.path.exists():
            self.folder.path.mkdir(mode=0o700, parents=True)
        self.folder.save(self.state)
        log.info("run %s: %s%s", self.run_id, outcome.status, f" ({outcome.error_kind})" if outcome.error_kind else "")

    # ---------------------------------------------------------------- upload

    def _upload(self) -> None:
        """Send the outcome until the server has it; the folder goes only after that."""
        outcome = self.state.outcome
        attempt = 0
        while not self.ctx.stop.is_set():
            result = self._result_file() if outcome.has_result else None
            seen = self.ctx.server_back.count
            try:
                if outcome.held is not None:
                    report_held(self, outcome)
                    break
                self.ctx.client.finish(self.run_id, status=outcome.status, exit_code=outcome.exit_code,
                                       error_kind=outcome.error_kind, log=outcome.log, result=result,
                                       **self.ran())
                if attempt:
                    log.info("run %s: outcome uploaded after %d failed attempt(s)", self.run_id, attempt)
                else:
                    log.debug("run %s: outcome uploaded", self.run_id)
                break
            except ServerUnavailable as exc:
                attempt += 1
                delay = backoff(attempt)
                log.warning("run %s: upload failed (%s); retrying in %.1f s, or once the server is back",
                            self.run_id, exc, delay)
                self.ctx.server_back.wait(seen, delay, self.ctx.stop)
            except (Conflict, NotFound) as exc:
                # Already final (an earlier attempt got through before its answer was lost,
                # or the run was killed meanwhile) or deleted: nothing left to send.
                log.info("run %s: the server already has its end: %s", self.run_id, exc)
                break
            except ServerRefused as exc:
                if exc.status == 413 and outcome.has_result:
                    outcome = Outcome("failed", outcome.exit_code, "output",
                                      outcome.log + "[node] the server refused the output as too large\n")
                    self.state.outcome = outcome
                    self.folder.save(self.state)
                    continue
                log.error("run %s: the server refused the outcome, giving up: %s", self.run_id, exc)
                break
        else:
            return  # stopping: the state file keeps the outcome for the next agent
        # The container goes only now: until the server has the outcome, a restarted
        # agent can still find it.
        self.ctx.executor.remove(self.state.container_name)
        self.folder.remove()

    def ran(self) -> dict:
        """What ran and since when, for the server to record if the start was never reported
        (a quick round's is not: nodeagent/rounds.py); nothing for a run that never started."""
        started = self.state.started_at
        if started is None:
            return {"digest": "", "started_at": None}
        return {"digest": self.state.run.get("executed_digest") or "", "started_at": started}

    def _task(self) -> dict:
        task = self.state.run.get("task")
        return task if isinstance(task, dict) else self.state.run


def _in_background(fn, *, name: str) -> Future:
    """fn() in a thread of its own; the Future holds what it returned or raised."""
    future: Future = Future()

    def body():
        try:
            future.set_result(fn())
        except Exception as exc:
            future.set_exception(exc)

    threading.Thread(target=body, name=name, daemon=True).start()
    return future


def json_problem(path: Path, size: int) -> str | None:
    """Why the file is not JSON, or None. Parsing takes several times the file's size in
    memory, so large outputs are parsed in a child process: the agent stays small
    whatever its runs write."""
    if size <= IN_PROCESS_JSON_BYTES:
        try:
            with open(path, "rb") as fh:
                json.load(fh)
        except (ValueError, RecursionError) as exc:
            return str(exc) or type(exc).__name__
        return None
    # The child caps its own address space first (preexec_fn is unsafe in a threaded agent).
    checker = ("import json, resource, sys\n"
               "limit = int(sys.argv[2])\n"
               "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
               "try:\n    json.load(open(sys.argv[1], 'rb'))\n"
               "except (ValueError, RecursionError) as exc:\n    print(exc or type(exc).__name__); sys.exit(1)\n"
               "except MemoryError:\n    print('MemoryError'); sys.exit(2)\n")
    try:
        done = subprocess.run([sys.executable, "-c", checker, str(path), str(JSON_CHECK_MEMORY)],
                              capture_output=True, text=True, timeout=JSON_CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"checking it took longer than {JSON_CHECK_TIMEOUT} s"
    if done.returncode == 2 or "MemoryError" in done.stderr:
        return f"it takes more than {JSON_CHECK_MEMORY // 1024**2} MiB to parse (the node's bound for checking outputs)"
    if done.returncode != 0:
        return done.stdout.strip() or done.stderr.strip()[-300:] or f"the checker exited with {done.returncode}"
    return None


def _id(value) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _username(task: dict, created_by) -> str | None:
    if isinstance(created_by, dict) and isinstance(created_by.get("username"), str):
        return created_by["username"]
    name = task.get("created_by_username")
    return name if isinstance(name, str) else None


def _docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 timestamps carry nanoseconds, which fromisoformat refuses."""
    if not text or text.startswith("0001-"):
        return None
    main, _, rest = text.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    try:
        moment = datetime.fromisoformat(f"{main}.{fraction or '0'}+00:00")
    except ValueError:
        return None
    return moment.timestamp()
