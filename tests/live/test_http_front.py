"""The HTTP front of a real `python -m vantage.server`: slow and aborted bodies (vantage/body.py), unknown websockets.

Bodies are read whole on the event loop before Django runs, so clients dripping their
bodies hold no worker thread: the API keeps answering while a hundred of them are open,
and each is answered 408 once it falls behind its deadline (here VANTAGE_BODY_TIMEOUT_SECONDS=4
at a minimum rate far above one byte every two seconds). An upload cut off midway
leaves no temporary file behind and one quiet line in the log.
"""

import os
import re
import select
import socket
import struct
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as websocket_connect

from tests.live.conftest import create_task

BODY_TIMEOUT = 4
SLOW_CLIENTS = 100
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def body_timeout_server(live_db, live_seed):
    server = live_db.start_server(21, VANTAGE_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT))
    try:
        yield server
    finally:
        server.stop()


# uvicorn's access line ends with the status after the quoted request: `... "GET /x HTTP/1.1" 500`;
# a bare "500" would also match a client port such as 127.0.0.1:50042.
_ANSWERED_500 = re.compile(r'" 500\b')


def _server_errors(lines: list[str]) -> list[str]:
    return [line for line in lines if _ANSWERED_500.search(line) or "ERROR" in line or "Traceback" in line]


def _address(server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname, parts.port


def _open_slow(server, index: int) -> socket.socket:
    """A POST whose headers arrive at once and whose body never will: half announce 1000 bytes, half are chunked."""
    sock = socket.create_connection(_address(server), timeout=10)
    framing = (b"Content-Length: 1000\r\n" if index % 2 == 0 else b"Transfer-Encoding: chunked\r\n")
    path = b"/api/token/" if index % 2 == 0 else b"/api/tasks/"
    sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + framing + b"\r\n")
    sock.setblocking(False)
    return sock


def _drip(socks: list[socket.socket], stop: threading.Event) -> None:
    """One byte of body every two seconds to each connection (a one-byte chunk for the chunked ones)."""
    while not stop.wait(2):
        for index, sock in enumerate(socks):
            try:
                sock.send(b"{" if index % 2 == 0 else b"1\r\n{\r\n")
            except OSError:
                pass  # answered and closed by the server already


def _answers(socks: list[socket.socket], deadline: float) -> dict[int, bytes]:
    """What each connection received until the server closed it (or the deadline)."""
    received = {i: b"" for i in range(len(socks))}
    open_ = dict(enumerate(socks))
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(list(open_.values()), [], [], 0.5)
        for sock in readable:
            index = next(i for i, s in open_.items() if s is sock)
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                received[index] += data
            else:
                del open_[index]
    return received


def _timed_get(session: requests.Session, url: str) -> float:
    started = time.monotonic()
    response = session.get(url, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    return elapsed


@pytest.mark.slow
def test_a_hundred_slow_bodies_hold_no_worker_and_are_answered_408(body_timeout_server, live_seed, session_for):
    server = body_timeout_server
    owner = session_for(live_seed["owner_token"])
    anonymous = requests.Session()
    anonymous.trust_env = False
    for session, path in ((anonymous, "/api/health/"), (owner, "/api/organizations/")):
        _timed_get(session, f"{server.url}{path}")  # warm: connections, first-request imports

    socks = [_open_slow(server, i) for i in range(SLOW_CLIENTS)]
    opened = time.monotonic()
    stop = threading.Event()
    dripper = threading.Thread(target=_drip, args=(socks, stop), daemon=True)
    dripper.start()
    try:
        time.sleep(1)  # all hundred are inside the server, waiting for their bodies
        timings = []
        while time.monotonic() - opened < BODY_TIMEOUT - 1:
            timings.append(("health", _timed_get(anonymous, f"{server.url}/api/health/")))
            timings.append(("list", _timed_get(owner, f"{server.url}/api/organizations/")))
            time.sleep(0.2)
        # Each answer within 100 ms; a median keeps one scheduler hiccup on this shared
        # machine from deciding, the maximum bound keeps a stall (the old failure: > 15 s) out.
        for name in ("health", "list"):
            values = sorted(t for n, t in timings if n == name)
            assert values[len(values) // 2] < 0.1, (name, values)
            assert values[-1] < 1.0, (name, values)

        answers = _answers(socks, opened + BODY_TIMEOUT + 15)
        closed = time.monotonic() - opened
    finally:
        stop.set()
        dripper.join(5)
        for sock in socks:
            sock.close()
        anonymous.close()
    statuses = [data.split(b"\r\n", 1)[0] for data in answers.values()]
    assert statuses == [b"HTTP/1.1 408 Request Timeout"] * SLOW_CLIENTS, set(statuses)
    assert all(b'"code": "timeout"' in data for data in answers.values())
    assert BODY_TIMEOUT - 0.5 < closed < BODY_TIMEOUT + 15
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log


def _fds_under(pid: int, folder: Path) -> list[str]:
    """Files the process holds open inside folder (unlinked temporary files included)."""
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith(str(folder)):
            held.append(target)
    return held


@pytest.mark.slow
def test_an_upload_cut_off_midway_leaves_no_file_and_one_quiet_line(body_timeout_server, live_db, live_seed,
                                                                    session_for):
    server = body_timeout_server
    node = session_for(live_seed["nodes"]["b"]["token"])
    run_id = create_task(server, live_seed, [live_seed["org_b"]])["runs"][0]["id"]
    for step in ("claim", "start"):
        assert node.post(f"{server.url}/api/runs/{run_id}/{step}/", timeout=30).status_code == 200
    tmp = Path(live_db.env["TMPDIR"])
    log_before = server.log_path.read_text(errors="replace")

    boundary = "cutoffboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="status"\r\n\r\ncompleted\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="result"; filename="output"\r\n\r\n').encode()
    sock = socket.create_connection(_address(server), timeout=30)
    sock.sendall(
        f"POST /api/runs/{run_id}/finish/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {live_seed['nodes']['b']['token']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {50 * MiB}\r\n\r\n".encode()
        + head)
    for _ in range(8):  # 8 MiB of a 50 MB result: past the in-memory part, so on disk
        sock.sendall(b"r" * MiB)
    deadline = time.monotonic() + 10
    while not _fds_under(server.pid, tmp):
        assert time.monotonic() < deadline, "the partial upload never reached a temporary file"
        time.sleep(0.05)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, as a crash
    sock.close()

    cut = time.monotonic()
    while _fds_under(server.pid, tmp) or any(tmp.iterdir()):
        assert time.monotonic() - cut < 1, (_fds_under(server.pid, tmp), list(tmp.iterdir()))
        time.sleep(0.05)
    time.sleep(0.5)  # whatever the server would still log about it
    new_lines = server.log_path.read_text(errors="replace")[len(log_before):].splitlines()
    about_it = [line for line in new_lines if f"/api/runs/{run_id}/finish/" in line]
    assert len(about_it) == 1 and "client went away after" in about_it[0], new_lines
    assert not _server_errors(new_lines), new_lines
    run = session_for(live_seed["owner_token"]).get(f"{server.url}/api/runs/{run_id}/", timeout=30).json()
    assert run["status"] == "running"


def test_an_unknown_websocket_path_is_closed_cleanly_not_answered_500(body_timeout_server):
    log_before = body_timeout_server.log_path.read_text(errors="replace")
    url = body_timeout_server.url.replace("http://", "ws://") + "/ws/no-such-socket/"
    with websocket_connect(url, open_timeout=10, proxy=None) as socket_:
        with pytest.raises(ConnectionClosed) as closed:
            socket_.recv(timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4404, "No websocket at this path.")
    new = body_timeout_server.log_path.read_text(errors="replace")[len(log_before):].splitlines()
    assert not _server_errors(new), new
