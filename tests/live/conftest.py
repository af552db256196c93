"""Real server processes on loopback, for tests that need real concurrency and real streaming.

The database follows the test run: with DATABASE_URL (PostgreSQL) a dedicated database
`vantage_live_<random>` is created next to it and dropped afterwards; without it, a
SQLite file in a temporary folder. Either is migrated with `manage.py migrate` and seeded
with `manage.py shell -c` (tests/live/seed.py), in the servers' own environment.

Servers run as `python -m vantage.server` (uvicorn, bodies read before Django runs) on a
port the kernel picks, with in-memory channel layer and eager Celery: REDIS_URL is not
passed on, so no worker is needed. Each server's output goes to `server-<n>.log` in the
session's temporary folder (pytest keeps the last three).

Tests of the production layout (several servers sharing events, a Celery worker) ask for
`live_redis`: one database of the local Redis (127.0.0.1:6379) held by this session
alone, then `redis_api_servers` (two servers with REDIS_URL set) and `EventSocket`
clients.
"""

import base64
import json
import os
import queue
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
import requests
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as websocket_connect

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
        self.url = url
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

    def query(self, sql: str, *params) -> list[tuple]:
        """Read the live database directly, as an outside observer (placeholders: %s)."""
        if self.name:
            with psycopg.connect(self.url) as conn:
                return conn.execute(sql, params).fetchall()
        with closing(sqlite3.connect(self.folder / "live.sqlite3")) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env,
            capture_output=True, text=True, timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start_server(self, index: int, **env_overrides: str) -> LiveServer:
        log_path = self.folder / f"server-{index}.log"
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
        raise RuntimeError(f"the server did not start:\n{log_path.read_text(errors='replace')}")


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
def api_server(live_db, live_seed):
    yield from _serve(live_db, 1)


@pytest.fixture(scope="session")
def second_api_server(live_db, live_seed):
    """Another server process on the same database, as behind a load balancer."""
    yield from _serve(live_db, 2)


@pytest.fixture(scope="session")
def small_limit_server(live_db, live_seed):
    """A server whose results are limited to 1 MiB."""
    yield from _serve(live_db, 3, VANTAGE_MAX_RESULT_BYTES=str(1024 * 1024))


@pytest.fixture(scope="session")
def small_request_server(live_db, live_seed):
    """A server refusing JSON and form bodies above 64 KiB (VANTAGE_MAX_REQUEST_BYTES)."""
    yield from _serve(live_db, 4, VANTAGE_MAX_REQUEST_BYTES=str(64 * 1024))


@pytest.fixture(scope="session")
def small_body_server(live_db, live_seed):
    """A server whose largest accepted body of any kind is small: results up to 64 KiB, a
    log of 1,024 characters, other bodies up to 64 KiB (134 KiB with the form framing)."""
    yield from _serve(live_db, 5, VANTAGE_MAX_RESULT_BYTES=str(64 * 1024), VANTAGE_MAX_REQUEST_BYTES=str(64 * 1024),
                      VANTAGE_RUN_LOG_MAX_CHARS="1024")


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    session.trust_env = False  # loopback only: never through a proxy from the environment
    return session


@pytest.fixture
def session_for():
    """session_for(token) -> a requests session sending that token; closed after the test."""
    sessions = []

    def build(token: str) -> requests.Session:
        sessions.append(_session(token))
        return sessions[-1]

    yield build
    for session in sessions:
        session.close()


def create_task(server: LiveServer, seed: dict, organizations: list[int]) -> dict:
    """Create a task over HTTP as the seeded owner; returns the task as the API answers it."""
    run_input = base64.b64encode(json.dumps({"method": "partial", "args": [], "kwargs": {}}).encode()).decode()
    body = {
        "collaboration": seed["collaboration"], "name": "live", "image": "127.0.0.1:5000/live:1",
        "method": "partial", "organizations": [{"id": org, "input": run_input} for org in organizations],
    }
    with _session(seed["owner_token"]) as owner:
        response = owner.post(f"{server.url}/api/tasks/", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


REDIS_SERVER = "redis://127.0.0.1:6379"
# Databases 9-15 of the local Redis belong to live test sessions; 0-8 are left to
# development servers and anything else on the machine.
REDIS_TEST_DATABASES = range(9, 16)
REDIS_CLAIM_KEY = "vantage-live-tests:session"
REDIS_CLAIM_SECONDS = 2 * 3600


class LiveRedis:
    """One Redis database held by this test session alone, empty at start and at end.

    Test sessions may run side by side (a SQLite and a PostgreSQL pass, two developers):
    each claims a free database with SET NX, so no session flushes another's events or
    Celery queue. A claim left by a crashed session expires after REDIS_CLAIM_SECONDS.
    """

    def __init__(self):
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        for number in REDIS_TEST_DATABASES:
            client = redis.Redis.from_url(f"{REDIS_SERVER}/{number}")
            if client.set(REDIS_CLAIM_KEY, token, nx=True, ex=REDIS_CLAIM_SECONDS):
                self.number, self.client = number, client
                self.url = f"{REDIS_SERVER}/{number}"
                self.clear(keep_claim=True)  # what an earlier session left behind
                return
            client.close()
        raise RuntimeError(f"every Redis database in {list(REDIS_TEST_DATABASES)} is held by another test session")

    def clear(self, *, keep_claim: bool = False) -> None:
        if not keep_claim:
            self.client.flushdb()
            return
        for key in self.client.scan_iter(count=1000):
            if key != REDIS_CLAIM_KEY.encode():
                self.client.delete(key)

    def close(self) -> None:
        self.clear()
        self.client.close()


@pytest.fixture(scope="session")
def live_redis():
    held = LiveRedis()
    try:
        yield held
    finally:
        held.close()


@pytest.fixture(scope="session")
def redis_api_servers(live_db, live_seed, live_redis):
    """Two server processes sharing the database and a Redis channel layer (production layout)."""
    servers = []
    try:
        for index in (11, 12):
            servers.append(live_db.start_server(index, REDIS_URL=live_redis.url))
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def live_outsider_token(live_db, live_seed) -> str:
    """A researcher of an organisation outside the seeded collaboration."""
    out = live_db.manage("shell", "-c", (
        "from tests import factories\n"
        "org = factories.make_organization('Live outsider hospital')\n"
        "factories.make_collaboration([org], name='Live other collaboration')\n"
        "print('TOKEN', factories.access_token(factories.make_user(org, username='live-outsider')))\n"
    ))
    return next(line.split()[1] for line in out.splitlines() if line.startswith("TOKEN "))


@dataclass
class Received:
    at: float  # time.monotonic() when the frame was read off the socket
    event: dict


class EventSocket:
    """A websocket to a live server, read by a background thread that timestamps every event.

    The thread reads as frames arrive, so `Received.at` is when the event reached this
    process, not when a test got round to looking at it.
    """

    def __init__(self, server: LiveServer, path: str, token: str):
        url = server.url.replace("http://", "ws://", 1) + path
        self._socket = websocket_connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30, proxy=None,
            compression=None, legacy=True,  # closed by close(), not by a with-block
        )
        self._events: queue.Queue[Received] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.hello = self.next(timeout=30).event

    def _read(self) -> None:
        try:
            for frame in self._socket:
                self._events.put(Received(time.monotonic(), json.loads(frame)))
        except ConnectionClosed:
            pass

    def next(self, timeout: float) -> Received:
        return self._events.get(timeout=timeout)

    def wait_for(self, predicate, timeout: float = 10) -> Received:
        """The first event matching `predicate`; events before it are dropped."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                received = self.next(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching event within {timeout} s; got {seen}") from None
            if predicate(received.event):
                return received
            seen.append(received.event)

    def drain(self, quiet: float) -> list[dict]:
        """Every event until none arrives for `quiet` seconds."""
        events = []
        while True:
            try:
                events.append(self.next(timeout=quiet).event)
            except queue.Empty:
                return events

    def close(self) -> None:
        self._socket.close()
        self._reader.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
