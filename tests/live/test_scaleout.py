"""Scale-out: two server processes share events through Redis.

Process A takes the HTTP requests, process B holds the websockets, both on the same
database and the same Redis database (`live_redis`), as two server processes behind a
load balancer would. An event produced by a request on A must reach the sockets on B,
and only those allowed to see it.
"""

import pytest

from tests.live.conftest import EventSocket, create_task

QUIET_SECONDS = 1.0


def _about_task(task_id: int, *types: str):
    def matches(event: dict) -> bool:
        if event["type"] not in types:
            return False
        if event["type"] == "run.created":
            return event["task"] == task_id
        if event["type"] == "run.updated":
            return event["run"]["task"] == task_id
        return event["task"]["id"] == task_id

    return matches


@pytest.mark.slow
def test_task_created_on_one_process_reaches_sockets_held_by_another(
    redis_api_servers, live_seed, live_outsider_token
):
    server_a, server_b = redis_api_servers
    nodes = live_seed["nodes"]
    with (
        EventSocket(server_b, "/ws/events/", live_seed["owner_token"]) as researcher,
        EventSocket(server_b, "/ws/events/", live_outsider_token) as outsider,
        EventSocket(server_b, "/ws/node/", nodes["a1"]["token"]) as node_a,
        EventSocket(server_b, "/ws/node/", nodes["b"]["token"]) as node_b,
    ):
        assert node_a.hello == {"type": "hello", "node": nodes["a1"]["id"]}
        task = create_task(server_a, live_seed, [live_seed["org_a"]])

        created = node_a.wait_for(_about_task(task["id"], "run.created")).event
        assert created["run"] == {**created["run"], "id": task["runs"][0]["id"], "organization": live_seed["org_a"],
                                  "status": "pending"}
        updated = researcher.wait_for(_about_task(task["id"], "task.updated")).event
        assert updated["task"] == {"id": task["id"], "status": "pending", "collaboration": live_seed["collaboration"]}

        # Org B has no run in this task, and the outsider's organisation is no member.
        assert not [e for e in node_b.drain(QUIET_SECONDS) if e["type"] == "run.created"]
        assert outsider.drain(QUIET_SECONDS) == []


@pytest.mark.slow
def test_run_finished_on_one_process_completes_the_task_on_sockets_of_another(
    redis_api_servers, live_seed, live_outsider_token, session_for
):
    server_a, server_b = redis_api_servers
    node = session_for(live_seed["nodes"]["a1"]["token"])
    with (
        EventSocket(server_b, "/ws/events/", live_seed["owner_token"]) as researcher,
        EventSocket(server_b, "/ws/events/", live_outsider_token) as outsider,
    ):
        task = create_task(server_a, live_seed, [live_seed["org_a"]])
        run_id = task["runs"][0]["id"]
        for step in ("claim", "start"):
            assert node.post(f"{server_a.url}/api/runs/{run_id}/{step}/", timeout=30).status_code == 200
        finished = node.post(f"{server_a.url}/api/runs/{run_id}/finish/",
                             data={"status": "completed", "exit_code": "0"},
                             files={"result": ("output", b'{"mean": 4.2}')}, timeout=30)
        assert finished.status_code == 200, finished.text

        run_event = researcher.wait_for(
            lambda e: _about_task(task["id"], "run.updated")(e) and e["run"]["status"] == "completed"
        ).event
        assert run_event["run"]["result_size"] == len(b'{"mean": 4.2}')
        completed = researcher.wait_for(_about_task(task["id"], "task.completed")).event
        assert completed["task"]["status"] == "completed"
        assert outsider.drain(QUIET_SECONDS) == []
