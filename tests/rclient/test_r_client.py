"""The R client's own tests, run from pytest so ./vantage.sh test and CI count them.

- One pytest test per testthat file in clients/r/tests/testthat (webfakes servers for
  the HTTP edge cases: 401 refresh, 404 vs 403, pagination, a restart during a wait).
- The live tests (clients/r/tests/live/test-live.R) against a real server and the demo's
  three hospital nodes running the reference algorithm containers: the federated Cox
  model and Kaplan-Meier curves from R against survival::coxph and survival::survfit on
  the pooled data.
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
from tests.rclient.conftest import R_PACKAGE, run_testthat

UNIT_FILES = sorted((R_PACKAGE / "tests" / "testthat").glob("test-*.R"))
LIVE_FILE = R_PACKAGE / "tests" / "live" / "test-live.R"
DEMO_SECONDS = 900
SUMMARY = re.compile(r"R-TESTTHAT passed=(\d+) failed=(\d+) skipped=(\d+) errors=(\d+)")


def outcome(done: subprocess.CompletedProcess) -> dict:
    found = SUMMARY.search(done.stdout)
    assert found, f"testthat printed no summary:\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    counts = dict(zip(("passed", "failed", "skipped", "errors"), map(int, found.groups())))
    return counts


@pytest.mark.database_independent
@pytest.mark.parametrize("test_file", UNIT_FILES, ids=[f.stem for f in UNIT_FILES])
def test_r_unit(r_library, test_file):
    done = run_testthat(r_library, test_file)
    counts = outcome(done)
    assert done.returncode == 0 and counts["failed"] == counts["errors"] == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert counts["skipped"] == 0, done.stdout[-3000:]
    assert counts["passed"] > 0


@pytest.mark.database_independent
def test_unit_files_exist():
    assert len(UNIT_FILES) >= 3, UNIT_FILES


@pytest.fixture(scope="module")
def demo_network(live_db, tmp_path_factory):  # noqa: F811
    """A live server seeded as the demo, with its catalogue and three running node agents
    (`python -m demo up --no-study`, as ./vantage.sh up starts them)."""
    images.docker_client()
    registry = images.registry()
    seed = json.loads(live_db.manage("demo_seed", "--json"))
    state_dir = tmp_path_factory.mktemp("r-demo-state")
    # As ./vantage.sh up does: the server reads the reviewer's signatures from the demo registry.
    server = live_db.start_server(11, VANTAGE_REGISTRIES_FILE=str(images.registries_file(registry, state_dir)))
    seed_file = state_dir / "demo-seed.json"
    seed_file.write_text(json.dumps(seed))
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VANTAGE_DATA_DIR")}
        started = time.monotonic()
        up = subprocess.run(
            [sys.executable, "-m", "demo", "up", "--no-study", "--seed", str(seed_file), "--server", server.url,
             "--state-dir", str(state_dir), "--registry-password-file", str(registry.password_file)],
            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=DEMO_SECONDS,
        )
        assert up.returncode == 0, f"stdout:\n{up.stdout}\nstderr:\n{up.stderr}"
        print(f"timing: demo network up {time.monotonic() - started:.1f} s")
        yield {"seed": seed, "server": server}
    finally:
        for pid_file in state_dir.glob("node-*.pid"):
            pid = network.read_pid(pid_file)
            if pid is not None:
                network.stop_agent(pid)
        server.stop()
        images.remove_server_volumes(images.docker_client(), server.url)


@pytest.mark.database_independent
def test_r_live_against_the_demo_network(r_library, demo_network):
    researcher = next(u for u in demo_network["seed"]["users"] if u["username"] == "researcher")
    env = {
        "VANTAGE_URL": demo_network["server"].url,
        "VANTAGE_USERNAME": researcher["username"],
        "VANTAGE_PASSWORD": researcher["password"],
        "VANTAGE_COLLABORATION": str(demo_network["seed"]["collaboration"]["id"]),
        "VANTAGE_DATABASE": network.DATABASE_LABEL,
        "VANTAGE_DATA_DIR": str(BASE_DIR / "demo" / "data" / "gbsg2"),
    }
    done = run_testthat(r_library, LIVE_FILE, env=env, timeout=DEMO_SECONDS)
    counts = outcome(done)
    print("\n".join(line for line in done.stderr.splitlines() if line.startswith(("timing:", "output:"))))
    assert done.returncode == 0 and counts["failed"] == counts["errors"] == 0, done.stdout[-8000:] + done.stderr[-4000:]
    assert counts["skipped"] == 0 and counts["passed"] >= 30, done.stdout[-4000:]
