"""Websocket consumers, driven through the real ASGI application (Channels' communicator).

These tests commit for real (transactional database): events go out only after
commit, and the consumers' database calls run on their own connection handling.
"""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from collaborations.authentication import node_access_token
from tasks.services import run_claim, task_kill
from tests import factories
from tests.factories import make_task
from vantage.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def _connect(path, token=None, origin=None):
    headers = []
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def _open(path, token=None, origin=None):
    comm = _connect(path, token, origin)
    connected, _ = await comm.connect()
    assert connected
    return comm, await comm.receive_json_from(timeout=5)


def _in_test_thread(fn):
    return sync_to_async(fn)()


async def _drain(comm, *, expect=(), quiet=0.3):
    """Messages until every type in `expect` has arrived (5 s each at most), then until quiet.

    Waiting for the expected events rather than a fixed pause keeps the tests right on a
    loaded machine; receive_nothing peeks without cancelling the consumer.
    """
    out, waiting = [], set(expect)
    while waiting:
        message = await comm.receive_json_from(timeout=5)
        out.append(message)
        waiting.discard(message.get("type"))
    while not await comm.receive_nothing(quiet):
        out.append(await comm.receive_json_from())
    return out


def test_node_receives_run_created_for_its_organisation_only(
    owner, collab, org_a, org_b, node_a, node_b
):
    async def scenario():
        comm_a, hello = await _open("/ws/node/", node_access_token(node_a))
        assert hello == {"type": "hello", "node": node_a.pk}
        comm_b, _ = await _open("/ws/node/", node_access_token(node_b))
        task = await _in_test_thread(lambda: make_task(owner, collab, [org_a]))
        got_a = await _drain(comm_a, expect=["run.created"])
        got_b = await _drain(comm_b)
        await comm_a.disconnect()
        await comm_b.disconnect()
        return task, got_a, got_b

    task, got_a, got_b = async_to_sync(scenario)()
    created = [e for e in got_a if e["type"] == "run.created"]
    assert len(created) == 1
    assert created[0]["task"] == task.pk and created[0]["run"]["organization"] == org_a.pk
    assert not [e for e in got_b if e["type"] == "run.created"]


def test_kill_request_reaches_the_node_holding_the_run(
    owner, collab, org_a, node_a
):
    task = make_task(owner, collab, [org_a])
    run = task.runs.get()
    run_claim(run_id=run.pk, node=node_a)

    async def scenario():
        comm, _ = await _open("/ws/node/", node_access_token(node_a))
        await _in_test_thread(lambda: task_kill(actor=owner, task=task))
        got = await _drain(comm, expect=["run.kill"])
        await comm.disconnect()
        return got

    assert {"type": "run.kill", "run": run.pk} in async_to_sync(scenario)()


def test_users_see_events_of_their_collaboration_and_outsiders_see_none(
    owner, member, outsider, collab, org_a, org_b, node_a
):
    tokens = {"member": factories.access_token(member), "outsider": factories.access_token(outsider)}

    async def scenario():
        comms = {}
        for name in ("member", "outsider"):
            comms[name], _ = await _open("/ws/events/", tokens[name])
        task = await _in_test_thread(lambda: make_task(owner, collab, [org_a, org_b]))
        await _in_test_thread(lambda: run_claim(run_id=task.runs.get(organization=org_a).pk, node=node_a))
        got = {"member": await _drain(comms["member"], expect=["task.updated", "run.updated"])}
        got["outsider"] = await _drain(comms["outsider"])
        for comm in comms.values():
            await comm.disconnect()
        return task, got

    task, got = async_to_sync(scenario)()
    member_types = [e["type"] for e in got["member"]]
    assert "task.updated" in member_types and "run.updated" in member_types
    assert all(e.get("task", {}).get("id", task.pk) == task.pk for e in got["member"] if e["type"].startswith("task"))
    assert got["outsider"] == []


@pytest.mark.parametrize("path", ["/ws/events/", "/ws/node/"])
def test_bad_token_is_refused_with_a_close_code_and_reason(path):
    async def scenario():
        comm = _connect(path, token="not-a-jwt")
        connected, _ = await comm.connect()
        assert connected
        closed = await comm.receive_output(timeout=5)
        await comm.wait()
        return closed

    closed = async_to_sync(scenario)()
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 4401
    assert "invalid or expired" in closed["reason"]


def test_foreign_origin_is_refused_even_with_a_valid_token(owner):
    token = factories.access_token(owner)

    async def scenario():
        comm = _connect("/ws/events/", token=token, origin="https://evil.example")
        await comm.connect()
        closed = await comm.receive_output(timeout=5)
        await comm.wait()
        return closed

    closed = async_to_sync(scenario)()
    assert (closed["code"], closed["reason"]) == (4401, "origin not allowed")


def test_node_token_on_the_user_channel_is_refused(node_a):
    async def scenario():
        comm = _connect("/ws/events/", token=node_access_token(node_a))
        await comm.connect()
        closed = await comm.receive_output(timeout=5)
        await comm.wait()
        return closed

    assert async_to_sync(scenario)()["code"] == 4403


def test_heartbeats_do_not_write_once_the_node_is_known_online(node_a):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from collaborations.models import Node

    async def session(beats):
        comm, _ = await _open("/ws/node/", node_access_token(node_a))
        for _ in range(beats):
            await comm.send_json_to({"type": "heartbeat"})
            assert await comm.receive_json_from(timeout=5) == {"type": "heartbeat.ack"}
        await comm.disconnect()

    async_to_sync(session)(0)
    assert Node.objects.get(pk=node_a.pk).status == Node.Status.ONLINE
    with CaptureQueriesContext(connection) as quiet:
        async_to_sync(session)(0)
    with CaptureQueriesContext(connection) as beating:
        async_to_sync(session)(20)
    assert len(beating) == len(quiet)


def test_ending_every_session_of_a_user_closes_their_open_sockets(owner, member):
    """Issue 13.3: "log out everywhere" (or a password change) reaches sockets already open."""
    from accounts.services import user_end_sessions

    tokens = {"owner": factories.access_token(owner), "member": factories.access_token(member)}

    async def scenario():
        mine, _ = await _open("/ws/events/", tokens["owner"])
        theirs, _ = await _open("/ws/events/", tokens["member"])
        await _in_test_thread(lambda: user_end_sessions(actor=owner, user=owner, reason="logout_everywhere"))
        closed = await mine.receive_output(timeout=5)
        still_open = await theirs.receive_nothing(0.3)
        await theirs.disconnect()
        return closed, still_open

    closed, still_open = async_to_sync(scenario)()
    assert (closed["type"], closed["code"]) == ("websocket.close", 4401)
    assert still_open


@pytest.mark.parametrize("path", ["/ws/nothing/", "/", "/ws/events/extra/"])
def test_an_unknown_path_is_closed_with_4404_not_an_error(path, owner):
    token = factories.access_token(owner)

    async def scenario():
        comm = _connect(path, token=token)
        connected, _ = await comm.connect()
        closed = await comm.receive_output(timeout=5)
        await comm.wait()
        return connected, closed

    connected, closed = async_to_sync(scenario)()
    assert connected
    assert closed == {"type": "websocket.close", "code": 4404, "reason": "No websocket at this path."}
