"""Real daphne servers on loopback, for tests that need real concurrency and real streaming.

The database follows the test run: with DATABASE_URL (PostgreSQL) a dedicated database
`vantage_live_<random>` is created next to it and dropped afterwards; without it, a
SQLite file in a temporary folder. Either is migrated with `manage.py migrate` and seeded
with `manage.py shell -c` (tests/live/seed.py), in the servers' own environment.

Servers run as `python -m vantage.server` (daphne with bodies kept out of memory) on a
port the kernel picks, with in-memory channel layer and eager Celery: REDIS_URL is not
passed on, so no worker is needed. Each server's output goes to `daphne-<n>.log` in the
session's temporary folder (pytest keeps the last three).
"""

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import requests
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
LISTENING = re.compile(r"Listening on TCP address 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 60


def proc_status_kib(pid: int | str, field: str) -> int:
    """A memory figure (VmRSS, VmHWM, ...) of a process, in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int | str) -> int:
    """Set VmHWM back to the current VmRSS (Linux clear_refs "5"); returns that RSS in KiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return proc_status_kib(pid, "VmRSS")


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class LiveDatabase:
    """The live servers' database and the environment every server subprocess runs with."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.admin_url = None
        self.name = None
        test_run_url = os.environ.get("DATABASE_URL", "")
        if test_run_url.startswith(("postgres://", "postgresql://")):
            parts = urlsplit(test_run_url)
            self.name = f"vantage_live_{secrets.token_hex(4)}"
            self.admin_url = urlunsplit(parts._replace(path="/postgres", query=""))
            url = urlunsplit(parts._replace(path=f"/{self.name}"))
        else:
            url = f"sqlite:///{folder / 'live.sqlite3'}"
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env.update({
            "DJANGO_SETTINGS_MODULE": "vantage.settings",
            "DATABASE_URL": url,
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "VANTAGE_DATA_DIR": str(folder / "data"),
            "VANTAGE_MEDIA_ROOT": str(folder / "media"),
            "VANTAGE_ACCESS_TOKEN_MINUTES": "240",
            "VANTAGE_NODE_TOKEN_MINUTES": "240",
            "TMPDIR": str(folder / "tmp"),
            "PYTHONUNBUFFERED": "1",
        })
        (folder / "tmp").mkdir()
        self.env = env

    def create(self) -> None:
        if self.name:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        self.manage("migrate", "--noinput")

    def drop(self) -> None:
        if self.name:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env,
            capture_output=True, text=True, timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start_server(self, index: int, **env_overrides: str) -> LiveServer:
        log_path = self.folder / f"daphne-{index}.log"
        log = open(log_path, "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "vantage.server", "-b", "127.0.0.1", "-p", "0", "vantage.asgi:application"],
            cwd=BASE_DIR, env={**self.env, **env_overrides}, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = LISTENING.search(log_path.read_text(errors="replace"))
            if found:
                return LiveServer(url=f"http://127.0.0.1:{found.group(1)}", process=process, log_path=log_path)
            if process.poll() is not None:
                break
            time.sleep(0.1)
        process.kill()
        process.wait()
        raise RuntimeError(f"daphne did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def live_db(tmp_path_factory):
    database = LiveDatabase(tmp_path_factory.mktemp("live"))
    database.create()
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture(scope="session")
def live_seed(live_db) -> dict:
    out = live_db.manage("shell", "-c", "from tests.live.seed import main; main()")
    line = next(line for line in out.splitlines() if line.startswith("SEED "))
    return json.loads(line[len("SEED "):])


def _serve(live_db, index: int, **env_overrides: str):
    server = live_db.start_server(index, **env_overrides)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def daphne_server(live_db, live_seed):
    yield from _serve(live_db, 1)


@pytest.fixture(scope="session")
def second_daphne_server(live_db, live_seed):
    """Another server process on the same database, as behind a load balancer."""
    yield from _serve(live_db, 2)


@pytest.fixture(scope="session")
def small_limit_daphne(live_db, live_seed):
    """A server whose results are limited to 1 MiB."""
    yield from _serve(live_db, 3, VANTAGE_MAX_RESULT_BYTES=str(1024 * 1024))


def session_for(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    session.trust_env = False  # loopback only: never through a proxy from the environment
    return session


def create_task(server: LiveServer, seed: dict, organizations: list[int]) -> dict:
    """Create a task over HTTP as the seeded owner; returns the task as the API answers it."""
    run_input = base64.b64encode(json.dumps({"method": "partial", "args": [], "kwargs": {}}).encode()).decode()
    body = {
        "collaboration": seed["collaboration"], "name": "live", "image": "127.0.0.1:5000/live:1",
        "method": "partial", "organizations": [{"id": org, "input": run_input} for org in organizations],
    }
    response = session_for(seed["owner_token"]).post(f"{server.url}/api/tasks/", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()
