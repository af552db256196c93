"""Outcomes held through a server outage: sent as soon as the node's websocket is back.

A real server is stopped while a run finishes and started again once the agent's upload
retries have backed off to several seconds; the agent must not wait out that backoff
once its websocket has reconnected, and says in its log (INFO) that the outcome went
after failures.
"""

import json
import re
import time
from datetime import datetime

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]

STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"


def _when(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _outage(site, node, test_images, *, planned_at_least: float) -> tuple[float, float, float]:
    """One run finishing during an outage: (websocket back, outcome sent, retry that was planned), as times."""
    connected_before = node.log().count("websocket connected")
    task = site.task(test_images["probe"], "sleep", kwargs={"seconds": 1})
    run_id = task["runs"][0]["id"]
    site.wait_status(run_id, {"running"})
    site.server.stop()
    failure = re.compile(STAMP + rf" WARNING \S+ run {run_id}: upload failed .*; retrying in ([\d.]+) s")
    try:
        state_file = node.task_folder / "runs" / f"run-{run_id}" / "state.json"
        deadline = time.monotonic() + 90
        while not [m for m in failure.finditer(node.log()) if float(m.group(2)) >= planned_at_least]:
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.1)
        assert json.loads(state_file.read_text())["phase"] == "finished"
    finally:
        site.server.start()
    planned = [m for m in failure.finditer(node.log())][-1]
    retry_at = _when(planned.group(1)) + float(planned.group(2))

    detail = site.wait_status(run_id, {"completed"}, timeout=60)
    assert site.researcher.result(run_id) == {"slept": 1}
    assert detail["log"].count("probe: sleeping 1 s") == 1
    deadline = time.monotonic() + 60
    while node.log().count("websocket connected") <= connected_before:
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.1)
    log = node.log()
    uploaded = re.search(STAMP + rf" INFO \S+ run {run_id}: outcome uploaded after (\d+) failed attempt\(s\)", log)
    assert uploaded, log
    back = [_when(m.group(1)) for m in re.finditer(STAMP + r" INFO \S+ websocket connected", log)][-1]
    return back, _when(uploaded.group(1)), retry_at


def test_outcome_held_through_an_outage_goes_once_the_websocket_is_back(site, test_images):
    node = site.node(0)
    node.wait_connected()
    # Down until the upload's next retry is planned 10 s or more ahead; the websocket
    # retries every 5 s at most (RECONNECT_MAX_SECONDS), so it is back well before that.
    back, sent, retry_at = _outage(site, node, test_images, planned_at_least=10)
    assert back + 2.0 < retry_at, (back, retry_at, node.log())
    assert sent - back < 2.0, (sent - back, node.log())
    assert sent < retry_at - 1.0  # the planned retry was not awaited
    print(f"websocket back -> outcome sent: {sent - back:.2f} s (the retry was planned {retry_at - back:.1f} s after)")
