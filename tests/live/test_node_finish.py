"""The node agent's client reporting a run's end to a real server: inline or streamed.

A result up to nodeagent.client.INLINE_RESULT_BYTES goes as base64 in a JSON body; a
larger one as a multipart upload streamed from disk; an inline body the server refuses
as too large (its VANTAGE_MAX_REQUEST_BYTES) is sent again as a multipart upload.
"""

import hashlib
import os

import pytest

from nodeagent.client import INLINE_RESULT_BYTES, ServerClient
from tests.live.conftest import create_task


class RecordingClient(ServerClient):
    """The real client, noting how each finish request carried its body."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.finish_forms: list[str] = []

    def _send(self, method, path, **kwargs):
        if path.endswith("/finish/"):
            self.finish_forms.append("json" if "json" in kwargs else "multipart")
        return super()._send(method, path, **kwargs)


def _running_run(server, seed) -> tuple[RecordingClient, int]:
    client = RecordingClient(server.url, seed["nodes"]["b"]["api_key"])
    run_id = create_task(server, seed, [seed["org_b"]])["runs"][0]["id"]
    assert client.claim(run_id) is not None
    client.start(run_id)
    return client, run_id


def _stored(server, seed, session_for, run_id: int) -> tuple[dict, bytes]:
    owner = session_for(seed["owner_token"])
    run = owner.get(f"{server.url}/api/runs/{run_id}/", timeout=30).json()
    body = owner.get(f"{server.url}/api/runs/{run_id}/result/", timeout=60).content if run["result_size"] else b""
    return run, body


@pytest.mark.parametrize("size, forms", [
    (0, ["json"]), (4096, ["json"]), (INLINE_RESULT_BYTES, ["json"]), (INLINE_RESULT_BYTES + 1, ["multipart"]),
])
def test_result_is_sent_inline_up_to_the_threshold_then_streamed(api_server, live_seed, session_for, tmp_path,
                                                                  size, forms):
    client, run_id = _running_run(api_server, live_seed)
    result = tmp_path / "output"
    result.write_bytes(os.urandom(size))
    client.finish(run_id, status="completed", exit_code=0, error_kind="", log="done\n", result=result)
    assert client.finish_forms == forms
    run, body = _stored(api_server, live_seed, session_for, run_id)
    assert (run["status"], run["exit_code"], run["result_size"]) == ("completed", 0, size)
    assert run["result_sha256"] == hashlib.sha256(result.read_bytes()).hexdigest()
    assert body == result.read_bytes()


def test_a_failure_without_result_is_reported_inline(api_server, live_seed, session_for):
    client, run_id = _running_run(api_server, live_seed)
    client.finish(run_id, status="crashed", exit_code=None, error_kind="image", log="[node] no such image\n",
                  result=None)
    assert client.finish_forms == ["json"]
    run, _ = _stored(api_server, live_seed, session_for, run_id)
    assert (run["status"], run["exit_code"], run["error_kind"], run["result_size"]) == ("crashed", None, "image", None)


def test_inline_body_refused_as_too_large_is_streamed_instead(small_request_server, live_seed, session_for,
                                                              tmp_path):
    client, run_id = _running_run(small_request_server, live_seed)
    result = tmp_path / "output"
    result.write_bytes(os.urandom(256 * 1024))  # inline-sized, but its JSON body is over 64 KiB
    client.finish(run_id, status="completed", exit_code=0, error_kind="", log="", result=result)
    assert client.finish_forms == ["json", "multipart"]
    run, body = _stored(small_request_server, live_seed, session_for, run_id)
    assert (run["status"], run["result_size"]) == ("completed", 256 * 1024)
    assert body == result.read_bytes()
