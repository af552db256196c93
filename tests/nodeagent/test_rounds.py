"""Which runs go to a round worker (nodeagent/rounds.py), without Docker.

The worker's life with real containers is in test_rounds_live.py; here, the choices that
must keep unmodified images, central runs and nodes that turned workers off on one
container per run, and the bits of the socket set-up."""

import json
import socket
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from nodeagent import rounds
from nodeagent.config import Limits
from nodeagent.workspace import Phase, RunState


class FakeApi:
    def __init__(self, labels):
        self.labels, self.inspected = labels, 0

    def inspect_image(self, image_id):
        self.inspected += 1
        return {"Config": {"Labels": self.labels.get(image_id)}}


def pool(tmp_path, *, idle=60, labels=None, standby=600, busy=lambda: False):
    executor = SimpleNamespace(docker=SimpleNamespace(api=FakeApi(labels or {})))
    config = SimpleNamespace(limits=replace(Limits(), round_worker_idle=idle, max_concurrent_runs=2,
                                            round_worker_standby=standby))
    return rounds.RoundWorkers(executor=executor, config=config, folder=tmp_path, server_key="k",
                               node_id=1, name_prefix="vantage-k-node1", stop=threading.Event(), busy=busy)


def job(*, parent=5, job_id=5, encrypted=False, phase=Phase.PREPARED):
    run = {"id": 9, "task": 6, "parent": parent, "job": job_id, "collaboration_encrypted": encrypted}
    state = RunState(run_id=9, container_name="c", run=run, phase=phase)
    return SimpleNamespace(state=state, _task=lambda: run, run_id=9)


OPTED_IN = {"sha256:toolkit": {"org.vantage.round-worker": "1"}, "sha256:v6": {"maintainer": "someone"},
            "sha256:future": {"org.vantage.round-worker": "2"}}


@pytest.mark.parametrize("image, expected", [("sha256:toolkit", True), ("sha256:v6", False),
                                             ("sha256:future", False), ("sha256:nolabels", False)])
def test_only_images_that_declare_this_protocol_opt_in(tmp_path, image, expected):
    workers = pool(tmp_path, labels=OPTED_IN)
    assert workers.opted_in(image) is expected
    assert workers.opted_in(image) is expected
    assert workers.executor.docker.api.inspected == 1  # an image id names its content: asked once


@pytest.mark.parametrize("case", ["central run", "workers off", "unlabelled image"])
def test_these_runs_keep_a_container_of_their_own(tmp_path, case):
    workers = pool(tmp_path, idle=0 if case == "workers off" else 60, labels=OPTED_IN)
    run = job(parent=None, job_id=6) if case == "central run" else job()
    image = "sha256:v6" if case == "unlabelled image" else "sha256:toolkit"
    assert workers.serve(run, image, ["default"]) is False
    assert not workers.may_serve(run)
    assert not (tmp_path / "workers").exists()  # nothing was started


def test_a_subtask_whose_job_has_no_worker_here_fetches_its_token_as_before(tmp_path):
    workers = pool(tmp_path, labels=OPTED_IN)
    assert not workers.may_serve(job())
    workers._workers[("k",)] = rounds.RoundWorker(key=("k",), job_id=5, name="w", dir=tmp_path)
    assert workers.may_serve(job())
    assert not workers.may_serve(job(job_id=7, parent=7))
    assert not workers.may_serve(job(encrypted=True))  # the token fetches the key its output is sealed for


def test_admission_is_reused_only_while_the_jobs_worker_lives(tmp_path):
    workers = pool(tmp_path, labels=OPTED_IN)
    calls = []

    def admit():
        calls.append(1)
        return f"admitted {len(calls)}"

    first = job()
    assert workers.admit(first, "image@sha256:a", admit) == "admitted 1"
    workers._admissions.setdefault(*first.round_admission)  # what serve() does once a worker served it
    assert workers.admit(job(), "image@sha256:a", admit) == "admitted 2"  # no worker alive: checked again
    workers._workers[("k",)] = rounds.RoundWorker(key=("k",), job_id=5, name="w", dir=tmp_path)
    assert workers.admit(job(), "image@sha256:a", admit) == "admitted 1"
    assert workers.admit(job(parent=None, job_id=5), "image@sha256:a", admit) == "admitted 3"  # central run
    assert workers.admit(job(), "image@sha256:b", admit) == "admitted 4"
    assert len(calls) == 4


def test_the_central_run_ending_ends_its_jobs_workers_and_a_subtask_does_not():
    central = job(parent=None, job_id=6, phase=Phase.FINISHED)
    assert rounds.job_ended_by(central) == 6
    assert rounds.job_ended_by(job(phase=Phase.FINISHED)) is None
    assert rounds.job_ended_by(job(parent=None, job_id=6, phase=Phase.STARTED)) is None  # agent stopping


def test_a_run_handed_to_a_worker_is_known_after_a_restart():
    state = job().state
    assert not rounds.served_by_worker(state)
    state.run[rounds.STATE_KEY] = "vantage-k-node1-job5-worker1"
    assert rounds.served_by_worker(RunState.from_dict(json.loads(json.dumps(asdict(state)))))  # as saved


def test_the_socket_binds_even_under_a_task_folder_deeper_than_a_socket_address(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / rounds.SOCKET_NAME
    assert len(str(path)) > 108
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    rounds._bind(listener, path)
    listener.listen(1)
    assert path.exists() and Path(path).is_socket()
    listener.close()


class Started:
    """RoundWorkers._start without Docker: records which workers would have started."""

    def __init__(self, workers):
        self.names = []
        workers._start = lambda worker: self.names.append(worker.name)
        workers._retire = lambda worker, why: setattr(worker, "gone", True)


def reap_once(workers):
    workers.stop.wait = lambda seconds, passes=iter([False, True]): next(passes)  # one pass of the reaper
    workers._reap()


def settle():
    """The standby's start runs in a thread of its own."""
    for thread in [t for t in threading.enumerate() if t.name == "round-standby"]:
        thread.join(5)


def test_a_standby_starts_for_the_last_jobs_image_only_once_the_node_is_quiet(tmp_path):
    running = []
    workers = pool(tmp_path, busy=lambda: bool(running))
    started = Started(workers)
    worker = workers._worker_for((5, "sha256:a", ("default",)), 5, job())
    assert started.names == [worker.name]
    now = worker.last_used
    workers._replenish(now + 0.5)  # the job's round ended half a second ago
    worker.lock.acquire()  # a round in progress
    workers._replenish(now + 5)
    worker.lock.release()
    running.append(1)  # a run in progress (a container of its own, an upload)
    workers._replenish(now + 5)
    assert not workers._standbys and len(started.names) == 1
    running.clear()
    workers._replenish(now + 5)
    settle()
    (standby,) = workers._standbys.values()
    assert standby.key == (None, "sha256:a", ("default",)) and standby.job_id is None
    assert started.names[1] == standby.name and "standby" in standby.name
    workers._replenish(now + 10)
    assert len(started.names) == 2  # one standby at most


@pytest.mark.parametrize("image, labels, taken", [("sha256:a", ("default",), True),
                                                 ("sha256:b", ("default",), False),
                                                 ("sha256:a", ("default", "other"), False)])
def test_only_a_job_asking_for_the_standbys_image_and_databases_takes_it(tmp_path, image, labels, taken):
    workers = pool(tmp_path)
    started = Started(workers)
    workers._wanted = ("sha256:a", ("default",))
    workers._replenish(time.monotonic() + 5)
    settle()
    (standby,) = workers._standbys.values()
    worker = workers._worker_for((7, image, labels), 7, job(job_id=7))
    assert (worker is standby) is taken
    if taken:
        assert worker.job_id == 7 and workers._workers == {(7, image, labels): worker} and not workers._standbys
        assert len(started.names) == 1
    else:
        assert worker.job_id == 7 and list(workers._standbys.values()) == [standby] and len(started.names) == 2


def test_an_unused_standby_goes_and_none_follows_until_a_job_uses_a_worker_again(tmp_path):
    workers = pool(tmp_path, standby=2)
    started = Started(workers)
    workers._wanted = ("sha256:a", ("default",))
    workers._replenish(time.monotonic())
    settle()
    (standby,) = workers._standbys.values()
    standby.last_used -= 3
    reap_once(workers)
    assert standby.gone and not workers._standbys and workers._wanted is None
    assert len(started.names) == 1


def test_no_standby_when_turned_off_or_without_round_workers(tmp_path):
    for workers in (pool(tmp_path, standby=0), pool(tmp_path, idle=0)):
        started = Started(workers)
        workers._wanted = ("sha256:a", ("default",))
        workers._replenish(time.monotonic() + 5)
        assert not workers._standbys and not started.names


def test_kept_standbys_start_one_at_a_time_beside_the_last_jobs_and_never_expire(tmp_path):
    workers = pool(tmp_path, labels=OPTED_IN, standby=2)
    started = Started(workers)
    kept = [("sha256:toolkit", ("default",)), ("sha256:toolkit", ("default", "other"))]
    assert all(workers.keep_standby(*key) for key in kept)
    workers._wanted = ("sha256:a", ("default",))  # the last job's image
    for _ in range(3):
        workers._replenish(time.monotonic())
        settle()
    assert list(workers._standbys) == [*kept, workers._wanted] and len(started.names) == 3
    for standby in workers._standbys.values():
        standby.last_used -= 3  # longer unused than round_worker_standby
    reap_once(workers)
    assert list(workers._standbys) == kept  # the last job's went; node.toml's stay while the agent runs
    assert len(started.names) == 3


def test_a_job_taking_a_kept_standby_is_followed_by_another_once_the_node_is_quiet(tmp_path):
    workers = pool(tmp_path, labels=OPTED_IN, standby=0)  # none for the last job's image
    started = Started(workers)
    assert workers.keep_standby("sha256:toolkit", ("default",))
    workers._replenish(time.monotonic())
    settle()
    (standby,) = workers._standbys.values()
    worker = workers._worker_for((7, "sha256:toolkit", ("default",)), 7, job(job_id=7))
    assert worker is standby and worker.job_id == 7 and not workers._standbys
    workers._replenish(worker.last_used + 0.5)  # the round ended half a second ago: not yet
    assert not workers._standbys
    workers._replenish(worker.last_used + 5)
    settle()
    (follower,) = workers._standbys.values()
    assert follower is not standby and follower.job_id is None and len(started.names) == 2


def test_a_kept_standby_that_cannot_start_is_not_tried_again_every_second(tmp_path):
    workers = pool(tmp_path, labels=OPTED_IN)
    started = Started(workers)

    def fails(worker):
        started.names.append(worker.name)
        raise rounds.StartupError("no room")

    workers._start = fails
    del workers._retire  # the real one: it takes the worker out of the pool
    assert workers.keep_standby("sha256:toolkit", ("default",))
    for _ in range(3):
        workers._replenish(time.monotonic())
        settle()
    assert len(started.names) == 1 and not workers._standbys and not workers._kept


@pytest.mark.parametrize("image", ["sha256:v6", "sha256:nolabels"])
def test_an_image_without_the_round_worker_label_is_kept_no_standby(tmp_path, image):
    workers = pool(tmp_path, labels=OPTED_IN)
    started = Started(workers)
    assert not workers.keep_standby(image, ("default",))
    workers._replenish(time.monotonic())
    assert not workers._standbys and not started.names


def test_the_agents_stop_waits_for_a_standby_being_started_and_starts_no_other(tmp_path):
    workers = pool(tmp_path, labels=OPTED_IN)
    begun, release, finished = threading.Event(), threading.Event(), []

    def slow_start(worker):  # a container being created when the agent is told to stop
        begun.set()
        release.wait(5)
        finished.append(worker)

    workers._start = slow_start
    assert workers.keep_standby("sha256:toolkit", ("default",))
    workers._replenish(time.monotonic())
    assert begun.wait(5)
    threading.Timer(0.3, release.set).start()
    workers.close()
    (worker,) = finished  # close() returned only once the start had ended...
    assert worker.gone and not workers._standbys  # ...and the worker it started is retired
    workers._replenish(time.monotonic())
    assert len(finished) == 1 and not workers._standbys


@pytest.mark.parametrize("now, taken", [(("vol-1",), True), (("vol-2",), False), (None, False)])
def test_a_standby_is_taken_only_while_the_data_it_mounts_is_the_databases_current_version(tmp_path, now, taken):
    """("vol-2",): the file changed since the standby started; None: it cannot be read now."""
    workers = pool(tmp_path, labels=OPTED_IN)
    started = Started(workers)
    del workers._retire  # the real one: it takes the worker out of the pool
    workers.config.databases = {"default": object()}
    workers.data_volumes = SimpleNamespace(current=lambda databases, labels: now)
    assert workers.keep_standby("sha256:toolkit", ("default",))
    workers._replenish(time.monotonic())
    settle()
    (standby,) = workers._standbys.values()
    standby.volumes = ("vol-1",)  # what it mounted when it started
    worker = workers._worker_for((7, "sha256:toolkit", ("default",)), 7, job(job_id=7))
    assert (worker is standby) is taken and worker.job_id == 7
    if not taken:  # retired in a thread of its own; the job got a worker started for it
        deadline = time.monotonic() + 5
        while not standby.gone and time.monotonic() < deadline:
            time.sleep(0.01)
        assert standby.gone and len(started.names) == 2
