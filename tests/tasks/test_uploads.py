"""The result upload handler, driven by Django's own multipart parser.

Under ASGI, Django reads a request body to its end whatever Content-Length says, so the
handler counts the bytes it really receives: a request that declares less than it sends
is cut off at the limit all the same.
"""

import hashlib
import io

import pytest
from django.http.multipartparser import MultiPartParser

from core.errors import DomainError, TooLarge
from tasks.uploads import ReceivedResult, ResultUploadHandler

BOUNDARY = "vantage-test-boundary"


def _multipart(*parts: tuple[str, bytes, bool]) -> bytes:
    body = b""
    for name, content, is_file in parts:
        filename = '; filename="output"' if is_file else ""
        body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").encode()
        body += content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def _parse(body: bytes, declared_length: int | None = None):
    meta = {
        "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
        "CONTENT_LENGTH": str(len(body) if declared_length is None else declared_length),
    }
    handler = ResultUploadHandler()
    return MultiPartParser(meta, io.BytesIO(body), [handler]).parse(), handler


@pytest.fixture
def limit(settings, tmp_path):
    settings.VANTAGE_MAX_RESULT_BYTES = 1000
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    return tmp_path


def test_result_arrives_on_disk_with_its_size_and_hash(limit):
    content = bytes(range(256)) * 3
    (data, files), _ = _parse(_multipart(("status", b"completed", False), ("result", content, True)))
    result = files["result"]
    assert isinstance(result, ReceivedResult)
    assert data["status"] == "completed"
    assert (result.size, result.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert result.read() == content
    result.close()
    assert list(limit.iterdir()) == []


def test_a_body_longer_than_declared_is_cut_at_the_limit(limit):
    body = _multipart(("status", b"completed", False), ("result", b"x" * 5000, True))
    with pytest.raises(TooLarge):
        _parse(body, declared_length=200)
    assert list(limit.iterdir()) == []


def test_a_declared_length_beyond_the_limit_is_refused_before_reading(limit):
    class Unreadable(io.RawIOBase):
        def read(self, *args):
            raise AssertionError("the body was read")

    meta = {"CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}", "CONTENT_LENGTH": str(10**9)}
    with pytest.raises(TooLarge):
        MultiPartParser(meta, Unreadable(), [ResultUploadHandler()]).parse()


def test_a_file_under_another_name_is_refused(limit):
    with pytest.raises(DomainError) as raised:
        _parse(_multipart(("output", b"{}", True)))
    assert raised.value.field == "output"
    assert list(limit.iterdir()) == []


def test_a_second_result_file_is_refused_and_both_are_removed(limit):
    with pytest.raises(DomainError) as raised:
        _parse(_multipart(("result", b"{}", True), ("result", b"[]", True)))
    assert raised.value.field == "result"
    assert list(limit.iterdir()) == []
