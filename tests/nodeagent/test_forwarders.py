"""The forwarder pool against the real Docker engine: slots lent one run at a time,
reused, replaced when their forwarder died, and the relay reaching only the proxy of
the run that holds the slot."""

import socketserver
import threading
import time
import uuid

import pytest

from nodeagent import config
from nodeagent.executor import ContainerSpec, Executor
from nodeagent.forwarders import ForwarderPool
from tests.nodeagent.images import BASE_IMAGE

pytestmark = pytest.mark.slow
PORT = 7601


@pytest.fixture
def executor(docker_client, tmp_path):
    cfg = config.parse({"task_folder": "tasks", "server": {"url": "http://127.0.0.1:1", "api_key": "k"},
                        "limits": {"cpus": 0.5, "memory": "128m"}}, source="node.toml", base_dir=tmp_path)
    return Executor(limits=cfg.limits, registries={}, client=docker_client)


@pytest.fixture
def make_pool(executor, tmp_path):
    made = []

    def make() -> ForwarderPool:
        key = uuid.uuid4().hex[:10]
        pool = ForwarderPool(executor=executor, folder=tmp_path / "forwarders", image=BASE_IMAGE, port=PORT,
                             server_key=key, node_id=1, name_prefix=f"vantage-test-{key}")
        made.append(pool)
        return pool

    yield make
    for pool in made:
        for container in executor.forwarders(pool.labels["vantage.server"], 1):
            executor.remove(container)


class Answer(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.recv(100)
        self.request.sendall(self.server.answer)


def serve(path, answer: bytes) -> socketserver.UnixStreamServer:
    server = socketserver.UnixStreamServer(str(path), Answer)
    server.answer = answer
    path.chmod(0o666)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def ask_through_relay(executor, slot) -> str:
    """What an algorithm container in the slot's namespace gets from 127.0.0.1:PORT."""
    client = ("import socket; s = socket.create_connection(('127.0.0.1', %d), timeout=10); s.sendall(b'hi'); "
              "print(s.recv(100).decode() or 'nothing')" % PORT)
    container = executor.create(ContainerSpec(name=f"vantage-test-{uuid.uuid4().hex[:8]}", image=BASE_IMAGE,
                                              environment={}, labels={}, command=["python3", "-c", client],
                                              network_mode=f"container:{slot.container.id}"))
    try:
        executor.start(container)
        executor.wait(container, 60)
        return container.logs().decode().strip()
    finally:
        executor.remove(container)


def test_a_slot_serves_one_run_at_a_time_and_is_reused_once_given_back(make_pool):
    pool = make_pool()
    pool.warm(1)
    first = pool.acquire(run_id=1)
    forwarder_id = first.container.id
    second = pool.acquire(run_id=2)  # slot 0 is lent: run 2 gets a slot of its own
    assert (first.index, second.index) == (0, 1) and second.container.id != forwarder_id
    pool.release(second, run_id=99)  # not the borrower: nothing happens
    pool.release(first, run_id=1)
    third = pool.acquire(run_id=3)
    assert (third.index, third.container.id) == (0, forwarder_id)  # no new container started
    assert pool.acquire(run_id=4).index == 2
    assert first.dir.stat().st_mode & 0o777 == 0o755  # the forwarder's user enters it


def test_the_relay_reaches_only_the_proxy_of_the_run_holding_the_slot(make_pool, executor):
    pool = make_pool()
    slot = pool.acquire(run_id=1)
    proxy = serve(slot.socket, b"proxy of run 1")
    try:
        assert ask_through_relay(executor, slot) == "proxy of run 1"
    finally:
        proxy.shutdown()
        proxy.server_close()
    pool.release(slot, run_id=1)
    assert not slot.socket.exists()
    again = pool.acquire(run_id=2)
    assert again.container.id == slot.container.id
    proxy = serve(again.socket, b"proxy of run 2")
    try:
        assert ask_through_relay(executor, again) == "proxy of run 2"
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_dead_forwarder_is_replaced_before_its_slot_is_lent(make_pool, executor):
    pool = make_pool()
    slot = pool.acquire(run_id=1)
    dead = slot.container.id
    executor.kill(slot.container)
    pool.release(slot, run_id=1)
    again = pool.acquire(run_id=2)
    assert again.index == slot.index and again.container.id != dead
    assert executor.is_running(again.container)


def test_a_restarted_agent_keeps_running_forwarders_and_gives_each_run_its_slot_back(make_pool, executor):
    pool = make_pool()
    lent = pool.acquire(run_id=1)
    idle = pool.acquire(run_id=2)
    pool.release(idle, run_id=2)
    pool.close()  # a stopping agent: idle forwarders go, the lent one stays
    names = {c.name for c in executor.forwarders(pool.labels["vantage.server"], 1)}
    assert names == {lent.container.name}

    after = ForwarderPool(executor=executor, folder=pool.folder, image=BASE_IMAGE, port=PORT,
                          server_key=pool.labels["vantage.server"], node_id=1, name_prefix=pool.name_prefix)
    after.adopt()
    reserved = after.reserve(lent.index, run_id=1)
    assert reserved.container.id == lent.container.id
    assert after.acquire(run_id=3).index != lent.index  # never lent twice


def test_a_stop_during_the_warm_up_leaves_no_forwarder_running(make_pool, executor):
    # An agent stopped half a second after it connected left the forwarder its warm-up was
    # starting: close() saw a slot without a container yet and skipped it.
    pool = make_pool()
    warming = threading.Thread(target=pool.warm, args=(3,))
    warming.start()
    while not any(slot.starting for slot in pool._slots.values()):
        assert warming.is_alive(), "the warm-up ended before it started a forwarder"
        time.sleep(0.001)
    pool.close()
    warming.join(timeout=30)
    assert not warming.is_alive()
    assert executor.forwarders(pool.labels["vantage.server"], 1) == []

