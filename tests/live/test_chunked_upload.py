"""Results sent with chunked transfer encoding: parsed like any other, limited like any other.

The server (vantage/body.py) reads a chunked body whole and passes Django its length, so a
chunked upload reaches the same checks as one with a Content-Length; a chunked body
larger than any endpoint accepts is refused while it arrives. Runs on servers whose
results are limited to 1 MiB, and whose bodies are limited to 134 KiB.
"""

import secrets

import pytest
import requests

from tests.live.conftest import create_task

MiB = 1024 * 1024


def _chunked_finish(server, node, run_id: int, result: bytes):
    """POST a finish whose body is a generator: requests sends it chunked (no Content-Length)."""
    boundary = secrets.token_hex(16)

    def body():
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="status"\r\n\r\ncompleted\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="result"; filename="output"\r\n\r\n').encode()
        for start in range(0, len(result), 64 * 1024):
            yield result[start:start + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    return node.post(f"{server.url}/api/runs/{run_id}/finish/", data=body(), timeout=60,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


@pytest.fixture
def running_run(small_limit_server, live_seed, session_for):
    node = session_for(live_seed["nodes"]["b"]["token"])
    run_id = create_task(small_limit_server, live_seed, [live_seed["org_b"]])["runs"][0]["id"]
    for step in ("claim", "start"):
        assert node.post(f"{small_limit_server.url}/api/runs/{run_id}/{step}/", timeout=30).status_code == 200
    return node, run_id


def _unchanged(server, live_db, owner, run_id: int) -> bool:
    run = owner.get(f"{server.url}/api/runs/{run_id}/", timeout=30).json()
    stored = [path for path in (live_db.folder / "media").rglob(f"run-{run_id}*")]
    return (run["status"], run["result_size"], stored) == ("running", None, [])


@pytest.mark.slow
def test_chunked_result_within_the_limit_is_stored(small_limit_server, running_run):
    node, run_id = running_run
    response = _chunked_finish(small_limit_server, node, run_id, b"r" * MiB)
    assert response.status_code == 200, response.text
    assert response.json()["result_size"] == MiB


@pytest.mark.slow
def test_chunked_result_far_beyond_the_limit_is_refused_before_parsing(small_limit_server, running_run,
                                                                        live_db, live_seed, session_for):
    node, run_id = running_run
    response = _chunked_finish(small_limit_server, node, run_id, b"r" * (8 * MiB))
    assert response.status_code == 413
    assert _unchanged(small_limit_server, live_db, session_for(live_seed["owner_token"]), run_id)


@pytest.mark.slow
def test_chunked_result_just_beyond_the_limit_is_cut_off(small_limit_server, running_run, live_db, live_seed,
                                                         session_for):
    node, run_id = running_run
    # Within the allowance for framing and log, so only the upload handler's count stops it.
    response = _chunked_finish(small_limit_server, node, run_id, b"r" * (MiB + 1))
    assert response.status_code == 413
    assert _unchanged(small_limit_server, live_db, session_for(live_seed["owner_token"]), run_id)


def _chunks(total: int, size: int = 64 * 1024):
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


@pytest.mark.slow
def test_chunked_body_beyond_what_any_endpoint_takes_is_refused_with_413(small_body_server):
    response = requests.post(f"{small_body_server.url}/api/token/", data=_chunks(4 * MiB), timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert requests.get(f"{small_body_server.url}/api/health/", timeout=30).status_code == 200


@pytest.mark.slow
def test_chunked_json_within_the_limit_is_parsed(small_body_server, live_seed):
    def body():
        yield b'{"username": "nobody-'
        yield b'here", "password": "wrong password"}'

    response = requests.post(f"{small_body_server.url}/api/token/", data=body(), timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
