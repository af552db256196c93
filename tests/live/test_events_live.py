"""Live events on one server with the embedded defaults (in-memory channel layer, no Redis).

A researcher follows a two-organisation task over `/ws/events/` while the two nodes
finish their runs over HTTP. The first result leaves the task active; the last one
completes it, and the researcher hears of it at once. The delay from the last finish
response to the event is printed; bench/events.py measures it properly (goal: 50 ms).
"""

import time

import pytest

from tests.live.conftest import EventSocket, create_task

MAX_DELAY_SECONDS = 1.0


@pytest.mark.slow
def test_researcher_sees_task_completed_as_soon_as_the_last_result_is_uploaded(
    api_server, live_seed, session_for
):
    nodes = {org: session_for(live_seed["nodes"][key]["token"])
             for org, key in ((live_seed["org_a"], "a1"), (live_seed["org_b"], "b"))}
    with EventSocket(api_server, "/ws/events/", live_seed["owner_token"]) as researcher:
        task = create_task(api_server, live_seed, list(nodes))
        about_task = _about(task["id"])
        runs = {run["organization"]: run["id"] for run in task["runs"]}
        for org, node in nodes.items():
            for step in ("claim", "start"):
                assert node.post(f"{api_server.url}/api/runs/{runs[org]}/{step}/", timeout=30).status_code == 200

        first_org, last_org = list(nodes)
        _finish(api_server, nodes[first_org], runs[first_org])
        researcher.wait_for(lambda e: about_task(e) and e["type"] == "task.updated" and e["task"]["status"] == "active")
        assert not [e for e in researcher.drain(0.5) if e["type"] == "task.completed"]

        responded_at = _finish(api_server, nodes[last_org], runs[last_org])
        completed = researcher.wait_for(lambda e: about_task(e) and e["type"] == "task.completed")

    delay = completed.at - responded_at
    print(f"\ntask.completed reached the researcher {delay * 1000:.1f} ms after the last finish response "
          "(negative: before the response)")
    assert completed.event["task"] == {"id": task["id"], "status": "completed",
                                       "collaboration": live_seed["collaboration"]}
    assert delay < MAX_DELAY_SECONDS


def _about(task_id: int):
    return lambda event: event["type"].startswith("task.") and event["task"]["id"] == task_id


def _finish(server, node, run_id: int) -> float:
    """Upload a run's result; returns time.monotonic() when the response arrived."""
    response = node.post(f"{server.url}/api/runs/{run_id}/finish/", data={"status": "completed", "exit_code": "0"},
                         files={"result": ("output", b'{"n": 12, "sum": 501.5}')}, timeout=30)
    responded_at = time.monotonic()
    assert response.status_code == 200, response.text
    return responded_at
