"""Row count and column sum over the sites, in the style of a vantage6 4.x algorithm.

`partial` runs at each site on its first database; `central` creates a `partial`
subtask for every organisation of the collaboration, waits for it and adds the
results up. `how` picks the client calls it waits and reads with, so both ways
vantage6 algorithms are written get exercised:

- "wait": client.wait_for_results(task_id) (GET /task/<id>/status, then /result?task_id=)
- "poll": client.task.get(task_id) until it is finished, then client.run.from_task(task_id)
  and client.result.get(run_id) for each run
"""

import time

import pandas as pd
from vantage6.algorithm.client import AlgorithmClient
from vantage6.algorithm.tools.decorators import algorithm_client, data
from vantage6.algorithm.tools.util import info

FINISHED = ("completed", "failed", "crashed", "killed by user", "not allowed", "start failed")


@data(1)
def partial(df: pd.DataFrame, column: str) -> dict:
    info(f"partial over {len(df)} rows")
    return {"rows": int(len(df)), "sum": float(df[column].sum())}


@algorithm_client
def central(client: AlgorithmClient, column: str, how: str = "wait") -> dict:
    organizations = sorted(org["id"] for org in client.organization.list())
    task = client.task.create(
        input_={"method": "partial", "kwargs": {"column": column}},
        organizations=organizations, name="v6stats partial", description="rows and sum per site",
    )
    info(f"subtask {task['id']} for organisations {organizations}")
    if how == "wait":
        results = client.wait_for_results(task_id=task["id"], interval=0.2)
    else:
        while (status := client.task.get(task["id"])["status"]) not in FINISHED:
            time.sleep(0.2)
        if status != "completed":
            raise RuntimeError(f"subtask {task['id']} ended {status}")
        results = [client.result.get(run["id"]) for run in client.run.from_task(task["id"])]
    return {
        "organizations": organizations, "subtask": task["id"],
        "rows": sum(r["rows"] for r in results), "sum": sum(r["sum"] for r in results),
        "identity": {"organization_id": client.organization_id, "collaboration_id": client.collaboration_id,
                     "node_id": client.node_id, "image": client.image, "databases": client.databases},
    }
