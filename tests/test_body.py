"""vantage.body.CompleteBody: the body read whole, or a refusal, before the application runs.

Driven here through the ASGI interface itself (scope, receive, send), the same calls uvicorn
makes, so that timing cases take milliseconds; tests/live/test_slow_bodies.py runs it
under the real server.
"""

import asyncio
import json
import logging

import pytest

from vantage.body import SPOOL_IN_MEMORY_BYTES, CompleteBody


class App:
    """The application behind the component: records what reached it."""

    def __init__(self, fail: bool = False):
        self.calls = []
        self.fail = fail

    async def __call__(self, scope, receive, send):
        replayed = b""
        while True:
            message = await receive()
            replayed += message["body"]
            if not message["more_body"]:
                break
        body = scope["extensions"]["vantage.body"]
        self.calls.append({"replayed": replayed, "in_place": body["file"].read(), "length": body["length"],
                           "file": body["file"]})
        if self.fail:
            raise RuntimeError("the application failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _component(app, **overrides):
    limits = {"max_body_bytes": 4 * SPOOL_IN_MEMORY_BYTES, "timeout_seconds": 5, "idle_seconds": 5,
              "min_rate": 1024, "max_spooling": 4, **overrides}
    return CompleteBody(app, **limits)


def _scope(*headers):
    return {"type": "http", "method": "POST", "path": "/api/x/", "headers": list(headers)}


def _messages(*chunks, delay: float = 0, then_disconnect: bool = False, hang: bool = False):
    """A receive channel delivering chunks (each after `delay`), then hanging or disconnecting."""
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or hang or then_disconnect}
             for i, c in enumerate(chunks)]
    if then_disconnect:
        queue.append({"type": "http.disconnect"})

    async def receive():
        if delay:
            await asyncio.sleep(delay)
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()  # a client that sends nothing more

    return receive


async def _call(component, scope, receive):
    sent = []

    async def send(message):
        sent.append(message)

    await component(scope, receive, send)
    if not sent:
        return None, None, {}
    headers = dict(sent[0]["headers"])
    return sent[0]["status"], sent[1]["body"], headers


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.mark.parametrize("value", [b"-5", b"12a", b"", b" 5", b"1e3"])
def test_a_content_length_that_is_not_a_byte_count_is_400(value):
    app = App()
    status, body, headers = run(_call(_component(app), _scope((b"content-length", value)), _messages(b"")))
    assert status == 400 and json.loads(body)["code"] == "bad_request"
    assert headers[b"connection"] == b"close"
    assert app.calls == []


def test_two_different_content_lengths_are_400():
    app = App()
    scope = _scope((b"content-length", b"3"), (b"content-length", b"4"))
    assert run(_call(_component(app), scope, _messages(b"abc")))[0] == 400


def test_a_content_length_past_the_limit_is_413_before_reading():
    app = App()

    async def receive():
        raise AssertionError("the body of a refused request is never read")

    status, body, _ = run(_call(_component(app, max_body_bytes=100), _scope((b"content-length", b"101")), receive))
    assert status == 413 and json.loads(body) == {"detail": "The request body exceeds 100 bytes.",
                                                  "code": "too_large"}
    assert app.calls == []


def test_a_chunked_body_is_counted_while_it_arrives_and_refused_past_the_limit():
    app = App()
    receive = _messages(*[b"x" * 40] * 5)
    status, _, _ = run(_call(_component(app, max_body_bytes=100), _scope((b"transfer-encoding", b"chunked")), receive))
    assert status == 413 and app.calls == []


def test_a_body_in_pieces_reaches_the_application_whole_both_ways():
    app = App()
    pieces = [b"a" * SPOOL_IN_MEMORY_BYTES, b"b" * 10, b"c" * SPOOL_IN_MEMORY_BYTES]
    status, body, _ = run(_call(_component(app), _scope((b"transfer-encoding", b"chunked")), _messages(*pieces)))
    assert (status, body) == (200, b"ok")
    whole = b"".join(pieces)
    call = app.calls[0]
    assert (call["replayed"], call["in_place"], call["length"]) == (whole, whole, len(whole))
    assert call["file"].closed  # and, past the in-memory part, its disk file with it


def test_a_request_without_body_reaches_the_application_with_an_empty_one():
    app = App()
    assert run(_call(_component(app), _scope(), _messages(b"")))[0] == 200
    assert (app.calls[0]["replayed"], app.calls[0]["length"]) == (b"", 0)


def test_the_body_file_is_closed_when_the_application_fails():
    app = App(fail=True)
    with pytest.raises(RuntimeError):
        run(_call(_component(app), _scope((b"content-length", b"3")), _messages(b"abc")))
    assert app.calls[0]["file"].closed


def test_a_client_silent_past_the_idle_time_is_answered_408():
    app = App()
    component = _component(app, idle_seconds=0.05)
    status, body, headers = run(_call(component, _scope((b"content-length", b"1000")), _messages(b"{", hang=True)))
    assert status == 408 and json.loads(body)["code"] == "timeout"
    assert headers[b"connection"] == b"close"
    assert app.calls == [] and component.spooling == 0


def test_a_client_dripping_below_the_minimum_rate_is_answered_408_at_its_deadline():
    app = App()
    # Never silent for long (a byte every 20 ms), but 50 bytes/s against a 10,000 bytes/s minimum.
    component = _component(app, timeout_seconds=0.2, idle_seconds=5, min_rate=10_000)
    receive = _messages(*[b"x"] * 100, delay=0.02)

    async def timed():
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await _call(component, _scope((b"content-length", b"100")), receive)
        return outcome, loop.time() - started

    (status, _, _), took = run(timed())
    assert status == 408 and app.calls == []
    assert 0.15 < took < 1.0


def test_a_client_keeping_up_the_minimum_rate_is_never_cut_off():
    app = App()
    # 2 KiB every 20 ms (100 KiB/s) for 0.6 s: three times the grace time, above the minimum rate.
    component = _component(app, timeout_seconds=0.2, idle_seconds=5, min_rate=20_000)
    receive = _messages(*[b"x" * 2048] * 30, delay=0.02)
    assert run(_call(component, _scope((b"content-length", str(30 * 2048).encode())), receive))[0] == 200


def test_bodies_beyond_the_cap_answer_503_with_retry_after():
    app = App()
    component = _component(app, max_spooling=2)

    async def scenario():
        slow = [asyncio.create_task(_call(component, _scope((b"content-length", b"10")), _messages(b"x", hang=True)))
                for _ in range(2)]
        await asyncio.sleep(0.01)
        refused = await _call(component, _scope((b"content-length", b"3")), _messages(b"abc"))
        bodiless = await _call(component, _scope(), _messages(b""))  # no body: no slot needed
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
        after = await _call(component, _scope((b"content-length", b"3")), _messages(b"abc"))
        return refused, bodiless, after

    refused, bodiless, after = run(scenario())
    assert refused[0] == 503 and refused[2][b"retry-after"] == b"5"
    assert json.loads(refused[1])["code"] == "busy"
    assert bodiless[0] == 200 and after[0] == 200
    assert component.spooling == 0


def test_a_client_gone_midway_is_one_info_line_and_its_file_is_closed(caplog, monkeypatch):
    opened = []
    import tempfile

    real = tempfile.SpooledTemporaryFile

    def recording(*args, **kwargs):
        opened.append(real(*args, **kwargs))
        return opened[-1]

    # Only to get hold of the file the component made, to check it was closed.
    monkeypatch.setattr("vantage.body.tempfile.SpooledTemporaryFile", recording)
    app = App()
    receive = _messages(b"x" * SPOOL_IN_MEMORY_BYTES, b"y" * 10, then_disconnect=True)
    with caplog.at_level(logging.INFO, logger="vantage.http"):
        outcome = run(_call(_component(app), _scope((b"content-length", b"3000000")), receive))
    assert outcome == (None, None, {}) and app.calls == []
    assert [r.getMessage() for r in caplog.records] == [
        "POST /api/x/: client went away after 1048586 of 3000000 bytes of the body"]
    assert caplog.records[0].levelno == logging.INFO and caplog.records[0].exc_info is None
    assert opened and opened[0].closed


def test_websockets_and_other_scopes_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    run(CompleteBody(app, max_body_bytes=1, timeout_seconds=1, idle_seconds=1, min_rate=1, max_spooling=1)(
        {"type": "websocket", "path": "/ws/x/", "headers": []}, None, None))
    assert seen == ["websocket"]


def test_only_upload_paths_may_send_bodies_up_to_the_upload_limit():
    import re

    app = App()
    component = _component(app, max_body_bytes=100, upload_paths=re.compile(r"/api/runs/[^/]+/finish/$"),
                           max_upload_bytes=1000)
    big = (b"content-length", b"500")
    elsewhere = run(_call(component, _scope(big), _messages(b"x" * 500)))
    finish = run(_call(component, {**_scope(big), "path": "/api/runs/7/finish/"}, _messages(b"x" * 500)))
    beyond = run(_call(component, {**_scope((b"content-length", b"1001")), "path": "/api/runs/7/finish/"},
                       _messages(b"x" * 1001)))
    assert elsewhere[0] == 413 and json.loads(elsewhere[1])["detail"] == "The request body exceeds 100 bytes."
    assert finish[0] == 200 and app.calls[0]["length"] == 500
    assert beyond[0] == 413 and json.loads(beyond[1])["detail"] == "The request body exceeds 1000 bytes."
