"""docs/network.md, followed command by command: every ```sh block (but those marked
`no-test`) runs, in order, in one bash session, as an operator would paste them.

Real parts: the server the walkthrough starts, its database (SQLite here; PostgreSQL
when the suite runs with DATABASE_URL), the shared Docker engine and registry, two
`run_node` agents and their containers. Only two things differ from a reader's machine,
both outside the blocks: the `vantage` and `vantage-client` commands come from client/ on
the path instead of `pip install ./client` (the one no-test block), and passwords come
from the environment.
Everything the walkthrough starts is in this test's own process group, ended at the end.
"""

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.live.conftest import BASE_DIR, LiveDatabase
from tests.nodeagent import images

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]
DOC = BASE_DIR / "docs" / "network.md"
BLOCK = re.compile(r"^```sh( no-test)?\n(.*?)^```$", re.M | re.S)
SECONDS = 900


def blocks() -> list[str]:
    return [body for skipped, body in BLOCK.findall(DOC.read_text()) if not skipped]


def test_the_walkthrough_has_its_steps_in_runnable_blocks():
    found = blocks()
    assert len(found) >= 7
    text = "\n".join(found)
    for command in ("manage.py migrate", "createsuperuser", "vantage.server", "nodes/", "review/",
                    "VANTAGE_REGISTRIES_FILE", "vantage-client sign", "signing-keys/", "trusted_keys",
                    "run_node --config", "--check", "vantage tasks create", "vantage tasks results", "task_results"):
        assert command in text, command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def bin_dir(tmp_path) -> Path:
    """`vantage` and `vantage-client` as `pip install ./client` would install them."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, module in (("vantage", "console"), ("vantage-client", "cli")):
        script = folder / name
        script.write_text(f'#!/bin/sh\nexec "{os.sys.executable}" -c '
                          f'"from vantage_client.{module} import main; main()" "$@"\n')
        script.chmod(0o755)
    return folder


def test_following_docs_network_md_takes_an_empty_server_to_a_first_study(tmp_path, bin_dir):
    images.docker_client()
    registry = images.registry()
    database = LiveDatabase(tmp_path)  # only for its database name: the walkthrough migrates it
    if database.name:
        import psycopg

        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database.name}"')
    # Short: the node's per-run sockets live under its task folder, and a Unix socket's
    # path is limited to 107 bytes (pytest's tmp_path is too deep).
    work = Path(tempfile.mkdtemp(prefix="vnet-", dir="/tmp"))
    password = secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "VANTAGE_URL")}
    env.update({
        "WORK": str(work), "PORT": str(_free_port()), "PATH": f"{bin_dir}:{os.path.dirname(os.sys.executable)}:"
                                                              f"{env.get('PATH', '')}",
        "PYTHONPATH": str(BASE_DIR / "client"), "VANTAGE_CONFIG_DIR": str(tmp_path / "config"),
        "ADMIN_PASSWORD": password + "-a", "RESEARCHER_PASSWORD": password + "-r", "STEWARD_PASSWORD": password + "-s",
        "VANTAGE_PASSWORD": password + "-r", "REGISTRY": registry.host,
        "REGISTRY_PASSWORD_FILE": str(registry.password_file), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
        "TMPDIR": str(database.folder / "tmp"),
    })
    if database.name:
        env["DATABASE_URL"] = database.url
    script = "set -euo pipefail\n" + "\n".join(blocks())
    process = subprocess.Popen(["bash", "-c", script], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    failure_logs = ""
    try:
        output, _ = process.communicate(timeout=SECONDS)
        if process.returncode != 0:
            # The runs' own logs say why, while the server still runs.
            failure_logs = subprocess.run(["vantage", "tasks", "logs", "1"], env=env, capture_output=True,
                                          text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the walkthrough did not finish in {SECONDS} s:\n{output[-6000:]}\n{_logs(work)}")
    else:
        logs = _logs(work) if process.returncode != 0 else ""
    finally:
        _stop_everything(process.pid)
        images.remove_server_volumes(images.docker_client(), f"http://127.0.0.1:{env['PORT']}")  # as section 0 sets it
        database.drop()
        shutil.rmtree(work, ignore_errors=True)
    assert process.returncode == 0, f"{output[-6000:]}\n{logs}\n{failure_logs}"
    # What a reader sees at each step.
    assert '"endpoints"' in output                                   # the API index
    assert re.search(r"catalogue entry \d+ approved, signed with key [0-9a-f]{16}\.\.\.", output), output
    assert output.count("all checks passed") + output.count("0 problem(s)") == 2, output
    assert "logged in to" in output and "Breast cancer follow-up" in output
    assert "central  summary(" in output                             # the catalogue, with its arguments
    assert "Hospital A: completed" in output
    assert re.search(r"== Hospital A \(run \d+\): completed", output)
    assert re.search(r"^age\s+numeric\s+\d+", output, re.M), output          # results as a table
    assert re.search(r"^0\s+age\s+numeric", output, re.M), output             # the Python client's to_frame()
    assert "[node] central run: 1 round of subtasks (summary_site ×1) at up to 2 organisations" in output  # tasks logs


def _stop_everything(group: int) -> None:
    """The server and node agents the walkthrough started in the background (its last
    block stops them; after a failure they may still run)."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _logs(work: Path) -> str:
    parts = []
    for log in sorted(work.glob("**/*.log")):
        parts.append(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)
