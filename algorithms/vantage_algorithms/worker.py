"""The round worker: one container that serves one job's partial rounds at one node.

A central method asks every site the same kind of question many times (a Newton step, a
grid check): each round is a subtask, and each subtask run used to start a container that
imported pandas and the method anew for milliseconds of arithmetic. An image built on
this toolkit may opt in to being started once per job instead:

    LABEL org.vantage.round-worker="1"

(algorithms/images/*/Dockerfile). The node then starts the image's own command with
VANTAGE_ROUND_WORKER set to the path of a Unix socket the node listens on, in a folder of
that job's alone. `python -m vantage_algorithms <module>` sees the variable and comes
here: it imports the module once, connects, says it is ready, and answers one round after
another until the node closes the connection (the job ended, went idle, was killed, or
the agent stopped: the node removes the container then).

Each round is what one container run was: the run's input in, the method's JSON output
and what it printed out, with the exit code a one-run container would have had (0, 2 a
task that cannot be done as asked, 3 refused by the site's policy, 1 anything else), so
the node records, checks and uploads it as that run's own. What a round prints goes to
the node line by line as it is printed, as a container's log does, so a round that is
killed, times out or ends its process keeps what it printed until then. A round that
names a central method is declined: the node gives that run a container of its own.

Frames on the socket: 4 bytes big-endian length, then that many bytes: one byte of kind
and the payload.
    worker → node   H {"ready": 1}                           once, after the import
    node → worker   R {"run": <id>}   I <input bytes>        one round
    worker → node   L <text> ...                             what the round prints, as it prints it
                    A {"run": <id>, "exit_code": <int>}   O <output bytes>
                    or A {"run": <id>, "decline": "<why>"}
nodeagent/rounds.py is the node's side.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
import sys
import time
import warnings
from collections.abc import Mapping

from vantage_algorithms import methods
from vantage_algorithms.policy import Policy

PROTOCOL = 1
LABEL = "org.vantage.round-worker"  # the image label that opts in; its value is PROTOCOL
SOCKET_ENV = "VANTAGE_ROUND_WORKER"
CONNECT_SECONDS = 30.0
MAX_HEADER = 64 * 1024
MAX_INPUT = 64 * 1024**2  # above the server's request limit: a round's input is one run's input
LOG_CHUNK = 64 * 1024  # what a round printed without a newline is sent at this size
HELLO, ROUND, INPUT, LOG, ANSWER, OUTPUT = b"H", b"R", b"I", b"L", b"A", b"O"
_LENGTH = struct.Struct(">I")


class Closed(Exception):
    """The node closed the connection (or spoke out of protocol)."""


def send_frame(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    head = _LENGTH.pack(len(payload) + 1) + kind
    if len(payload) < 65536:
        sock.sendall(head + payload)  # one write for the small frames of a round
    else:
        sock.sendall(head)
        sock.sendall(payload)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1024 * 1024))
        if not chunk:
            raise Closed()
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, kind: bytes, limit: int) -> bytes:
    (size,) = _LENGTH.unpack(recv_exactly(sock, _LENGTH.size))
    if not 1 <= size <= limit + 1 or recv_exactly(sock, 1) != kind:
        raise Closed()  # not a node speaking this protocol
    return recv_exactly(sock, size - 1)


def connect(path: str) -> socket.socket:
    """The node's socket; it listens before the container starts, so this is at once."""
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RoundLog(io.TextIOBase):
    """sys.stdout and sys.stderr during a round: each line goes to the node as it is written."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._pending: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending.append(text)
        self._size += len(text)
        if "\n" in text or self._size >= LOG_CHUNK:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            text, self._pending, self._size = "".join(self._pending), [], 0
            send_frame(self.sock, LOG, text.encode("utf-8", "replace"))


def serve(module_name: str, env: Mapping[str, str]) -> int:
    """Serve rounds until the node hangs up; 0 then. A module that cannot be imported ends
    the worker before it says it is ready (the node runs that round in a container of its
    own, which reports the error as before)."""
    from vantage_algorithms import container

    try:
        module = methods.load_module(module_name)
    except Exception as exc:
        return container.exit_code(exc)
    try:
        import pandas  # noqa: F401  what every round's data.load needs: imported once, before "ready"
    except ImportError:
        pass  # data.load says which package is missing, in the round that needs it
    sock = connect(env[SOCKET_ENV])
    try:
        send_frame(sock, HELLO, json.dumps({"ready": PROTOCOL}).encode())
        while True:
            header = json.loads(recv_frame(sock, ROUND, MAX_HEADER))
            request = recv_frame(sock, INPUT, MAX_INPUT)
            run_id = header.get("run") if isinstance(header, dict) else None
            answer, output = one_round(module, request, env, RoundLog(sock))
            send_frame(sock, ANSWER, json.dumps({"run": run_id, **answer}).encode())
            if "decline" not in answer:
                send_frame(sock, OUTPUT, output)
    except (Closed, ConnectionError, ValueError):
        return 0
    finally:
        sock.close()


def one_round(module, request: bytes, env: Mapping[str, str], printed: io.TextIOBase) -> tuple[dict, bytes]:
    """({"exit_code": c} or {"decline": why}, the round's output); what it prints goes to `printed`."""
    from vantage_algorithms import container

    output = b""
    # Warnings show once per round, as they did once per container.
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), warnings.catch_warnings():
        try:
            Policy.from_env(env)  # first, as in a container of its own: a bad policy is the node's to fix
            method_name, _, _ = container.parse_input(request)
            fn = methods.find_method(module, method_name)
            if fn.vantage_kind != methods.PARTIAL:
                return {"decline": f"{method_name} is a central method"}, b""
            result = container.answer(module, request, env)
            output = json.dumps(result, allow_nan=False).encode()
            code = 0
        except SystemExit as exc:  # what the process would have exited with
            code = exc.code & 0xFF if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except Exception as exc:
            code = container.exit_code(exc)
        printed.flush()
    return {"exit_code": code}, output
