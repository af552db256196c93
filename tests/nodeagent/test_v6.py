"""An unmodified vantage6 4.15 algorithm (vantage6-algorithm-tools from PyPI) on our nodes.

The image (algorithms/testimages/v6-stats) is written as vantage6's documentation
teaches: `wrap_algorithm` reads the base32-encoded environment, `@data(1)` loads the
site's CSV, `@algorithm_client` builds vantage6's AlgorithmClient from the token file
(its identity comes from the token's `sub`) and talks to the node proxy.
"""

import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]


def test_v6_partial_runs_on_each_site(site, v6_image):
    nodes = [site.node(0, rows=[(1,), (2,), (3,)]), site.node(1, rows=[(10,), (20,)])]
    for node in nodes:
        node.wait_connected()
    task = site.task(v6_image, "partial", site.organizations, kwargs={"column": "value"})
    runs = site.researcher.wait_runs(task["id"], timeout=90)
    assert {r["status"] for r in runs} == {"completed"}, site.agent_logs()
    results = {r["organization"]: site.researcher.result(r["id"]) for r in runs}
    assert results == {site.organizations[0]: {"rows": 3, "sum": 6.0},
                       site.organizations[1]: {"rows": 2, "sum": 30.0}}
    log = site.researcher.run(runs[0]["id"])["log"]
    assert "info > wrapper for v6stats" in log and "partial over" in log


@pytest.mark.parametrize("how", ["wait", "poll"])
def test_v6_central_creates_subtasks_and_combines_their_results(site, v6_image, how):
    nodes = [site.node(0, rows=[(1,), (2,), (3,)], limits="max_concurrent_runs = 2"),
             site.node(1, rows=[(10,), (20,)])]
    for node in nodes:
        node.wait_connected()
    started = time.monotonic()
    task = site.task(v6_image, "central", site.organizations[:1], kwargs={"column": "value", "how": how})
    run_id = task["runs"][0]["id"]
    detail = site.wait_status(run_id, {"completed", "failed", "crashed", "timed_out"}, timeout=120)
    assert detail["status"] == "completed", f"{detail['log']}\n{site.agent_logs()}"
    combined = site.researcher.result(run_id)
    everyone = sorted(site.organizations)
    assert combined["organizations"] == everyone
    assert (combined["rows"], combined["sum"]) == (5, 36.0)
    # What vantage6's client read from the token's `sub`.
    assert combined["identity"] == {
        "organization_id": site.organizations[0], "collaboration_id": site.world["collaboration"],
        "node_id": site.world["nodes"][0]["id"], "image": v6_image, "databases": [{"label": "default"}]}
    subtask = site.researcher.api("GET", f"tasks/{combined['subtask']}/").json()
    assert subtask["parent"] in (task["id"], {"id": task["id"]}) or subtask.get("parent_id") == task["id"], subtask
    assert sorted(r["organization"] for r in site.researcher.runs(combined["subtask"])) == everyone
    print(f"v6 central ({how}): task created -> combined result: {time.monotonic() - started:.2f} s")
