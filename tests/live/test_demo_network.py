"""The README's first command, end to end: `python -m demo up` as ./vantage.sh up calls it.

Real parts: a live server seeded by `manage.py demo_seed`, the reference algorithm
images built and pushed to the local registry, three `run_node` agents started by the
demo itself, real containers. The second invocation must reuse what runs.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from demo import network
from tests.live.conftest import BASE_DIR
from tests.nodeagent import images
from vantage_client import signing

DEMO_SECONDS = 900
pytestmark = pytest.mark.database_independent


@pytest.fixture(scope="module")
def demo_world(live_db, tmp_path_factory):
    images.docker_client()
    registry = images.registry()
    seed = json.loads(live_db.manage("demo_seed", "--json"))
    state_dir = tmp_path_factory.mktemp("demo-state")
    # As ./vantage.sh up does: the server reads the reviewer's signatures from the demo registry.
    server = live_db.start_server(7, VANTAGE_REGISTRIES_FILE=str(images.registries_file(registry, state_dir)))
    seed_file = state_dir / "demo-seed.json"
    seed_file.write_text(json.dumps(seed))
    try:
        yield {"seed": seed, "seed_file": seed_file, "server": server, "state_dir": state_dir,
               "password_file": registry.password_file}
    finally:
        for pid_file in state_dir.glob("node-*.pid"):
            pid = network.read_pid(pid_file)
            if pid is not None:
                network.stop_agent(pid)
        server.stop()
        images.remove_server_volumes(images.docker_client(), server.url)


def demo_up(world, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VANTAGE_DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "demo", "up", "--seed", str(world["seed_file"]), "--server", world["server"].url,
         "--state-dir", str(world["state_dir"]), "--registry-password-file", str(world["password_file"]), *extra],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=DEMO_SECONDS,
    )


def largest_differences(output: str) -> list[float]:
    return [float(value) for value in re.findall(r"largest difference from the pooled [^:]*: ([0-9.e+-]+)", output)]


def test_demo_runs_the_study_and_reuses_the_network(demo_world):
    first = demo_up(demo_world)
    assert first.returncode == 0, f"stdout:\n{first.stdout}\nstderr:\n{first.stderr}"
    out = first.stdout
    for node in demo_world["seed"]["nodes"]:
        assert f"node {node['name']}: started" in out
    # The nodes require a trusted signature and an approved catalogue entry: the study runs on signed images.
    assert "images signed with the demo reviewer's key" in out and "approved by the reviewer" in out
    assert "Summary statistics (federated vs pooled)" in out
    assert "Kaplan–Meier recurrence-free survival by hormonal therapy" in out
    assert "Cox regression stratified by hospital" in out
    assert re.search(r"horTh\[yes\]\s+0\.709", out), out  # GBSG2's known treatment effect, HR ≈ 0.71
    differences = largest_differences(out)
    assert len(differences) == 3 and max(differences) < 1e-8, out
    url = demo_world["server"].url
    assert f"{url}/portal/" in out and f"{url}/admin/" in out
    researcher = next(u for u in demo_world["seed"]["users"] if u["username"] == "researcher")
    assert researcher["password"] in out
    # Each node admitted the study's three images at its start and keeps a round worker ready for each.
    for node in demo_world["seed"]["nodes"]:
        log = demo_world["state_dir"] / "demo-nodes" / node["name"] / "node.log"
        deadline = time.monotonic() + 30
        while log.read_text().count("standby worker kept ready for image") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.read_text().count("standby worker kept ready for image") == 3, log.read_text()[-3000:]
        assert "no standby worker" not in log.read_text()

    # A second run reuses the nodes, the images and the completed tasks: it reads their
    # answers back from the server and prints the same tables.
    second = demo_up(demo_world)
    assert second.returncode == 0, f"stdout:\n{second.stdout}\nstderr:\n{second.stderr}"
    for node in demo_world["seed"]["nodes"]:
        assert re.search(rf"node {node['name']}: running \(pid \d+\)", second.stdout)
    assert len(re.findall(r"reusing completed task \d+", second.stdout)) == 3
    assert not re.search(r"task \d+ created", second.stdout)
    assert largest_differences(second.stdout) == differences

    # --no-study only makes sure everything runs.
    third = demo_up(demo_world, "--no-study")
    assert third.returncode == 0, f"stdout:\n{third.stdout}\nstderr:\n{third.stderr}"
    assert "Summary statistics (federated vs pooled)" not in third.stdout and "Portal:" in third.stdout


def test_demo_names_a_server_that_does_not_answer(demo_world, tmp_path):
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(demo_world["seed"]))
    done = subprocess.run(
        [sys.executable, "-m", "demo", "up", "--seed", str(seed_file), "--server", "http://127.0.0.1:9",
         "--state-dir", str(tmp_path), "--registry-password-file", str(demo_world["password_file"]), "--no-study"],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=DEMO_SECONDS,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not answer" in lines[0] and "Traceback" not in done.stderr


STANDBY_IMAGES = tuple(f"127.0.0.1:5000/vantage/alg-{name}@sha256:{digit * 64}" for name, digit in
                       (("summary", "a"), ("kaplan_meier", "b"), ("cox", "c")))


def test_node_configs_are_valid_for_the_node_agent(tmp_path):
    from nodeagent import config

    node = network.DemoNode(name="leuven-uz", organization="Leuven UZ", key_file=tmp_path / 'k"ey',
                            folder=tmp_path / "leuven-uz")
    node.folder.mkdir()
    node.key_file.write_text("vnk_test\n")
    node.data_file.parent.mkdir()
    node.data_file.write_text("a\n1\n")
    (tmp_path / "pw").write_text("secret\n")
    key = signing.generate_key()
    public = signing.write_key_pair(tmp_path / "demo-signing.key", key, None)
    node.config_file.write_text(network.node_config(
        node, server_url="http://127.0.0.1:8000", registry_port=5000, password_file=tmp_path / "pw",
        trusted_key=public, standby_images=STANDBY_IMAGES))
    loaded = config.load(node.config_file)
    assert [(str(s.image), s.databases) for s in loaded.standbys] == [
        (image, (network.DATABASE_LABEL,)) for image in STANDBY_IMAGES]
    assert (loaded.policy.require_signature, loaded.policy.require_catalogue) == (True, True)
    assert [k.fingerprint for k in loaded.policy.trusted_keys] == [signing.fingerprint(key.public_key())]
    assert set(loaded.databases) == {network.DATABASE_LABEL}
    assert loaded.algorithm_env["VANTAGE_MIN_CELL"] == "5"
    assert loaded.policy.allowed_images == ("127.0.0.1:5000/vantage/alg-*",)
    # Typed outputs that pass the node's checks leave; the rest waits (the demo has none).
    assert (loaded.output.opaque, loaded.output.failed_checks, loaded.output.logs) == ("hold", "hold", "on_failure")
