"""Each run's own folder under the task folder, and the state file that survives restarts.

    <task_folder>/runs/run-<id>/       0700, only the agent's user can enter
        state.json                     phase, container name, deadline, outcome
        input   output   token         the agent's copies (0600) of the run's files
    <task_folder>/forwarders/slot-<n>/ the proxy socket of the run borrowing slot n

The container never sees this folder: its input and token are copied into a volume of
its own just before it starts, and its output copied back from there when it ends
(nodeagent/volumes.py), so one run cannot read another run's files and no host path
shows in its mount table. Its TEMPORARY_FOLDER is not here either: it is a size-limited
tmpfs of the container's own (nodeagent/executor.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "state.json"


class Phase:
    PREPARED = "prepared"  # folder written; the container may or may not exist yet
    STARTED = "started"  # the container was started
    FINISHED = "finished"  # outcome decided; only the upload is left


@dataclass
class Outcome:
    status: str
    exit_code: int | None
    error_kind: str
    log: str
    has_result: bool = False
    # Set when the output gate held the run (nodeagent/airlock.py): what the server is told
    # instead of the outcome, which waits in the airlock for the steward.
    held: dict | None = None


@dataclass
class RunState:
    run_id: int
    container_name: str
    run: dict = field(default_factory=dict)  # the claimed run as the server sent it, minus its input
    phase: str = Phase.PREPARED
    started_at: float | None = None
    deadline_at: float | None = None
    log_sent_until: float | None = None
    slot: int | None = None  # the forwarder slot its container shares (nodeagent/forwarders.py)
    outcome: Outcome | None = None

    @classmethod
    def from_dict(cls, data: dict) -> RunState:
        outcome = data.pop("outcome", None)
        return cls(**data, outcome=Outcome(**outcome) if outcome else None)


class RunFolder:
    def __init__(self, root: Path, run_id: int):
        self.run_id = run_id
        self.path = root / f"run-{run_id}"

    @property
    def input(self) -> Path:
        return self.path / "input"

    @property
    def output(self) -> Path:
        return self.path / "output"

    @property
    def token(self) -> Path:
        return self.path / "token"

    def exists(self) -> bool:
        return (self.path / STATE_FILE).exists()

    def prepare(self, *, input_bytes: bytes) -> None:
        """Write the run's files fresh (a half-prepared folder from a crash is replaced).
        The token file stays empty until write_token: the container token is fetched
        while the container is created."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(mode=0o700, parents=True)
        for path, data in ((self.input, input_bytes), (self.token, b""), (self.output, b"")):
            path.write_bytes(data)
            path.chmod(0o600)

    def write_token(self, token: str) -> None:
        """Replace the token file whole, before the container starts (it is copied into the
        container's volume then): an agent stopped half-way leaves it empty, never half written."""
        tmp = self.path / ".token.tmp"
        tmp.write_text(token)
        tmp.chmod(0o600)
        os.replace(tmp, self.token)

    def save(self, state: RunState) -> None:
        """Replace state.json atomically, so a kill at any instant leaves old or new, never half."""
        tmp = self.path / f".{STATE_FILE}.tmp"
        with open(tmp, "w") as fh:
            json.dump(asdict(state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / STATE_FILE)

    def load(self) -> RunState:
        return RunState.from_dict(json.loads((self.path / STATE_FILE).read_text()))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class TaskFolder:
    """The node's working folder; one agent at a time may use it (an flock says so)."""

    def __init__(self, path: Path):
        self.path = path
        self.runs = path / "runs"
        self.forwarders = path / "forwarders"
        self._lock_fh = None

    def open(self) -> None:
        self.runs.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o700)
        self._lock_fh = open(self.path / "agent.lock", "w")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            self._lock_fh = None
            raise RuntimeError(f"another node agent is using the task folder {self.path}")

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def run(self, run_id: int) -> RunFolder:
        return RunFolder(self.runs, run_id)

    def known_runs(self) -> list[RunFolder]:
        found = []
        for entry in sorted(self.runs.glob("run-*")):
            suffix = entry.name[4:]
            if suffix.isdigit():
                found.append(RunFolder(self.runs, int(suffix)))
        return found
