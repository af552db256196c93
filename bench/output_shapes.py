#!/usr/bin/env python3
"""Cost of building the hot answers from their shapes (core.shapes), in process, no database.

    .venv/bin/python bench/output_shapes.py

For each answer: the best of 15 timings of building it 1000 times from in-memory rows and
model instances, as the views do: a 50-row page of the organisation and run lists, a
claim, a start/finish, a new task with two runs. (For scale: the ModelSerializers these
shapes replaced took 0.86 ms for one run and 0.92 ms for a claim's node run, measured the
same way before the change.)
"""

import os
import sys
import time
import timeit
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantage.settings")

import django  # noqa: E402

django.setup()

from accounts.models import User  # noqa: E402
from collaborations.models import Collaboration  # noqa: E402
from collaborations.serializers import ORGANIZATION  # noqa: E402
from tasks.models import Run, Task  # noqa: E402
from tasks.serializers import NODE_RUN, RUN, TASK  # noqa: E402

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
PAGE = 50  # REST_FRAMEWORK["PAGE_SIZE"]


def main() -> None:
    organizations = [{"id": i, "name": f"org {i}", "country": "NL", "domain": "x.example.org", "public_key": "",
                      "require_second_factor": False, "created_at": NOW} for i in range(PAGE)]
    runs = [{"id": i, "task_id": 1, "organization_id": i, "node_id": None, "status": "pending", "exit_code": None,
             "error_kind": "", "result_size": None, "result_sha256": "", "kill_requested_at": None, "created_at": NOW,
             "claimed_at": None, "started_at": None, "finished_at": None, "hold_info": None, "digest": ""}
            for i in range(PAGE)]
    task = Task(id=1, name="t", description="", collaboration=Collaboration(id=2, name="c", encrypted=False),
                init_organization_id=1, created_by=User(id=3, username="owner"), image="127.0.0.1:5000/algo:1",
                digest="", method="partial", databases=[{"label": "default"}], job_id=1, created_at=NOW)
    task.status = Task.Status.PENDING
    task.created_runs = [Run(id=5 + i, task=task, organization_id=i, status=Run.Status.PENDING) for i in range(2)]
    run = Run(id=5, task=task, organization_id=1, node_id=7, status=Run.Status.CLAIMED, exit_code=None,
              error_kind="", result_size=None, result_sha256="", kill_requested_at=None, created_at=NOW,
              claimed_at=NOW, started_at=None, finished_at=None, hold_info=None, digest="", input=b"x" * 200)
    cases = [
        (f"organisation list page ({PAGE} rows)", lambda: [ORGANIZATION.row(row) for row in organizations]),
        (f"run list page ({PAGE} rows)", lambda: [RUN.row(row) for row in runs]),
        ("claim (node run)", lambda: NODE_RUN.of(run)),
        ("start/finish (run)", lambda: RUN.of(run)),
        ("task create (2 runs)", lambda: TASK.of(task)),
    ]
    for name, build in cases:
        best = min(timeit.repeat(build, number=1000, repeat=15, timer=time.process_time))  # CPU time: the machine may be shared
        print(f"{name:44s} {best * 1e3:8.2f} ms per 1000 = {best * 1e3:7.2f} us each")


if __name__ == "__main__":
    main()
