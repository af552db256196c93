"""The client a central method uses to create subtasks at the sites and collect results.

`ProxyClient` talks to the node proxy inside the container (the vantage6 4.x algorithm
client's calls, base64 JSON inputs and results); the local harness has its own client
with the same methods.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from typing import Any

from vantage_algorithms.errors import AlgorithmError, SubtaskFailed

# Polling a subtask. Each poll is a request through the node proxy to the server, on the
# CPUs the sites' round workers need (a first round of four workers importing pandas on two
# cores is CPU-bound, and polling every 25 ms was ~45 requests of it), and each poll slept
# past the answer adds to the round (issue 18). The first round starts the sites' workers
# or containers (seconds): it is polled every FIRST_POLL for FIRST_FOR seconds, then less
# often up to MAX_POLL. Later rounds (0.1-0.3 s once the workers are warm) take about as
# long as the quickest of them so far: a round sleeps through DUE_FRACTION of that, then
# polls every QUICK_POLL until QUICK_FOR past it, then backs off to MAX_POLL.
QUICK_POLL, DUE_FRACTION, QUICK_FOR, MAX_POLL = 0.025, 0.7, 1.0, 0.25
FIRST_POLL, FIRST_FOR = 0.1, 5.0
FAILED_RUN = {"failed", "crashed", "killed", "rejected", "timed_out"}
# Exit codes of the toolkit's runner, so a central method can tell a refusal from a fault
# (it cannot read other runs' logs: the server keeps those from containers).
EXIT_ERROR, EXIT_REFUSED = 2, 3


class Pending(ABC):
    """A subtask that was created; `wait()` returns its results in the organisations' order."""

    organizations: list[int]

    @abstractmethod
    def wait(self) -> list[Any]: ...


class Client(ABC):
    """What a central method may do."""

    @abstractmethod
    def organizations(self) -> list[int]:
        """Ids of the organisations this task's subtasks go to."""

    @abstractmethod
    def start(self, method: str, kwargs: dict | None = None, organizations: list[int] | None = None) -> Pending:
        """Create one subtask for `organizations` (default: all of organizations())."""

    def run(self, method: str, kwargs: dict | None = None, organizations: list[int] | None = None) -> list[Any]:
        """Create one subtask, wait for it, and return each organisation's result in order."""
        return self.start(method, kwargs, organizations).wait()


def next_poll(elapsed: float, *, first: bool, expected: float | None, delay: float) -> float:
    """Seconds to sleep before the next poll of a subtask created `elapsed` seconds ago.
    `first`: it is the client's first subtask; `expected`: the quickest of its later ones
    so far (None: none yet); `delay`: the sleep before the last poll."""
    if first:
        return FIRST_POLL if elapsed < FIRST_FOR else min(max(delay, FIRST_POLL) * 2, MAX_POLL)
    expected = expected or 0.0
    due = DUE_FRACTION * expected
    if elapsed < due:
        return max(min(due - elapsed, MAX_POLL), QUICK_POLL)
    if elapsed < expected + QUICK_FOR:
        return QUICK_POLL
    return min(max(delay, QUICK_POLL) * 2, MAX_POLL)


def run_failure(run: dict) -> str:
    """Why a site's run gave no result, in words the researcher can act on."""
    status, code, kind = run.get("status"), run.get("exit_code"), run.get("error_kind") or ""
    if status == "crashed" and code == EXIT_REFUSED:
        return "refused by its disclosure policy (the reason is in that run's log)"
    if status == "crashed" and code == EXIT_ERROR:
        return "could not do the task as asked (the reason is in that run's log)"
    detail = ", ".join(p for p in (kind and f"error {kind}", code is not None and f"exit code {code}") if p)
    return f"run {run.get('id')} {status}" + (f" ({detail})" if detail else "")


class ProxyClient(Client):
    def __init__(self, *, base_url: str, token: str, databases: list[str], data_selection: dict | None = None,
                 organizations: list[int] | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.databases = databases
        self.data_selection = data_selection or {}
        self._organizations = organizations
        self.collaboration_id = _claims(token).get("collaboration_id")
        self.answered = 0  # subtasks waited for
        self.quickest: float | None = None  # seconds the quickest after the first took to answer

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("msg", "")
            except ValueError:
                message = ""
            raise AlgorithmError(f"the node proxy answered {exc.code} to {method} {path.split('?')[0]}"
                                 + (f": {message[:300]}" if message else "")) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AlgorithmError(f"the node proxy cannot be reached: {exc}") from None

    def _pages(self, path: str) -> list[dict]:
        items, page = [], 1
        separator = "&" if "?" in path else "?"
        while True:
            answer = self.call("GET", f"{path}{separator}page={page}")
            items += answer.get("data", [])
            if not answer.get("links", {}).get("next"):
                return items
            page += 1

    def organizations(self) -> list[int]:
        if self._organizations is None:
            if self.collaboration_id is None:
                raise AlgorithmError("the container token names no collaboration")
            found = self._pages(f"/organization?collaboration_id={self.collaboration_id}")
            self._organizations = sorted(int(org["id"]) for org in found)
        return list(self._organizations)

    def start(self, method: str, kwargs: dict | None = None, organizations: list[int] | None = None) -> Pending:
        organizations = list(organizations) if organizations is not None else self.organizations()
        if not organizations:
            raise AlgorithmError("a subtask needs at least one organisation")
        request = {"method": method, "args": [], "kwargs": {**self.data_selection, **(kwargs or {})}}
        encoded = base64.b64encode(json.dumps(request).encode()).decode("ascii")
        created = time.monotonic()
        task = self.call("POST", "/task", {
            "name": f"{method} subtask", "description": f"{method} at {len(organizations)} sites",
            "collaboration_id": self.collaboration_id,
            "organizations": [{"id": org, "input": encoded} for org in organizations],
            "databases": [{"label": label} for label in self.databases],
        })
        return ProxyPending(self, int(task["id"]), organizations, created=created)


class ProxyPending(Pending):
    def __init__(self, client: ProxyClient, task_id: int, organizations: list[int], *, created: float):
        self.client, self.task_id, self.organizations = client, task_id, organizations
        self.created = created  # time.monotonic() when the subtask was asked for

    def wait(self) -> list[Any]:
        client, delay = self.client, 0.0
        first, expected = client.answered == 0, client.quickest
        while True:  # no subtask answers as soon as it is created: sleep first
            delay = next_poll(time.monotonic() - self.created, first=first, expected=expected, delay=delay)
            time.sleep(delay)
            # The runs with their results: the poll that sees the last one finish is also
            # the one that collects the answers (one request through the proxy, not two).
            runs = self.client._pages(f"/result?task_id={self.task_id}")
            if not runs:
                raise AlgorithmError(f"subtask {self.task_id} has no runs")
            failed = [run for run in runs if run.get("status") in FAILED_RUN]
            if failed:
                raise SubtaskFailed(_organization_id(failed[0]), run_failure(failed[0]))
            if all(run.get("status") == "completed" for run in runs):
                break
        took = time.monotonic() - self.created
        if not first:
            client.quickest = took if client.quickest is None else min(client.quickest, took)
        client.answered += 1
        results = {}
        for run in runs:
            org = _organization_id(run)
            if run.get("result") is None:
                raise SubtaskFailed(org, f"run {run.get('id')} completed without a result")
            results[org] = json.loads(base64.b64decode(run["result"]))
        missing = [org for org in self.organizations if org not in results]
        if missing:
            raise SubtaskFailed(missing[0], f"no result in subtask {self.task_id}")
        return [results[org] for org in self.organizations]


def _organization_id(run: dict) -> int:
    org = run.get("organization")
    return int(org["id"] if isinstance(org, dict) else org)


def _claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise AlgorithmError("the container token is not a JWT") from None
