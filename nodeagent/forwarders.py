"""Forwarders, one per concurrency slot, started ahead of time and reused run after run.

A run's algorithm container shares the network namespace of a forwarder (network
`none`), in which the only listener is the relay from 127.0.0.1:<proxy_port> to the
node proxy's Unix socket. Starting that forwarder for every run doubled the container
starts a run costs; instead each slot keeps one forwarder running, and a run borrows a
free slot for as long as its container lives:

    <task_folder>/forwarders/slot-<n>/proxy.sock   the borrowing run's proxy, and nothing else

Why reuse does not connect one run to another:
- a slot serves one run at a time, and goes back to the pool only once that run's
  container has exited (its processes, and with them every socket it opened in the
  shared namespace, are gone) or never started;
- the relay opens the socket path anew for every connection, and the proxy bound
  there holds only the borrowing run's container token;
- the namespace holds nothing else an algorithm could leave behind: no capabilities
  (no routes, addresses or firewall rules), read-only /proc/sys, and the forwarder's
  own filesystem is not shared.

The slot a run borrows is in its state file, so an agent that restarts gives it back to
the same run (reserve) before any new run can take it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.models.containers import Container

from nodeagent.executor import (
    LABEL_FORWARDER_NODE, LABEL_FORWARDER_SLOT, LABEL_SERVER, Executor, ImageError, StartupError,
)
from nodeagent.proxy import SOCKET_NAME

log = logging.getLogger(__name__)

# How long an agent's stop waits for a forwarder the warm-up is starting, so as to remove
# it rather than leave it running (a start takes well under a second).
CLOSE_WAIT = 10


@dataclass
class Slot:
    index: int
    dir: Path
    container: Container | None = None
    run_id: int | None = None  # the run borrowing it
    starting: bool = False

    @property
    def socket(self) -> Path:
        return self.dir / SOCKET_NAME


class ForwarderPool:
    def __init__(self, *, executor: Executor, folder: Path, image: str, port: int, server_key: str, node_id: int,
                 name_prefix: str):
        self.executor = executor
        self.folder = folder
        self.image = image
        self.port = port
        self.labels = {LABEL_SERVER: server_key, LABEL_FORWARDER_NODE: str(node_id)}
        self.name_prefix = name_prefix
        self._slots: dict[int, Slot] = {}
        self._cond = threading.Condition()
        self._closed = False  # the agent stops: the warm-up starts no more

    def _slot(self, index: int) -> Slot:
        slot = self._slots.get(index)
        if slot is None:
            slot = self._slots[index] = Slot(index, self.folder / f"slot-{index}")
        return slot

    def adopt(self) -> None:
        """Forwarders an earlier agent left running are kept for their slots; stopped ones go."""
        for container in self.executor.forwarders(self.labels[LABEL_SERVER], int(self.labels[LABEL_FORWARDER_NODE])):
            index = container.labels.get(LABEL_FORWARDER_SLOT, "")
            if container.status == "running" and index.isdigit():
                self._slot(int(index)).container = container
            else:
                self.executor.remove(container)

    def reserve(self, index: int, run_id: int) -> Slot:
        """The slot a resumed run already uses (its container may still be running in it)."""
        with self._cond:
            slot = self._slot(index)
            slot.run_id = run_id
            return slot

    def warm(self, count: int) -> None:
        """Start forwarders for the first `count` slots that have none, so runs find one ready."""
        for index in range(count):
            with self._cond:
                if self._closed:
                    return
                slot = self._slot(index)
                if slot.run_id is not None or slot.container is not None or slot.starting:
                    continue
                slot.starting = True
            try:
                self._start(slot)
            except (StartupError, ImageError) as exc:
                log.error("forwarder for slot %s did not start: %s", index, exc)
                return
            finally:
                with self._cond:
                    slot.starting = False
                    self._cond.notify_all()

    def acquire(self, run_id: int, reserved: Slot | None = None) -> Slot:
        """A free slot (or the one `reserved` for this run) with a running forwarder, lent to
        this run; StartupError if no forwarder can start."""
        if reserved is not None:
            slot = reserved
        else:
            slot = self._lend(run_id)
        try:
            if not self._alive(slot):
                self._start(slot)
        except (StartupError, ImageError) as exc:
            self.release(slot, run_id)
            raise StartupError(str(exc))
        except Exception:
            self.release(slot, run_id)
            raise
        return slot

    def _alive(self, slot: Slot) -> bool:
        if slot.container is None:
            return False
        try:
            return self.executor.is_running(slot.container)
        except docker.errors.NotFound:
            return False

    def _lend(self, run_id: int) -> Slot:
        with self._cond:
            while True:
                free = [s for _, s in sorted(self._slots.items()) if s.run_id is None]
                # Slots whose forwarder already runs first: lending them costs no start.
                ready = sorted((s for s in free if not s.starting), key=lambda s: (s.container is None, s.index))
                if ready:
                    slot = ready[0]
                    break
                if not free:
                    slot = self._slot(next(i for i in range(len(self._slots) + 1) if i not in self._slots))
                    break
                self._cond.wait()  # the warm-up is starting the only free one
            slot.run_id = run_id
            return slot

    def release(self, slot: Slot, run_id: int) -> None:
        """Give the slot back: only once the borrowing run's container has exited or never
        started. A second release by the same run does nothing (the slot may be lent again)."""
        with self._cond:
            if slot.run_id != run_id:
                return
            if slot.socket.exists():
                slot.socket.unlink()
            slot.run_id = None
            self._cond.notify_all()

    def close(self) -> None:
        """Remove the idle forwarders, including one the warm-up is starting (waited for, at
        most CLOSE_WAIT s); those of runs still running stay for the next agent."""
        with self._cond:
            self._closed = True
            self._cond.wait_for(lambda: not any(s.starting for s in self._slots.values()), timeout=CLOSE_WAIT)
            idle = [s for s in self._slots.values() if s.run_id is None and s.container is not None]
        for slot in idle:
            self.executor.remove(slot.container)
            slot.container = None

    def _start(self, slot: Slot) -> None:
        slot.dir.mkdir(parents=True, exist_ok=True)
        # The forwarder runs as an unprivileged user: it must enter the folder and connect.
        slot.dir.chmod(0o755)
        if slot.socket.exists():
            slot.socket.unlink()  # left by an agent that stopped; its run is over
        slot.container = None
        slot.container = self.executor.start_forwarder(
            name=f"{self.name_prefix}-forwarder{slot.index}", image=self.image, socket_dir=slot.dir, port=self.port,
            labels={**self.labels, LABEL_FORWARDER_SLOT: str(slot.index)})
        log.debug("forwarder for slot %s started", slot.index)
