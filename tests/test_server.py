"""The server command (python -m vantage.server) and the HTTP bridge's request mapping."""

import asyncio
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from vantage import server
from vantage.wsgi_bridge import _environ, _WorkerPool

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vantage.server", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("target, message", [
    ("no_colon", "application 'no_colon': expected module:attribute, e.g. vantage.asgi:application"),
    ("vantage.settings:nothing_here", "application 'vantage.settings:nothing_here': vantage.settings has no "
                                      "attribute 'nothing_here'"),
])
def test_a_bad_application_is_one_readable_line(target, message):
    done = _run("-p", "0", target)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"vantage.server: {message}"]


def test_a_port_in_use_is_one_readable_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _run("-p", str(taken.getsockname()[1]), "vantage.asgi:application")
    assert done.returncode == 2
    assert re.fullmatch(r"vantage\.server: \[Errno 98\] Address already in use", done.stderr.strip())


def test_a_port_out_of_range_is_refused():
    done = _run("-p", "70000", "vantage.asgi:application")
    assert done.returncode == 2
    assert "--port 70000: not a port number (0-65535)" in done.stderr


def test_port_zero_is_reported_as_the_port_the_kernel_picked_and_already_accepts():
    args = server.parse_args(["-b", "127.0.0.1", "-p", "0", "x:y"])
    sock, line = server.listening_socket(args)
    with sock:
        port = sock.getsockname()[1]
        assert port > 0
        assert line == f"Listening on TCP address 127.0.0.1:{port}"
        # Whoever reads the line may connect before the event loop runs.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


@pytest.mark.slow
def test_access_log_has_a_line_per_request(tmp_path):
    access_log = tmp_path / "access.log"
    log_path = tmp_path / "server.log"
    env = {**os.environ, "VANTAGE_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "vantage.settings"}
    env.pop("DATABASE_URL", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vantage.server", "-p", "0", "--access-log", str(access_log),
             "vantage.asgi:application"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"Listening on TCP address 127\.0\.0\.1:(\d+)", log_path.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        url = f"http://127.0.0.1:{found.group(1)}/api/version/"
        assert requests.get(url, timeout=30).status_code == 200
        deadline = time.monotonic() + 10
        while "GET /api/version/ HTTP/1.1\" 200" not in (access_log.read_text() if access_log.exists() else ""):
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _scope(headers):
    return {"type": "http", "method": "GET", "path": "/api/x/", "query_string": b"", "headers": headers}


def _body(content: bytes = b"") -> dict:
    return {"file": io.BytesIO(content), "length": len(content)}


def test_headers_become_wsgi_keys_and_repeated_ones_are_joined():
    environ = _environ(_scope([(b"x-trace", b"a"), (b"x-trace", b"b"), (b"content-type", b"application/json"),
                               (b"content-length", b"12")]), _body(b"twelve bytes"))
    assert environ["HTTP_X_TRACE"] == "a,b"
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("application/json", "12")


def test_header_names_with_underscores_are_dropped():
    # Otherwise "x_forwarded_for" would arrive as HTTP_X_FORWARDED_FOR, indistinguishable
    # from the header a trusted proxy sets.
    environ = _environ(_scope([(b"x_forwarded_for", b"10.0.0.1"), (b"authorization_x", b"y")]), _body())
    assert "HTTP_X_FORWARDED_FOR" not in environ
    assert "HTTP_AUTHORIZATION_X" not in environ


def test_worker_pool_returns_results_and_raises_errors_on_the_loop():
    pool = _WorkerPool(2, name="test-http")

    def fails():
        raise ValueError("from the worker")

    async def main():
        loop = asyncio.get_running_loop()
        assert await pool.run(loop, lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ValueError, match="from the worker"):
            await pool.run(loop, fails)
        assert sorted(await asyncio.gather(*(pool.run(loop, lambda i=i: i * i) for i in range(20)))) == sorted(
            i * i for i in range(20))

    asyncio.run(main())
    assert len([t for t in threading.enumerate() if t.name.startswith("test-http_")]) == 2


def test_worker_pool_starts_no_thread_before_the_first_call():
    _WorkerPool(3, name="idle-http")
    assert not [t for t in threading.enumerate() if t.name.startswith("idle-http_")]


def test_worker_pool_leaves_a_cancelled_call_alone():
    pool = _WorkerPool(1, name="cancel-http")
    release = threading.Event()
    finished = threading.Event()

    def slow():
        release.wait(10)
        finished.set()
        return "late"

    async def main():
        loop = asyncio.get_running_loop()
        future = pool.run(loop, slow)
        future.cancel()
        release.set()
        assert await pool.run(loop, lambda: "next") == "next"  # the same thread, after slow
        return future

    future = asyncio.run(main())
    assert finished.is_set() and future.cancelled()


def test_a_port_and_a_unix_socket_together_are_refused(tmp_path):
    done = _run("-u", str(tmp_path / "s.sock"), "-p", "8000", "vantage.asgi:application")
    assert done.returncode == 2
    assert "give either --port or --unix-socket, not both" in done.stderr


def _run_with(env_changes: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FILE", "DEBUG")}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-m", "vantage.server", *args, "vantage.asgi:application"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)


A_KEY = "k" * 48


@pytest.mark.parametrize("env_changes, bind, variable", [
    ({}, "0.0.0.0", "set SECRET_KEY (or SECRET_KEY_FILE)"),  # the defaults: development key, DEBUG on
    ({"DEBUG": "true"}, "::", "set SECRET_KEY (or SECRET_KEY_FILE)"),
    ({"SECRET_KEY": A_KEY}, "0.0.0.0", "set DEBUG=false (or pass --debug-off-loopback to force it)"),
    ({"SECRET_KEY": A_KEY, "DEBUG": "true"}, "", "set DEBUG=false (or pass --debug-off-loopback to force it)"),
])
def test_off_loopback_the_development_key_or_debug_refuse_to_start_with_one_line(env_changes, bind, variable):
    done = _run_with(env_changes, "-b", bind, "-p", "0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vantage.server: refusing to listen on ") and variable in lines[0]
    assert "Listening" not in done.stderr


def test_even_forced_debug_does_not_allow_the_development_key_off_loopback():
    done = _run_with({"DEBUG": "true"}, "-b", "0.0.0.0", "-p", "0", "--debug-off-loopback")
    assert done.returncode == 2 and "set SECRET_KEY (or SECRET_KEY_FILE)" in done.stderr


@pytest.mark.parametrize("bind, unix, loopback", [
    ("127.0.0.1", False, True), ("127.0.0.2", False, True), ("::1", False, True), ("localhost", False, True),
    ("0.0.0.0", False, False), ("::", False, False), ("", False, False), ("0.0.0.0", True, True),
])
def test_what_counts_as_loopback(bind, unix, loopback):
    args = server.parse_args(["-b", bind, *(["-u", "/tmp/x.sock"] if unix else []), "x:y"])
    assert server.on_loopback(args) is loopback


def test_forced_debug_with_a_real_key_may_listen_beyond_loopback(settings):
    settings.SECRET_KEY, settings.DEBUG = A_KEY, True
    assert server.refusal(server.parse_args(["-b", "0.0.0.0", "--debug-off-loopback", "x:y"]), settings) is None
    assert "DEBUG=false" in server.refusal(server.parse_args(["-b", "0.0.0.0", "x:y"]), settings)
    settings.DEBUG = False
    assert server.refusal(server.parse_args(["-b", "0.0.0.0", "x:y"]), settings) is None


@pytest.mark.slow
def test_loopback_and_unix_sockets_start_with_the_development_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FILE", "DEBUG")}
    env["VANTAGE_DATA_DIR"] = str(tmp_path)
    for where in (["-b", "127.0.0.1", "-p", "0"], ["-u", str(tmp_path / "s.sock")]):
        log_path = tmp_path / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "vantage.server", *where, "vantage.asgi:application"],
                                       cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "Listening on" not in log_path.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=30)
