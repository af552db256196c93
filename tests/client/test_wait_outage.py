"""tasks.wait across a server restart: the websocket drops, the server is away for a
while, and the task ends after it is back. The client must still return the end.

Uses tests/nodeagent/live.py's LiveServer, which can stop and start the server on the same
port and database (tests/live's servers cannot be restarted).
"""

import threading
import time

import pytest
import requests

from tests.client.conftest import FakeNode
from tests.nodeagent.live import LiveServer

from vantage_client import Client  # noqa: E402  (tests/client/conftest.py puts it on the path)

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]


@pytest.fixture(scope="module")
def restartable(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("restartable"))
    server.setup()
    yield server
    server.teardown()


@pytest.mark.parametrize("live", [True, False])
def test_wait_returns_the_end_of_a_task_that_finishes_after_a_server_restart(restartable, live):
    world = restartable.world()
    client = Client(restartable.url)
    client.session.trust_env = False
    client.login(world["user"]["username"], world["user"]["password"])
    task = client.tasks.create(collaboration=world["collaboration"], image="127.0.0.1:5000/vantage/test-e2e-sum:1",
                               method="sum", organizations=[world["organizations"][0]])
    outcome, events = {}, []

    def waiting():
        try:
            outcome["task"] = client.tasks.wait(task["id"], timeout=120, live=live, poll_interval=0.5,
                                                progress=events.append)
        except Exception as exc:  # handed to the test thread
            outcome["error"] = exc

    waiter = threading.Thread(target=waiting)
    waiter.start()
    time.sleep(2)  # the waiter is subscribed (or polling) by now
    restartable.stop()
    time.sleep(3)  # it finds the server away, and keeps trying
    assert waiter.is_alive() and not outcome, outcome
    restartable.start()

    node_key = world["nodes"][0]["api_key"]
    token = requests.post(f"{restartable.url}/api/node/token/", json={"api_key": node_key}, timeout=30).json()["access"]
    node = FakeNode(restartable.url, token)
    run_id = task["runs"][0]["id"]
    node.claim(run_id)
    node.finish(run_id, b'{"sum": 1}')
    node.close()
    finished_at = time.monotonic()
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["task"]["status"] == "completed"
    print(f"\nlive={live}: the end reached the waiter {time.monotonic() - finished_at:.2f} s after the upload")
    assert client.results(task["id"]) == [{"sum": 1}]
    if not live:
        assert events[-1]["type"] == "task.completed"
