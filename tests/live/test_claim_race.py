"""Two nodes of one organisation claim the same run at the same moment: exactly one wins.

Real concurrency needs two server processes: inside one, Django runs every synchronous
view on a single thread, so two claims would simply queue. Here each node talks to its
own server process on the shared database (as behind a load balancer), and both
requests leave together from two threads released by a barrier.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.live.conftest import create_task

ROUNDS = 20


@pytest.mark.slow
def test_concurrent_claims_by_two_nodes_have_exactly_one_winner(api_server, second_api_server, live_seed,
                                                               session_for):
    runs = [create_task(api_server, live_seed, [live_seed["org_a"]])["runs"][0]["id"] for _ in range(ROUNDS)]
    nodes = [
        (api_server, live_seed["nodes"]["a1"], session_for(live_seed["nodes"]["a1"]["token"])),
        (second_api_server, live_seed["nodes"]["a2"], session_for(live_seed["nodes"]["a2"]["token"])),
    ]
    for server, _, session in nodes:  # open the connections before the race
        assert session.get(f"{server.url}/api/runs/", params={"page_size": 1}, timeout=30).status_code == 200
    owner = session_for(live_seed["owner_token"])

    def claim(index: int, run_id: int, barrier: threading.Barrier):
        server, _, session = nodes[index]
        barrier.wait()
        started = time.monotonic()
        response = session.post(f"{server.url}/api/runs/{run_id}/claim/", timeout=30)
        return response.status_code, response.json(), started, time.monotonic()

    with ThreadPoolExecutor(max_workers=2) as pool:
        for run_id in runs:
            barrier = threading.Barrier(2)
            outcomes = [f.result() for f in [pool.submit(claim, i, run_id, barrier) for i in (0, 1)]]
            statuses = sorted(status for status, *_ in outcomes)
            assert statuses == [200, 409], (run_id, outcomes)
            (_, _, start_0, end_0), (_, _, start_1, end_1) = outcomes
            assert max(start_0, start_1) < min(end_0, end_1), "the two claims did not overlap"
            winner = next(index for index, (status, *_) in enumerate(outcomes) if status == 200)
            loser_body = outcomes[1 - winner][1]
            assert set(loser_body) == {"detail", "code"}
            stored = owner.get(f"{api_server.url}/api/runs/{run_id}/", timeout=30).json()
            assert (stored["status"], stored["node"]) == ("claimed", nodes[winner][1]["id"])
            assert outcomes[winner][1]["node"] == nodes[winner][1]["id"]
