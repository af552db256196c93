"""The housekeeping jobs in a real Celery worker, sent through the real Redis broker.

The worker (`celery -A vantage worker --pool=solo`) and beat run as subprocesses in the
servers' environment plus REDIS_URL (the session's own Redis database). The jobs are sent
by name from a plain Celery client on the same broker, as beat would send them; their
effect is read from the database directly, and their events arrive on a researcher's
websocket held by a server process (through the Redis channel layer).
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery

from tests.live.conftest import BASE_DIR, EventSocket

START_TIMEOUT = 60
JOB_TIMEOUT = 20

# Run in the servers' environment by `manage.py shell -c`: a node of org A that went
# silent an hour ago but is still marked online, and a run of org A claimed by node a2
# whose deadline has passed.
SEED = """
import json
from datetime import timedelta
from django.utils import timezone
from accounts.models import User
from collaborations.models import Collaboration, Node
from tasks.models import Run
from tasks.services import run_claim
from tests import factories

owner = User.objects.get(username="live-owner")
collab = Collaboration.objects.get(pk={collaboration})
node, _ = factories.make_node(owner.organization, collab, name="live-silent-node-{suffix}")
Node.objects.filter(pk=node.pk).update(status="online", last_seen_at=timezone.now() - timedelta(hours=1))
task = factories.make_task(owner, collab, [owner.organization], name="live-overdue")
run = run_claim(run_id=task.runs.get().pk, node=Node.objects.get(pk={claiming_node}))
Run.objects.filter(pk=run.pk).update(deadline_at=timezone.now() - timedelta(minutes=5))
print("SEEDED " + json.dumps({{"node": node.pk, "task": task.pk, "run": run.pk}}))
"""


class Process:
    """A subprocess whose output goes to a log file that the test reads."""

    def __init__(self, argv: list[str], env: dict, log_path: Path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.log_path.name}: no {pattern!r} within {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Celery's warm shutdown
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _celery(live_db, live_redis, name: str, *args: str) -> Process:
    env = {**live_db.env, "REDIS_URL": live_redis.url}
    return Process([sys.executable, "-m", "celery", "-A", "vantage", *args], env, live_db.folder / f"{name}.log")


@pytest.fixture(scope="module")
def celery_worker(live_db, live_seed, live_redis):
    worker = _celery(
        live_db, live_redis, "celery-worker", "worker", "--pool=solo", "--loglevel=info",
        # One worker alone on its own broker database: no peers to sync with or watch.
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname=live-worker@%h",
    )
    try:
        worker.wait_for_log(r"live-worker@\S+ ready\.", START_TIMEOUT)
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_client(live_redis):
    app = Celery("live-test-client", broker=live_redis.url)
    app.conf.task_serializer = "json"
    try:
        yield app
    finally:
        app.close()


def _wait_for_row(live_db, sql: str, *params, expect: tuple) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT
    while (row := tuple(live_db.query(sql, *params)[0])) != expect:
        assert time.monotonic() < deadline, f"{sql} {params}: still {row}, expected {expect}"
        time.sleep(0.1)


@pytest.mark.slow
def test_worker_marks_silent_nodes_offline_and_times_out_overdue_runs(
    live_db, live_seed, redis_api_servers, celery_worker, celery_client
):
    out = live_db.manage("shell", "-c", SEED.format(
        collaboration=live_seed["collaboration"], claiming_node=live_seed["nodes"]["a2"]["id"],
        suffix=int(time.time() * 1000),
    ))
    seeded = json.loads(next(line for line in out.splitlines() if line.startswith("SEEDED "))[len("SEEDED "):])
    _, server_b = redis_api_servers
    with (
        EventSocket(server_b, "/ws/events/", live_seed["owner_token"]) as researcher,
        EventSocket(server_b, "/ws/node/", live_seed["nodes"]["a2"]["token"]) as holder,
    ):
        celery_client.send_task("collaborations.jobs.mark_offline_nodes")
        _wait_for_row(live_db, "SELECT status FROM collaborations_node WHERE id = %s", seeded["node"],
                      expect=("offline",))
        offline = researcher.wait_for(lambda e: e["type"] == "node.offline" and e["node"]["id"] == seeded["node"])
        assert offline.event["node"]["status"] == "offline"

        celery_client.send_task("tasks.jobs.time_out_overdue_runs")
        _wait_for_row(live_db, "SELECT status, error_kind FROM tasks_run WHERE id = %s", seeded["run"],
                      expect=("timed_out", "timeout"))
        assert holder.wait_for(lambda e: e["type"] == "run.kill").event == {"type": "run.kill", "run": seeded["run"]}
        researcher.wait_for(lambda e: e["type"] == "run.updated" and e["run"]["id"] == seeded["run"]
                            and e["run"]["status"] == "timed_out")
        failed = researcher.wait_for(lambda e: e["type"] == "task.completed" and e["task"]["id"] == seeded["task"])
        assert failed.event["task"]["status"] == "failed"

    # Both ran in the worker, each once: the jobs are idempotent, but nothing was retried.
    log = celery_worker.log()
    for name in ("collaborations.jobs.mark_offline_nodes", "tasks.jobs.time_out_overdue_runs"):
        assert len(re.findall(rf"Task {re.escape(name)}\[[0-9a-f-]+\] succeeded", log)) == 1, log[-4000:]
    assert [row[0] for row in live_db.query(
        "SELECT verb FROM accounts_auditevent WHERE target_id = %s AND verb = 'run.timed_out'", str(seeded["run"]),
    )] == ["run.timed_out"]


@pytest.mark.slow
def test_beat_starts_with_the_housekeeping_schedule(live_db, live_redis):
    beat = _celery(live_db, live_redis, "celery-beat", "beat", "--loglevel=debug",
                   f"--schedule={live_db.folder / 'celerybeat-schedule'}")
    try:
        beat.wait_for_log(r"beat: Starting\.\.\.", START_TIMEOUT)
        schedule = beat.wait_for_log(r"Current schedule:\n((?:<ScheduleEntry.*\n)+)", START_TIMEOUT).group(1)
        beat.wait_for_log(r"beat: Waking up in", START_TIMEOUT)
    finally:
        beat.stop()
    entries = dict(re.findall(r"<ScheduleEntry: \S+ (\S+)\(\) <freq: ([^>]+)>", schedule))
    assert entries == {
        "collaborations.jobs.mark_offline_nodes": "30.00 seconds",
        "tasks.jobs.time_out_overdue_runs": "1.00 minute",
        "tasks.jobs.purge_expired_results": "1.00 hour",
    }
