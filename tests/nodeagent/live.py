"""A live Vantage server (own database) and real node agent processes.

LiveServer runs `python -m vantage.server vantage.asgi:application` (as in production)
on a free loopback port with a database of its own (a SQLite file, or a fresh
PostgreSQL database when the tests run with a postgres DATABASE_URL), seeds it through
tests/nodeagent/seed.py, and can be stopped and started again on the same port (the
server-down test).
NodeProcess runs `manage.py run_node` exactly as a hospital would: another process,
no DATABASE_URL, its own node.toml.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from tests.nodeagent import images
from tests.nodeagent.images import BASE_IMAGE

STOP_TIMEOUT = 30  # seconds an agent may take to stop after SIGTERM
REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# Most tests poll fast, so they do not depend on the websocket; test_websocket_* turn polling down.
WORLD_BATCH = 6
FAST_POLLING = "poll_interval = 0.3\nkill_poll_interval = 0.5"
# Tests of the container contract (probe's untyped outputs, live logs) release what the
# container writes, as a node with that policy does; the output gate's own tests pass
# `output=""` (a new node's defaults: opaque outputs and logs held) or their own policy.
RELEASE_EVERYTHING = 'opaque = "release"\nlogs = "release"'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_admin_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/postgres"


class LiveServer:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "server.log"
        base = os.environ.get("DATABASE_URL", "")
        self._pg_name = None
        if base.startswith(("postgres://", "postgresql://")):
            self._pg_name = f"vantage_live_{uuid.uuid4().hex[:10]}"
            self.database_url = base.rsplit("/", 1)[0] + f"/{self._pg_name}"
        else:
            self.database_url = f"sqlite:///{workdir / 'live.sqlite3'}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))},
            "DJANGO_SETTINGS_MODULE": "vantage.settings",
            "DATABASE_URL": self.database_url,
            "VANTAGE_DATA_DIR": str(workdir / "data"),
            "VANTAGE_MEDIA_ROOT": str(workdir / "media"),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("REDIS_URL", None)
        self._worlds: list[dict] = []
        self._batches = 0

    def setup(self) -> None:
        if self._pg_name:
            import psycopg

            with psycopg.connect(_postgres_admin_url(os.environ["DATABASE_URL"]), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self._pg_name}"')
        self._batches = 1
        self._worlds = self.seed("migrate_and_worlds", count=WORLD_BATCH, prefix="b1-")
        self.start()

    def teardown(self) -> None:
        self.stop()
        if self._pg_name:
            import psycopg

            with psycopg.connect(_postgres_admin_url(os.environ["DATABASE_URL"]), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')

    def start(self) -> None:
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "vantage.server", "-b", "127.0.0.1", "-p", str(self.port), "vantage.asgi:application"],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/api/health/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within 60 s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def world(self) -> dict:
        """A fresh world (organisations, collaboration, researcher, nodes) for one test.

        Seeded in batches: each seeding is a process start, a world is a few rows."""
        if not self._worlds:
            self._batches += 1
            self._worlds = self.seed("worlds", count=WORLD_BATCH, prefix=f"b{self._batches}-")
        return self._worlds.pop(0)

    def seed(self, op: str, **kwargs):
        done = subprocess.run([PYTHON, "-m", "tests.nodeagent.seed", op, json.dumps(kwargs)], cwd=REPO_ROOT,
                              env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"seed {op} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["result"]


class Researcher:
    """What a researcher does, through the REST API only."""

    def __init__(self, server: LiveServer, username: str, password: str):
        self.server = server
        response = requests.post(f"{server.url}/api/token/", json={"username": username, "password": password},
                                 timeout=10)
        response.raise_for_status()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access']}"

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, f"{self.server.url}/api/{path}", timeout=30, **kwargs)

    def create_task(self, *, collaboration: int, image: str, method: str, organizations: list[int],
                    kwargs: dict | None = None, per_org_kwargs: dict | None = None,
                    databases: list | None = None) -> dict:
        def encoded(org_id: int) -> str:
            args = (per_org_kwargs or {}).get(org_id, kwargs or {})
            return base64.b64encode(json.dumps({"method": method, "args": [], "kwargs": args}).encode()).decode()

        response = self.api("POST", "tasks/", json={
            "collaboration": collaboration, "name": f"test {method}", "image": image, "method": method,
            "organizations": [{"id": org, "input": encoded(org)} for org in organizations],
            "databases": databases if databases is not None else [{"label": "default"}],
        })
        assert response.status_code == 201, response.text
        return response.json()

    def runs(self, task_id: int) -> list[dict]:
        response = self.api("GET", f"runs/?task={task_id}&page_size=100")
        assert response.status_code == 200, response.text
        return response.json()["results"]

    def run(self, run_id: int) -> dict:
        response = self.api("GET", f"runs/{run_id}/")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_runs(self, task_id: int, *, timeout: float = 60, until=None) -> list[dict]:
        """Poll until every run of the task is final (or `until(runs)` holds)."""
        final = {"completed", "failed", "crashed", "killed", "rejected", "timed_out"}
        until = until or (lambda runs: runs and all(r["status"] in final for r in runs))
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs(task_id)
            if until(runs):
                return runs
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id}: runs still {[(r['id'], r['status']) for r in runs]}")
            time.sleep(0.2)

    def result(self, run_id: int):
        response = self.api("GET", f"runs/{run_id}/result/")
        assert response.status_code == 200, response.text
        return json.loads(response.content)

    def kill(self, task_id: int) -> None:
        response = self.api("POST", f"tasks/{task_id}/kill/")
        assert response.status_code in (200, 202, 204), response.text


class AgentDidNotStop(AssertionError):
    """The agent still ran STOP_TIMEOUT seconds after the signal; it was aborted."""


class NodeProcess:
    """`manage.py run_node` as its own process, with no DATABASE_URL."""

    def __init__(self, workdir: Path, name: str, *, server_url: str, api_key: str, registry, databases: dict,
                 policy: str = "", limits: str = "", algorithm_env: str = "", server: str = "", top: str = "",
                 output: str | None = None):
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.task_folder = self.dir / "tasks"
        self.config_path = self.dir / "node.toml"
        self.log_path = self.dir / "agent.log"
        # The base image the tests were set up with (VANTAGE_BASE_IMAGE) relays, unless a test names another.
        forwarder = "" if "forwarder_image" in top else f'forwarder_image = "{BASE_IMAGE}"'
        # Most tests run the unsigned test images: they say so here. Tests of signatures
        # (tests/nodeagent/test_signatures_live.py) set require_signature themselves.
        if "require_signature" not in policy:
            policy = f"require_signature = false\n{policy}"
        db_lines = "".join(
            f'[databases.{label}]\ntype = "csv"\npath = "{path}"\n' for label, path in databases.items()
        )
        self.config_path.write_text(
            f'task_folder = "{self.task_folder}"\n{top}\n'
            f"{forwarder}\n"
            f"[server]\nurl = \"{server_url}\"\napi_key = \"{api_key}\"\n"
            f"{server or FAST_POLLING}\n"
            f'[registries."{registry.host}"]\nusername = "{registry.username}"\n'
            f'password_file = "{registry.password_file}"\n'
            f"{db_lines}"
            f"[policy]\n{policy}\n[limits]\nmemory = \"256m\"\ncpus = 1\n{limits}\n"
            f"[algorithm_env]\n{algorithm_env}\n"
            f"[output]\n{RELEASE_EVERYTHING if output is None else output}\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
        # Nothing listens on port 1: any database access by the agent would fail loudly.
        # PYTHONFAULTHANDLER: an agent that does not stop in time is aborted (SIGABRT) and
        # writes every thread's stack to its log, which the failing test then shows.
        self.env.update({"DJANGO_SETTINGS_MODULE": "vantage.settings", "PYTHONUNBUFFERED": "1",
                         "PYTHONFAULTHANDLER": "1",
                         "DATABASE_URL": "postgres://nobody@127.0.0.1:1/no_database"})
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "a")
        self.process = subprocess.Popen([PYTHON, "manage.py", "run_node", "--config", str(self.config_path)],
                                        cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_connected(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while "connected to" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"node agent did not connect:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=10)
            raise AgentDidNotStop(f"node agent still running {STOP_TIMEOUT} s after signal {signum}; "
                                 f"its log, ending with its threads' stacks:\n{self.log()[-12000:]}") from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def tear_down(site, server_url: str, docker_client) -> None:
    """Stop a site's agents, print their logs, and remove their containers and forwarders:
    stopped agents leave them for the next agent, and in a test there is none."""
    stuck = []
    for node in site.nodes:
        try:
            node.stop()
        except AgentDidNotStop as exc:  # the others are still stopped and their containers removed
            stuck.append(str(exc))
    print(site.agent_logs())
    images.remove_server_leftovers(docker_client, server_url)
    assert not stuck, "\n\n".join(stuck)
