"""Results stream through a real server process: 1 GiB up and down, memory flat on both sides.

The upload body is generated while it is sent (multipart framing written by hand around
a generator), the download is hashed while it is read, and the server's peak RSS is read
from /proc/<pid>/status (VmHWM, reset with clear_refs before each leg).
"""

import hashlib
import os
import secrets
import time

import pytest
import requests

from tests.live.conftest import create_task, proc_status_kib, reset_peak_rss

MiB = 1024 * 1024
GiB = 1024 * MiB
RSS_GROWTH_LIMIT_KIB = 50 * 1024
# Long enough for a server without backpressure to read the whole file into its send buffer.
DOWNLOAD_STALL_SECONDS = 3


class StreamedMultipart:
    """A multipart/form-data finish request whose file part is generated as it is sent.

    `len()` lets requests send a Content-Length instead of chunked encoding; iterating
    yields the framing and 1 MiB blocks (each stamped with its index, so order matters
    to the hash), hashing the file part on the way.
    """

    def __init__(self, fields: dict[str, str], file_size: int):
        assert file_size % MiB == 0
        self.boundary = secrets.token_hex(16)
        self.file_size = file_size
        self.block = os.urandom(MiB)
        self.sha256 = hashlib.sha256()
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        )
        self.head = head + (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="result"; filename="output"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.file_size + len(self.tail)

    def __iter__(self):
        yield self.head
        for index in range(self.file_size // MiB):
            block = index.to_bytes(8, "big") + self.block[8:]
            self.sha256.update(block)
            yield block
        yield self.tail


def _running_run(server, seed, node) -> tuple[int, int]:
    task = create_task(server, seed, [seed["org_a"]])
    run_id = task["runs"][0]["id"]
    for step in ("claim", "start"):
        assert node.post(f"{server.url}/api/runs/{run_id}/{step}/", timeout=30).status_code == 200
    return task["id"], run_id


def _finish(server, node, run_id, body: StreamedMultipart):
    return node.post(f"{server.url}/api/runs/{run_id}/finish/", data=body,
                     headers={"Content-Type": body.content_type}, timeout=(10, 600))


def _download(server, user, run_id, stall: float = 0) -> tuple[int, str, requests.structures.CaseInsensitiveDict]:
    with user.get(f"{server.url}/api/runs/{run_id}/result/", stream=True, timeout=(10, 600)) as response:
        assert response.status_code == 200, response.text
        time.sleep(stall)
        digest, size = hashlib.sha256(), 0
        for block in response.iter_content(MiB):
            digest.update(block)
            size += len(block)
        return size, digest.hexdigest(), response.headers


def _kib(value: int) -> str:
    return f"{value / 1024:.1f} MiB"


@pytest.mark.slow
@pytest.mark.database_independent
def test_one_gib_result_round_trip_keeps_memory_flat(api_server, live_seed, session_for):
    node = session_for(live_seed["nodes"]["a1"]["token"])
    user = session_for(live_seed["owner_token"])

    # Warm up every code path first, so imports and caches do not count as growth.
    _, warm_run = _running_run(api_server, live_seed, node)
    assert _finish(api_server, node, warm_run, StreamedMultipart({"status": "completed"}, MiB)).status_code == 200
    assert _download(api_server, user, warm_run)[0] == MiB

    task_id, run_id = _running_run(api_server, live_seed, node)
    body = StreamedMultipart({"status": "completed", "exit_code": "0"}, GiB)
    server_base = reset_peak_rss(api_server.pid)
    client_base = reset_peak_rss("self")
    started = time.monotonic()
    response = _finish(api_server, node, run_id, body)
    upload_seconds = time.monotonic() - started
    assert response.status_code == 200, response.text
    server_upload_growth = proc_status_kib(api_server.pid, "VmHWM") - server_base
    client_upload_growth = proc_status_kib("self", "VmHWM") - client_base
    expected_sha256 = body.sha256.hexdigest()
    assert (response.json()["result_size"], response.json()["result_sha256"]) == (GiB, expected_sha256)

    server_base = reset_peak_rss(api_server.pid)
    client_base = reset_peak_rss("self")
    started = time.monotonic()
    size, sha256, headers = _download(api_server, user, run_id, stall=DOWNLOAD_STALL_SECONDS)
    download_seconds = time.monotonic() - started
    server_download_growth = proc_status_kib(api_server.pid, "VmHWM") - server_base
    client_download_growth = proc_status_kib("self", "VmHWM") - client_base

    print(
        f"\n1 GiB round trip: upload {upload_seconds:.1f} s, download {download_seconds:.1f} s "
        f"(incl. {DOWNLOAD_STALL_SECONDS} s stall)\n"
        f"  server peak RSS growth: upload {_kib(server_upload_growth)}, download {_kib(server_download_growth)}\n"
        f"  test process peak RSS growth: upload {_kib(client_upload_growth)}, "
        f"download {_kib(client_download_growth)}"
    )
    assert (size, sha256) == (GiB, expected_sha256)
    assert headers["Content-Length"] == str(GiB)
    assert headers["X-Content-SHA256"] == expected_sha256
    assert headers["Content-Disposition"] == f'attachment; filename="run-{run_id}-result.json"'
    assert server_upload_growth < RSS_GROWTH_LIMIT_KIB
    assert server_download_growth < RSS_GROWTH_LIMIT_KIB
    assert client_upload_growth < RSS_GROWTH_LIMIT_KIB
    assert client_download_growth < RSS_GROWTH_LIMIT_KIB
    assert user.delete(f"{api_server.url}/api/tasks/{task_id}/", timeout=60).status_code == 204
    assert user.get(f"{api_server.url}/api/runs/{run_id}/result/", timeout=30).status_code == 404
