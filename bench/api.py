#!/usr/bin/env python3
"""API benchmark: Vantage (ours) against vantage6 server 4.15, same workload.

    python3 bench/api.py                 # both servers, full run
    python3 bench/api.py --quick         # short run
    python3 bench/api.py --only v6       # just the baseline (or: --only ours)

Starts each server as a subprocess on 127.0.0.1 with SQLite in a temporary
directory, seeds it (3 organisations, one collaboration, a node per
organisation, a researcher user, a backlog of pending runs for node 1), then
drives the same operations with a fixed number of requests and a small number
of keep-alive client threads, and prints p50/p95 latency and requests/s per
operation plus the ours/v6 throughput ratio. See bench/README.md for how each
operation maps onto the two APIs.

Standard library only; the project's .venv is used for our server and a
separate virtualenv (created on first use) for vantage6. All traffic stays on
127.0.0.1. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
HOST = "127.0.0.1"

ORG_NAMES = ["bench-org-1", "bench-org-2", "bench-org-3"]
COLLAB_NAME = "bench-collab"
USERNAME = "benchuser"
# Satisfies both password policies (v6: upper, lower, digit, symbol; ours: length >= 10).
PASSWORD = "Bench-Passw0rd-2024!"
IMAGE = "harbor2.vantage6.ai/demo/average:latest"
# nodeagent.client.INLINE_RESULT_BYTES: the node sends results up to this size inline
# (bench/api.py runs on any python3, without the project's dependencies to import it).
INLINE_RESULT_BYTES = 1024 * 1024
# Per-organisation task input: what vantage6's Python client sends for an
# unencrypted collaboration (JSON, base64-encoded). We send the same bytes.
TASK_INPUT = json.dumps(
    {"method": "partial_average", "kwargs": {"column_name": "age"}}
).encode()
TASK_INPUT_B64 = base64.b64encode(TASK_INPUT).decode()


class BenchError(Exception):
    """A failure worth one readable line."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# HTTP client: one keep-alive connection per thread, stdlib only
# ---------------------------------------------------------------------------
class Client:
    def __init__(self, port: int, timeout: float = 60.0):
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, *, json_body=None, body=None, token=None, headers=None):
        """Return (status, body bytes, response headers)."""
        hdrs = {"Accept": "application/json"}
        if headers:
            hdrs.update(headers)
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        # One retry when the server closed an idle keep-alive connection
        # before reading our request (it cannot have processed it).
        for attempt in (0, 1):
            conn = self._connect()
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, data, resp.headers
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise

    def json(self, method, path, *, expect=(200,), **kw):
        status, data, _ = self.request(method, path, **kw)
        if status not in expect:
            raise BenchError(f"{method} {path} -> HTTP {status}: {data[:300]!r}")
        return json.loads(data) if data else None


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, (filename, content) in files.items():
        out.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + content
            + b"\r\n"
        )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------------------
# Process helpers
# ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def run_checked(cmd, *, what: str, timeout: float, env=None, cwd=None, logfile: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            cmd, env=env, cwd=cwd, timeout=timeout, capture_output=True, text=True
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {timeout:.0f}s")
    if logfile is not None:
        with open(logfile, "a") as f:
            f.write(f"$ {' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"{what} failed (exit {proc.returncode}): {last[0]}")
    return proc.stdout


def proc_group_cpu_seconds(pgid: int) -> float:
    """utime+stime of every live process in a process group (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields_ = stat[stat.rfind(")") + 2 :].split()
        # fields_[0] is state (field 3); pgrp is field 5, utime 14, stime 15
        if int(fields_[2]) == pgid:
            total += int(fields_[11]) + int(fields_[12])
    return total / tick


def set_autogroup_nice(pid: int, nice: int) -> None:
    """With kernel autogroups (sched_autogroup_enabled=1) each session competes as one
    group whatever its processes' nice values, and a new session starts at group nice 0:
    renice the group too, or --nice changes nothing against other sessions' load."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")
    except OSError:
        pass  # no autogroups here, or not allowed: plain nice still applies


class ServerProcess:
    """A server subprocess in its own process group, with a log file."""

    nice = 0  # set from --nice
    cpu: int | None = None  # set from --cpu

    def __init__(self, name: str, cmd: list[str], *, env: dict, cwd: Path, logfile: Path):
        self.name = name
        self.logfile = logfile
        self._log = open(logfile, "ab")
        # Servers inherit the driver's nice value (see --nice).
        try:
            cpu = self.cpu
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                # Set before exec: every process and thread the server starts inherits it.
                preexec_fn=None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu})),
            )
        except OSError as exc:
            self._log.close()
            raise BenchError(f"cannot start {name}: {exc}")
        if self.nice:
            set_autogroup_nice(self.proc.pid, self.nice)

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return proc_group_cpu_seconds(self.pgid)

    def wait_healthy(self, port: int, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = Client(port, timeout=5)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with code {self.proc.returncode} during start-up; "
                    f"last log lines:\n{tail(self.logfile)}"
                )
            try:
                status, _, _ = client.request("GET", path)
                if status == 200:
                    client.close()
                    return
            except OSError:
                client.close()
            time.sleep(0.25)
        raise BenchError(
            f"{self.name} not healthy at {path} after {timeout:.0f}s; last log lines:\n{tail(self.logfile)}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.pgid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # children (e.g. uWSGI workers) left in the group
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


# ---------------------------------------------------------------------------
# Load driver
# ---------------------------------------------------------------------------
@dataclass
class OpResult:
    name: str
    planned: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    timed_out: bool = False

    @property
    def done(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)  # nearest-rank percentile
        k = max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))
        return s[k] * 1000.0

    @property
    def rps(self) -> float:
        return self.done / self.wall if self.wall > 0 else 0.0

    def merge(self, other: "OpResult") -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.wall += other.wall
        self.client_cpu += other.client_cpu
        self.server_cpu += other.server_cpu
        self.timed_out = self.timed_out or other.timed_out

    def to_dict(self) -> dict:
        return {
            "planned": self.planned, "ok": self.done, "errors": self.errors,
            "p50_ms": round(self.pct(0.50), 2), "p95_ms": round(self.pct(0.95), 2),
            "rps": round(self.rps, 2), "wall_s": round(self.wall, 3),
            "server_cpu_ms_per_req": round(1000 * self.server_cpu / max(1, self.done), 2),
            "client_cpu_share": round(self.client_cpu / self.wall, 2) if self.wall else None,
            "timed_out": self.timed_out, "first_error": self.first_error,
        }


def drive(name: str, indices: range, port: int, concurrency: int, time_limit: float, fn,
          server: ServerProcess) -> OpResult:
    """Call fn(client, i) for i in indices from `concurrency` threads.

    fn returns None on success or an error string. Stops starting new
    requests when time_limit seconds have passed.
    """
    res = OpResult(name, len(indices))
    lock = threading.Lock()
    counter = iter(indices)
    deadline = time.monotonic() + time_limit
    latencies: list[float] = []

    def worker():
        client = Client(port)
        try:
            while True:
                with lock:
                    if time.monotonic() > deadline:
                        res.timed_out = True
                        return
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    err = fn(client, i)
                except Exception as exc:  # network errors, bad JSON...
                    err = f"{type(exc).__name__}: {exc}"
                    client.close()
                dt_ = time.perf_counter() - t0
                with lock:
                    if err is None:
                        latencies.append(dt_)
                    else:
                        res.errors += 1
                        if not res.first_error:
                            res.first_error = err[:300]
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    cpu0, srv0, t0 = time.process_time(), server.cpu_seconds(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=time_limit + 120)
    res.wall = time.perf_counter() - t0
    res.client_cpu = time.process_time() - cpu0
    res.server_cpu = server.cpu_seconds() - srv0
    res.latencies = latencies
    return res


def check(status: int, data: bytes, expect=(200,)) -> str | None:
    if status in expect:
        return None
    return f"HTTP {status}: {data[:200]!r}"


# ---------------------------------------------------------------------------
# Targets: each knows how to start, seed and speak its API
# ---------------------------------------------------------------------------
class Target:
    label = ""
    health_path = ""

    def __init__(self, args, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.port = free_port()
        self.server: ServerProcess | None = None
        self.user_token = ""
        self.node_tokens: list[str] = []
        self.org_ids: list[int] = []
        self.collab_id = 0

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    # operations: return None (ok) or an error string
    def op_login(self, c: Client, i: int): ...
    def op_org_list(self, c: Client, i: int): ...
    def op_task_create(self, c: Client, i: int): ...
    def op_run_list(self, c: Client, i: int): ...
    def op_claim(self, c: Client, i: int): ...
    def op_start(self, c: Client, i: int): ...
    def op_finish(self, c: Client, i: int): ...


# ----------------------------- ours ----------------------------------------
class Ours(Target):
    label = "ours"
    health_path = "/api/health/"

    def __init__(self, args, workdir):
        super().__init__(args, workdir)
        self.python = REPO / ".venv" / "bin" / "python"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "DJANGO_SETTINGS_MODULE": "vantage.settings",
            "VANTAGE_DATA_DIR": str(workdir),
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DEBUG": "false",
            "PYTHONPATH": str(REPO),
        }
        self.created: list[dict | None] = []
        self.claim_plan: list[tuple[int, int]] = []  # (node index, run id)

    def ensure_env(self):
        if not self.python.exists():
            log("creating .venv for our server (python3 -m venv .venv; pip install -r requirements-dev.txt)")
            run_checked([sys.executable, "-m", "venv", str(REPO / ".venv")], what="venv", timeout=300)
            run_checked(
                [str(self.python), "-m", "pip", "install", "-q", "-r", str(REPO / "requirements-dev.txt")],
                what="pip install -r requirements-dev.txt", timeout=900,
            )
        if not (REPO / "manage.py").exists():
            raise BenchError("manage.py not found at the repository root")

    def start(self):
        self.ensure_env()
        setup_log = self.workdir / "setup.log"
        log("ours: migrate")
        run_checked(
            [str(self.python), "manage.py", "migrate", "--noinput", "-v", "0"],
            what="manage.py migrate", timeout=300, env=self.env, cwd=REPO, logfile=setup_log,
        )
        log(f"ours: seeding (3 orgs, collaboration, 3 nodes, user, {self.args.backlog} pending runs)")
        t0 = time.monotonic()
        out = run_checked(
            [str(self.python), str(BENCH_DIR / "api.py"), "--_seed-ours",
             json.dumps({"backlog": self.args.backlog})],
            what="seeding our server", timeout=900, env=self.env, cwd=REPO, logfile=setup_log,
        )
        seed = json.loads(out.strip().splitlines()[-1])
        self.org_ids, self.collab_id = seed["org_ids"], seed["collab_id"]
        self.api_keys = seed["api_keys"]
        log(f"ours: seeded in {time.monotonic() - t0:.1f}s")
        # As documented for production: python -m vantage.server (uvicorn, bodies streamed).
        # Verbosity 0: no access log line per request, as vantage6 runs with --disable-logging.
        self.server = ServerProcess(
            "our server (python -m vantage.server)",
            [str(self.python), "-m", "vantage.server", "-v", "0", "-b", HOST, "-p", str(self.port),
             "vantage.asgi:application"],
            env=self.env, cwd=REPO, logfile=self.workdir / "server.log",
        )
        self.server.wait_healthy(self.port, self.health_path, self.args.start_timeout)
        log(f"ours: server up on {HOST}:{self.port}")

    def authenticate(self):
        c = Client(self.port)
        self.user_token = c.json("POST", "/api/token/", json_body={"username": USERNAME, "password": PASSWORD})["access"]
        self.node_tokens = [
            c.json("POST", "/api/node/token/", json_body={"api_key": k})["access"] for k in self.api_keys
        ]
        c.close()

    def op_login(self, c, i):
        s, d, _ = c.request("POST", "/api/token/", json_body={"username": USERNAME, "password": PASSWORD})
        return check(s, d) or (None if b'"access"' in d else "no access token in response")

    def op_org_list(self, c, i):
        s, d, _ = c.request("GET", "/api/organizations/", token=self.user_token)
        return check(s, d)

    def op_task_create(self, c, i):
        body = {
            "collaboration": self.collab_id, "name": f"bench-{i}", "description": "bench",
            "image": IMAGE, "method": "partial_average",
            "organizations": [{"id": o, "input": TASK_INPUT_B64} for o in self.org_ids],
            "databases": [{"label": "default"}],
        }
        s, d, _ = c.request("POST", "/api/tasks/", json_body=body, token=self.user_token)
        err = check(s, d, (201,))
        if err is None:
            self.created[i] = json.loads(d)
        return err

    def op_run_list(self, c, i):
        s, d, _ = c.request(
            "GET", f"/api/runs/?status=pending&page_size={self.args.page_size}", token=self.node_tokens[0]
        )
        return check(s, d)

    def pending_count(self) -> int:
        c = Client(self.port)
        data = c.json("GET", "/api/runs/?status=pending&page_size=1", token=self.node_tokens[0])
        c.close()
        return data["count"]

    def plan_claims(self):
        """Task i -> its run for organisation i % 3, claimed by that org's node."""
        plan = []
        for i, task in enumerate(self.created):
            if not task:
                continue
            k = i % 3
            for run in task.get("runs", []):
                org = run.get("organization", run.get("organization_id"))
                if isinstance(org, dict):
                    org = org.get("id")
                if org == self.org_ids[k]:
                    plan.append((k, run["id"]))
                    break
        if not plan:
            raise BenchError("ours: task creation response has no runs with an organisation id")
        self.claim_plan = plan

    def op_claim(self, c, i):
        k, run_id = self.claim_plan[i]
        s, d, _ = c.request("POST", f"/api/runs/{run_id}/claim/", token=self.node_tokens[k])
        return check(s, d)

    def op_start(self, c, i):
        k, run_id = self.claim_plan[i]
        s, d, _ = c.request("POST", f"/api/runs/{run_id}/start/", token=self.node_tokens[k])
        return check(s, d)

    def op_finish(self, c, i):
        # As the node agent sends a result up to nodeagent.client.INLINE_RESULT_BYTES
        # (1 MiB): base64 in a JSON body. Larger results go as a streamed multipart upload.
        k, run_id = self.claim_plan[i]
        if len(self.result_blob) > INLINE_RESULT_BYTES:
            body, ctype = multipart(
                {"status": "completed", "exit_code": "0", "log": "bench"},
                {"result": ("result.bin", self.result_blob)},
            )
            s, d, _ = c.request(
                "POST", f"/api/runs/{run_id}/finish/", body=body, token=self.node_tokens[k],
                headers={"Content-Type": ctype},
            )
            return check(s, d)
        s, d, _ = c.request("POST", f"/api/runs/{run_id}/finish/", token=self.node_tokens[k], json_body={
            "status": "completed", "exit_code": 0, "log": "bench",
            "result": base64.b64encode(self.result_blob).decode(),
        })
        return check(s, d)


def seed_ours(params: dict) -> None:
    """Runs inside the project's .venv (bench/api.py --_seed-ours ...)."""
    import django

    django.setup()
    from django.db import transaction

    from accounts.services import user_create
    from collaborations.services import collaboration_create, node_create, organization_create
    from tasks.services import task_create

    with transaction.atomic():
        orgs = [
            organization_create(actor=None, name=name, country="NL", domain=f"{name}.example.org")
            for name in ORG_NAMES
        ]
        collab = collaboration_create(actor=None, name=COLLAB_NAME, organizations=orgs, encrypted=False)
        keys = []
        for org in orgs:
            _node, api_key = node_create(actor=None, organization=org, collaboration=collab, name=f"{org.name}-node")
            keys.append(api_key)
        user = user_create(
            actor=None, username=USERNAME, password=PASSWORD, organization=orgs[0],
            email="", roles=["researcher"],
        )
    for i in range(params["backlog"]):
        task_create(
            actor=user, collaboration=collab, name=f"backlog-{i}", image=IMAGE,
            method="partial_average", organization_inputs={orgs[0].id: TASK_INPUT},
            databases=[{"label": "default"}], description="bench backlog",
        )
    print(json.dumps({"org_ids": [o.id for o in orgs], "collab_id": collab.id, "api_keys": keys}))


# ----------------------------- vantage6 ------------------------------------
def default_v6_venv() -> Path:
    env = os.environ.get("VANTAGE_BENCH_V6_VENV")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vantage" / "bench-v6"


# vantage6 4.15 names its permission attributes with f"{operation}_{scope}" on
# (str, Enum) members, which gives "c_glo" on Python 3.10 but "Operation.CREATE_..."
# on 3.11+ (format() of mixed-in enums changed), so every permission check fails with
# AttributeError. Its server image runs Python 3.10: we use a 3.10 interpreter when
# the machine has one, else this shim (loaded only inside the v6 virtualenv).
ENUM_SHIM = """\
import enum


def _format(self, spec):
    for base in type(self).__mro__:
        if base in (str, int, float):
            return base.__format__(self._value_, spec)
    return str.__format__(str(self), spec)


enum.Enum.__format__ = _format
"""


def find_v6_python(explicit: str | None) -> tuple[str, bool]:
    """(interpreter, needs the 3.11 enum shim)."""
    if explicit:
        return explicit, not _is_py310(explicit)
    candidates = [shutil.which("python3.10") or ""]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))
    candidates += ["/usr/bin/python3.10", "/usr/local/bin/python3.10"]
    for c in candidates:
        if c and _is_py310(c):
            return c, False
    return sys.executable, sys.version_info[:2] != (3, 10)


def _is_py310(python: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys, venv; print(sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "(3, 10)"


class V6(Target):
    label = "v6"
    health_path = "/api/health"

    def __init__(self, args, workdir):
        super().__init__(args, workdir)
        self.venv = Path(args.v6_venv)
        self.python = self.venv / "bin" / "python"
        self.config = workdir / "v6-server.yaml"
        self.created: list[int | None] = []  # task ids
        self.claim_plan: list[tuple[int, int]] = []
        self.version = "?"

    # -- environment ---------------------------------------------------------
    def ensure_env(self):
        req = BENCH_DIR / "requirements-v6.txt"
        stamp = self.venv / ".bench-requirements.sha256"
        digest = hashlib.sha256(req.read_bytes()).hexdigest()
        if self.python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
            return
        if self.python.exists():
            shutil.rmtree(self.venv)
        py, shim = find_v6_python(self.args.v6_python)
        log(f"v6: installing vantage6 server into {self.venv} with {py} (one-off, ~1 min)")
        run_checked([py, "-m", "venv", str(self.venv)], what="creating the v6 virtualenv", timeout=300)
        lines = [line.split("#")[0].strip() for line in req.read_text().splitlines()]
        reqs = [line for line in lines if line and not line.lower().startswith("uwsgi")]
        uwsgi = [line for line in lines if line.lower().startswith("uwsgi")]
        pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        run_checked(pip + reqs, what="pip install vantage6-server", timeout=1200)
        if uwsgi:
            try:
                run_checked(pip + uwsgi, what="pip install uWSGI", timeout=900)
            except BenchError as exc:
                log(f"v6: {exc}; will serve with gevent's WSGI server instead")
        if shim:
            site = self.site_packages()
            (site / "_bench_enum_format_310.py").write_text(ENUM_SHIM)
            (site / "_bench_enum_format_310.pth").write_text("import _bench_enum_format_310\n")
            log("v6: no Python 3.10 found; installed a shim restoring 3.10's format() of str enums")
        stamp.write_text(digest + "\n")

    def site_packages(self) -> Path:
        out = run_checked(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            what="locating v6 site-packages", timeout=60,
        )
        return Path(out.strip())

    def write_config(self):
        wd = self.workdir
        self.config.write_text(
            "\n".join([
                "description: vantage6 4.15 baseline for bench/api.py",
                f"ip: {HOST}",
                f"port: {self.port}",
                "api_path: /api",
                f"uri: sqlite:///{wd / 'v6.sqlite'}",
                "allow_drop_all: false",
                f"jwt_secret_key: {secrets.token_hex(32)}",
                "directories:",
                f"  log: {wd}",
                f"  data: {wd}",
                "logging:",
                "  level: WARNING",
                f"  file: {wd / 'v6-app.log'}",
                "  use_console: false",
                "  backup_count: 1",
                "  max_size: 10240",
                "  format: '%(asctime)s - %(name)-14s - %(levelname)-8s - %(message)s'",
                "  datefmt: '%Y-%m-%d %H:%M:%S'",
                "",
            ])
        )

    def start(self):
        self.ensure_env()
        self.version = run_checked(
            [str(self.python), "-c", "from importlib.metadata import version; print(version('vantage6-server'))"],
            what="reading the vantage6 version", timeout=60,
        ).strip()
        self.write_config()
        uwsgi = self.venv / "bin" / "uwsgi"
        mode = self.args.v6_server
        if mode == "auto":
            mode = "uwsgi" if uwsgi.exists() else "gevent"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("VANTAGE6_CONFIG_LOCATION", None)
        if mode == "uwsgi":
            if not uwsgi.exists():
                raise BenchError(f"--v6-server uwsgi: {uwsgi} is missing")
            wsgi = self.site_packages() / "vantage6" / "server" / "wsgi.py"
            # As vantage6's server image runs it: one worker, gevent, no request log.
            cmd = [
                str(uwsgi), "--http", f"{HOST}:{self.port}", "--http-keepalive",
                "--gevent", "1000", "--http-websockets", "--master", "--die-on-term",
                "--need-app", "--virtualenv", str(self.venv), "--callable", "app",
                "--disable-logging", "--wsgi-file", str(wsgi), "--pyargv", str(self.config),
            ]
        else:
            cmd = [str(self.python), str(BENCH_DIR / "_vantage6.py"), "serve",
                   "--config", str(self.config), "--host", HOST, "--port", str(self.port)]
        self.mode = mode
        self.server = ServerProcess(
            f"vantage6 {self.version} ({mode})", cmd, env=env, cwd=self.workdir,
            logfile=self.workdir / "server.log",
        )
        self.server.wait_healthy(self.port, self.health_path, self.args.start_timeout)
        log(f"v6: vantage6-server {self.version} up on {HOST}:{self.port} ({mode})")
        self.seed()

    def seed(self):
        log("v6: seeding through the REST API as root (3 orgs, collaboration, 3 nodes, user)")
        c = Client(self.port)
        root = c.json("POST", "/api/token/user", json_body={"username": "root", "password": "root"})["access_token"]
        self.org_ids = [
            c.json("POST", "/api/organization", expect=(200, 201), token=root,
                   json_body={"name": n, "country": "NL", "domain": f"{n}.example.org"})["id"]
            for n in ORG_NAMES
        ]
        self.collab_id = c.json(
            "POST", "/api/collaboration", expect=(200, 201), token=root,
            json_body={"name": COLLAB_NAME, "organization_ids": self.org_ids, "encrypted": False},
        )["id"]
        self.api_keys = []
        self.node_ids = []
        for n, org in zip(ORG_NAMES, self.org_ids):
            node = c.json("POST", "/api/node", expect=(200, 201), token=root,
                          json_body={"name": f"{n}-node", "collaboration_id": self.collab_id, "organization_id": org})
            self.api_keys.append(node["api_key"])
            self.node_ids.append(node["id"])
        roles = c.json("GET", "/api/role?name=Researcher", token=root)
        role_ids = [r["id"] for r in roles["data"] if r["name"] == "Researcher"]
        if not role_ids:
            raise BenchError("v6: no default 'Researcher' role found")
        c.json("POST", "/api/user", expect=(200, 201), token=root, json_body={
            "username": USERNAME, "password": PASSWORD, "email": "bench@example.org",
            "firstname": "Bench", "lastname": "User", "organization_id": self.org_ids[0],
            "roles": role_ids[:1],
        })
        c.close()
        log(f"v6: inserting {self.args.backlog} pending runs for node 1 (vantage6 models, one transaction)")
        out = run_checked(
            [str(self.python), str(BENCH_DIR / "_vantage6.py"), "backlog", "--config", str(self.config),
             "--organization", ORG_NAMES[0], "--collaboration", COLLAB_NAME, "--user", USERNAME,
             "--image", IMAGE, "--input-b64", TASK_INPUT_B64, "--count", str(self.args.backlog)],
            what="v6 backlog insert", timeout=600, logfile=self.workdir / "setup.log",
        )
        log(f"v6: backlog {json.loads(out.strip().splitlines()[-1])}")

    def authenticate(self):
        c = Client(self.port)
        self.user_token = c.json("POST", "/api/token/user",
                                 json_body={"username": USERNAME, "password": PASSWORD})["access_token"]
        self.node_tokens = [
            c.json("POST", "/api/token/node", json_body={"api_key": k})["access_token"] for k in self.api_keys
        ]
        c.close()

    def op_login(self, c, i):
        s, d, _ = c.request("POST", "/api/token/user", json_body={"username": USERNAME, "password": PASSWORD})
        return check(s, d) or (None if b'"access_token"' in d else "no access_token in response")

    def op_org_list(self, c, i):
        s, d, _ = c.request("GET", "/api/organization", token=self.user_token)
        return check(s, d)

    def op_task_create(self, c, i):
        # Body as vantage6's client.task.create() builds it for an unencrypted collaboration.
        body = {
            "name": f"bench-{i}", "image": IMAGE, "description": "bench",
            "organizations": [{"id": o, "input": TASK_INPUT_B64} for o in self.org_ids],
            "databases": [{"label": "default"}], "collaboration_id": self.collab_id,
        }
        s, d, _ = c.request("POST", "/api/task", json_body=body, token=self.user_token)
        err = check(s, d, (201,))
        if err is None:
            self.created[i] = json.loads(d)["id"]
        return err

    def op_run_list(self, c, i):
        # What the v6 node's client.run.list(state="open", include_task=True) asks for.
        s, d, _ = c.request(
            "GET",
            f"/api/run?state=open&node_id={self.node_ids[0]}&include=task&per_page={self.args.page_size}",
            token=self.node_tokens[0],
        )
        return check(s, d)

    def pending_count(self) -> int:
        c = Client(self.port)
        s, d, h = c.request("GET", f"/api/run?state=open&node_id={self.node_ids[0]}&per_page=1",
                            token=self.node_tokens[0])
        c.close()
        if s != 200:
            raise BenchError(f"v6 run count: HTTP {s}")
        return int(h.get("total-count", "-1"))

    def plan_claims(self):
        """Task i -> its run for organisation i % 3, handled by that org's node."""
        wanted = {tid for tid in self.created if tid}
        by_task_org: dict[tuple[int, int], int] = {}
        c = Client(self.port)
        for k, token in enumerate(self.node_tokens):
            page = 1
            while True:  # open runs of node k, newest first; stop once past our tasks
                data = c.json("GET", f"/api/run?state=open&node_id={self.node_ids[k]}&per_page=200&page={page}",
                              token=token)
                for run in data["data"]:
                    task = run["task"]["id"] if isinstance(run["task"], dict) else run["task"]
                    if task in wanted:
                        org = run["organization"]["id"] if isinstance(run["organization"], dict) else run["organization"]
                        by_task_org[(task, org)] = run["id"]
                if not data.get("links", {}).get("next") or page * 200 >= len(wanted) + 400:
                    break
                page += 1
        c.close()
        plan = []
        for i, tid in enumerate(self.created):
            if tid:
                k = i % 3
                rid = by_task_org.get((tid, self.org_ids[k]))
                if rid:
                    plan.append((k, rid))
        if not plan:
            raise BenchError("v6: could not find the runs of the created tasks")
        self.claim_plan = plan

    def _patch(self, c, i, body):
        k, run_id = self.claim_plan[i]
        s, d, _ = c.request("PATCH", f"/api/run/{run_id}", json_body=body, token=self.node_tokens[k])
        return check(s, d)

    def op_claim(self, c, i):
        # client.set_task_start_time(): the v6 node's first write when it picks a run up.
        return self._patch(c, i, {"started_at": now_iso()})

    def op_start(self, c, i):
        return self._patch(c, i, {"status": "active"})

    def op_finish(self, c, i):
        # client.run.patch() with a result, unencrypted collaboration: base64 in JSON.
        return self._patch(c, i, {
            "result": base64.b64encode(self.result_blob).decode(), "log": "bench",
            "status": "completed", "finished_at": now_iso(),
        })


def git_describe() -> str:
    """Which of our code is measured: HEAD, plus '+dirty' when the tree has edits."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


# ---------------------------------------------------------------------------
# Workload (identical for both targets)
# ---------------------------------------------------------------------------
OPS = [
    # key, label, held to the throughput goal? (login: timed only; start: extra, shown for info)
    ("login", "login", "timed only"),
    ("org_list", "organisation list", True),
    ("task_create", "task create (3 orgs)", True),
    ("run_list", "node pending-run list", True),
    ("claim", "claim run", True),
    ("start", "start run (extra)", "info"),
    ("finish", "result upload", True),
]


def prepare_step(t: Target, key: str, args) -> int:
    """Untimed set-up before an operation; returns how many requests it makes."""
    n = args.requests
    if key == "login":
        t.result_blob = secrets.token_bytes(args.result_bytes)
        t.authenticate()
        return args.login_requests
    if key == "task_create":
        t.created = [None] * n
    elif key == "run_list":
        log(f"{t.label}: node 1 sees {t.pending_count()} pending runs")
    elif key == "claim":
        t.plan_claims()
    if key in ("claim", "start", "finish"):
        return len(t.claim_plan)
    return n


def run_op(targets: list[Target], key: str, args, all_results: dict[str, dict[str, OpResult]]) -> None:
    """One operation on every target, in --rounds alternating slices.

    With two targets the requests are cut into `rounds` slices and the targets take
    turns (v6 slice 1, ours slice 1, v6 slice 2, ...), so background load on this
    shared machine falls on both alike. Results are stored as they come, so a
    failure still leaves what was measured.
    """
    counts = {t.label: prepare_step(t, key, args) for t in targets}
    rounds = max(1, min(args.rounds if len(targets) > 1 else 1, min(counts.values())))
    for t in targets:
        all_results[t.label][key] = OpResult(key, counts[t.label])
        log(f"{t.label}: {key} x{counts[t.label]} (concurrency {args.concurrency}, {rounds} slice(s)) ...")
    for r in range(rounds):
        for t in targets:
            n = counts[t.label]
            lo, hi = n * r // rounds, n * (r + 1) // rounds
            part = drive(key, range(lo, hi), t.port, args.concurrency, args.op_timeout / rounds,
                         getattr(t, f"op_{key}"), t.server)
            all_results[t.label][key].merge(part)
    for t in targets:
        res = all_results[t.label][key]
        extra = f", {res.errors} errors (first: {res.first_error})" if res.errors else ""
        extra += ", TIME LIMIT HIT" if res.timed_out else ""
        log(f"{t.label}: {key}: {res.done}/{res.planned} ok in {res.wall:.1f}s -> {res.rps:.1f} req/s, "
            f"p50 {res.pct(.5):.1f} ms, p95 {res.pct(.95):.1f} ms{extra}")
        if res.done == 0:
            raise BenchError(f"{t.label}: every '{key}' request failed: {res.first_error}")
        if key == "finish":
            log(f"{t.label}: node 1 sees {t.pending_count()} pending runs after the workload")


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def fmt(x: float, nd=1) -> str:
    return "-" if x != x else f"{x:.{nd}f}"


def report(all_results: dict[str, dict[str, OpResult]], args, meta: dict) -> bool:
    v6, ours = all_results.get("v6"), all_results.get("ours")
    head = ["operation", "v6 p50", "v6 p95", "v6 req/s", "ours p50", "ours p95", "ours req/s", "ours/v6", "goal"]
    rows = []
    all_ok = True
    for key, label, held in OPS:
        a = v6.get(key) if v6 else None
        b = ours.get(key) if ours else None
        ratio = (b.rps / a.rps) if (a and b and a.rps > 0) else float("nan")
        if held is not True:
            goal = held
        elif ratio != ratio:
            goal = "-"
        elif ratio >= args.goal:
            goal = f"ok (>={args.goal:g}x)"
        else:
            goal = f"MISS (<{args.goal:g}x)"
            all_ok = False
        rows.append([
            label,
            fmt(a.pct(.5)) if a else "-", fmt(a.pct(.95)) if a else "-", fmt(a.rps) if a else "-",
            fmt(b.pct(.5)) if b else "-", fmt(b.pct(.95)) if b else "-", fmt(b.rps) if b else "-",
            (fmt(ratio) + "x") if ratio == ratio else "-", goal,
        ])
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head))
    print()
    print(f"latency in ms; {meta['requests']} requests per op ({meta['login_requests']} logins), "
          f"{meta['concurrency']} client threads, {meta['backlog']} pending runs for node 1 before the run")
    if "v6_version" in meta:
        v6_server = ("uWSGI, 1 worker process, gevent 1000" if meta["v6_mode"] == "uwsgi"
                     else "gevent WSGIServer, 1 process")
        print(f"v6: vantage6-server {meta['v6_version']} on {v6_server}; ours: uvicorn (python -m vantage.server), "
              f"1 process, {meta['ours_threads']} HTTP threads, at {meta['ours_commit']}; both SQLite, no Redis")
    pinning = (f"both servers pinned to CPU {meta['cpu']}, the driver to the others" if meta.get("cpu") is not None
               else "no CPU pinning")
    print(f"machine load (1-min average) at start {meta['load_before']:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs; nice {meta['nice']}; {pinning}")
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)))
    # Server CPU per request: where the time goes, and a ratio that shared-machine
    # noise disturbs less than wall-clock throughput does.
    print()
    print("server CPU ms/request (client CPU share of one core); v6/ours CPU ratio:")
    for key, label, _ in OPS:
        parts, cpu = [], {}
        for name, res in (("v6", v6), ("ours", ours)):
            if res and key in res and res[key].done:
                r = res[key]
                cpu[name] = 1000 * r.server_cpu / r.done
                parts.append(f"{name} {cpu[name]:6.1f} ms (client {r.client_cpu / r.wall if r.wall else 0:.2f})")
        if len(cpu) == 2 and cpu["ours"] > 0:
            parts.append(f"ratio {cpu['v6'] / cpu['ours']:.1f}x")
        print(f"  {label:24s} " + (";  ".join(parts) or "-"))
    errs = [(n, k, r) for n, res in all_results.items() for k, r in res.items() if r.errors or r.timed_out]
    for n, k, r in errs:
        print(f"  WARNING {n} {k}: {r.errors} errors, time limit hit: {r.timed_out}; first error: {r.first_error}")
    return all_ok and not errs


# ---------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["ours", "v6"], help="benchmark one server only")
    p.add_argument("--quick", action="store_true", help="short run (fewer requests per op)")
    p.add_argument("--requests", type=int, help="requests per operation (default 200, --quick 40)")
    p.add_argument("--login-requests", type=int, help="login requests (default 40, --quick 10)")
    p.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    p.add_argument("--rounds", type=int, default=4,
                   help="alternate the two servers in this many slices per operation (default 4)")
    p.add_argument("--backlog", type=int, default=1000, help="pending runs for node 1 before the run (default 1000)")
    p.add_argument("--page-size", type=int, default=10,
                   help="page size of the node's pending-run list, both servers (default 10 = v6's default)")
    p.add_argument("--result-bytes", type=int, default=4096, help="size of each uploaded result (default 4096)")
    p.add_argument("--op-timeout", type=float, default=180.0, help="time limit per operation, s (default 180)")
    p.add_argument("--start-timeout", type=float, default=90.0, help="server start-up limit, s (default 90)")
    p.add_argument("--goal", type=float, default=10.0, help="throughput ratio goal (default 10)")
    p.add_argument("--v6-venv", default=str(default_v6_venv()), help="virtualenv for vantage6 (created if missing)")
    p.add_argument("--v6-python", help="interpreter for creating that virtualenv (default: this one)")
    p.add_argument("--v6-server", choices=["auto", "uwsgi", "gevent"], default="auto",
                   help="how to serve vantage6 (default: uWSGI+gevent like its image, else gevent WSGIServer)")
    p.add_argument("--nice", type=int, default=0,
                   help="renice the driver and both servers by this much (e.g. -10 as root on a "
                        "machine busy with other work; both sides get the same priority)")
    p.add_argument("--cpu", default="auto",
                   help="pin both servers to this CPU and the driver to the others (default auto: the "
                        "last CPU, when there are two or more; none: no pinning)")
    p.add_argument("--runs", type=int, default=1,
                   help="full sittings one after the other, each with fresh servers; with more than one, "
                        "a summary gives each operation's ratio per sitting and holds the goal to their median")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON to this file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directories (DBs, logs)")
    p.add_argument("--_seed-ours", dest="seed_ours", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.requests is None:
        args.requests = 40 if args.quick else 200
    if args.login_requests is None:
        args.login_requests = 10 if args.quick else 40
    for name in ("requests", "login_requests", "concurrency", "runs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.requests < 3:
        p.error("--requests must be at least 3 (one task per organisation)")
    usable = sorted(os.sched_getaffinity(0))
    if args.cpu == "none" or (args.cpu == "auto" and len(usable) < 2):
        args.cpu = None
    elif args.cpu == "auto":
        args.cpu = usable[-1]
    else:
        try:
            args.cpu = int(args.cpu)
        except ValueError:
            p.error(f"--cpu: expected a CPU number, auto or none, not {args.cpu!r}")
        if args.cpu not in usable or len(usable) < 2:
            p.error(f"--cpu {args.cpu}: pick one of CPUs {usable} (and leave one for the driver)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.seed_ours:
        seed_ours(json.loads(args.seed_ours))
        return 0

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored (a background job of a script): Ctrl-C or
    # kill -INT must still stop the servers and clean up.
    signal.signal(signal.SIGINT, on_term)
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError as exc:
            print(f"bench: FAILED: --nice {args.nice}: {exc.strerror}", file=sys.stderr)
            return 2
        ServerProcess.nice = args.nice  # their own sessions: renice those autogroups too
    if args.cpu is not None:
        # One core for each server, the same one in turn (they run alternately), as a
        # production host runs one pinned process per core; the driver keeps off it.
        ServerProcess.cpu = args.cpu
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - {args.cpu})
    sittings: list[tuple[dict, dict[str, dict[str, OpResult]]]] = []  # (meta, results) of each
    code = 0
    for number in range(1, args.runs + 1):
        if args.runs > 1:
            log(f"sitting {number} of {args.runs}")
        meta = {"requests": args.requests, "login_requests": args.login_requests, "rounds": args.rounds,
                "nice": args.nice, "cpu": args.cpu, "load_before": os.getloadavg()[0], "ours_commit": git_describe(),
                "ours_threads": os.environ.get("VANTAGE_HTTP_THREADS", "8"),
                "concurrency": args.concurrency, "backlog": args.backlog, "page_size": args.page_size,
                "result_bytes": args.result_bytes}
        all_results: dict[str, dict[str, OpResult]] = {}
        code = sitting(args, meta, all_results)
        if code not in (0, 1):
            return code
        sittings.append((meta, all_results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"sittings": [
            {"meta": meta, "results": {n: {k: r.to_dict() for k, r in res.items()} for n, res in results.items()}}
            for meta, results in sittings]}, indent=2) + "\n")
    if args.runs > 1:
        return 0 if summarise([results for _meta, results in sittings], args) else 1
    return code


def sitting(args, meta: dict, all_results: dict[str, dict[str, OpResult]]) -> int:
    """Start and seed the servers, run every operation, report; 0 when every goal is met, 1 when not, 2 on failure."""
    tmp = Path(tempfile.mkdtemp(prefix="vantage-bench-"))
    targets: list[Target] = []
    failed = True
    try:
        # Both servers are started and seeded first; then each operation runs on
        # both in alternating slices (run_op), so every ratio compares numbers
        # taken side by side on this shared, noisy machine.
        for name, cls in (("v6", V6), ("ours", Ours)):
            if args.only and args.only != name:
                continue
            wd = tmp / name
            wd.mkdir()
            t = cls(args, wd)
            targets.append(t)
            t.start()
            if name == "v6":
                meta["v6_version"], meta["v6_mode"] = t.version, t.mode
            all_results[name] = {}
        for key, _label, _goal in OPS:
            run_op(targets, key, args, all_results)
        ok = report(all_results, args, meta)
        failed = False
        return 0 if ok else 1
    except BenchError as exc:
        if any(all_results.values()):
            report(all_results, args, meta)  # what was measured before the failure
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an unexpected answer: one line, details in a file
        import traceback

        (tmp / "traceback.txt").write_text(traceback.format_exc())
        print(f"bench: FAILED: unexpected {type(exc).__name__}: {exc} (traceback in {tmp}/traceback.txt)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        failed = False  # nothing to inspect: clean up as after a normal run
        return 130
    finally:
        for t in targets:
            t.stop()
        if args.keep_tmp or failed:
            print(f"bench: logs and databases kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def summarise(sittings: list[dict[str, dict[str, OpResult]]], args) -> bool:
    """Each operation's throughput ratio in every sitting, their median and lowest; the goal is held to the median."""
    print()
    print(f"ours/v6 throughput ratio in {len(sittings)} sittings (fresh servers and databases each); "
          f"the goal holds for the median:")
    all_ok = True
    for key, label, held in OPS:
        ratios = []
        for results in sittings:
            a, b = results.get("v6", {}).get(key), results.get("ours", {}).get(key)
            if a and b and a.rps > 0:
                ratios.append(b.rps / a.rps)
        if not ratios:
            continue
        median = statistics.median(ratios)
        if held is not True:
            goal = held
        elif median >= args.goal:
            goal = f"ok (median >={args.goal:g}x)"
        else:
            goal = f"MISS (median <{args.goal:g}x)"
            all_ok = False
        runs = "  ".join(f"{r:5.1f}x" for r in ratios)
        print(f"  {label:24s} {runs}   median {median:5.1f}x  lowest {min(ratios):5.1f}x  {goal}")
    return all_ok


if __name__ == "__main__":
    sys.exit(main())
