"""The demo's three hospital nodes: their config, data and agent processes.

Each demo node is what a hospital would run: its own folder with a `node.toml`, its own
third of the GBSG2 data and its own `run_node` process. `ensure_nodes` brings them to
that state and reuses what already runs, so a second `./vantage.sh up` costs seconds.
"""

import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_DIR / "demo" / "data" / "gbsg2"
DATABASE_LABEL = "gbsg2"
# The demo's algorithms live in the local registry; a site allows exactly those.
ALLOWED_IMAGES = "127.0.0.1:{port}/vantage/alg-*"
START_SECONDS = 60


class DemoError(Exception):
    """Something the person running the demo must fix; the message says what."""


@dataclass(frozen=True)
class DemoNode:
    name: str           # the node's (and its organisation's) slug
    organization: str
    key_file: Path
    folder: Path

    @property
    def config_file(self) -> Path:
        return self.folder / "node.toml"

    @property
    def log_file(self) -> Path:
        return self.folder / "node.log"

    @property
    def data_file(self) -> Path:
        return self.folder / "data" / f"{DATABASE_LABEL}.csv"


def toml_string(value: str) -> str:
    """A TOML basic string: paths and passwords may hold quotes or backslashes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def node_config(node: DemoNode, *, server_url: str, registry_port: int, password_file: Path,
                trusted_key: Path, standby_images: tuple[str, ...] = ()) -> str:
    registry = f"127.0.0.1:{registry_port}"
    return "\n".join([
        "# Written by ./vantage.sh up for the demo node of "
        f"{node.organization}; edit demo/network.py instead.",
        f"task_folder = {toml_string(str(node.folder / 'runs'))}",
        "",
        "[server]",
        f"url = {toml_string(server_url)}",
        f"api_key_file = {toml_string(str(node.key_file))}",
        "",
        f"[databases.{DATABASE_LABEL}]",
        'type = "csv"',
        f"path = {toml_string(str(node.data_file))}",
        "",
        # The study's images: a round worker is kept ready for each from the agent's start
        # (admitted first, as a task's image is), so that even their first job here starts
        # no container for its rounds (docs/node.md, "Standby workers named in node.toml").
        *(line for image in standby_images for line in ("[[standby]]", f"image = {toml_string(image)}", "")),
        f"[registries.{toml_string(registry)}]",
        'username = "vantage"',
        f"password_file = {toml_string(str(password_file))}",
        "",
        "[policy]",
        f"allowed_images = [{toml_string(ALLOWED_IMAGES.format(port=registry_port))}]",
        # Only what the demo's reviewer signed, and the catalogue still lists as approved.
        "require_signature = true",
        "require_catalogue = true",
        f"trusted_keys = [{toml_string(str(trusted_key))}]",
        "",
        "[limits]",
        "cpus = 1",
        'memory = "1g"',
        "max_concurrent_runs = 2",
        # A central method's container waits for its subtasks' containers: allow it time.
        "deadline = 1800",
        "",
        # The toolkit's safe defaults, written out so an operator sees where they are set.
        "[algorithm_env]",
        'VANTAGE_MIN_ROWS = "10"',
        'VANTAGE_MIN_CELL = "5"',
        'VANTAGE_MIN_EVENTS = "10"',
        'VANTAGE_MIN_RISKSET_LEAVERS = "5"',
        "",
        # What leaves without a steward: every analysis of the demo study returns the
        # toolkit's typed outputs, which this node re-checks against the thresholds above
        # and releases when they pass, round after round. Anything else (an untyped output,
        # a typed one failing a check) is held as on a new hospital node; the demo has no
        # steward page, so it would wait, and a run that waits is a bug in the demo. Logs
        # leave only when a run fails, so a refusal's reason reaches the researcher.
        "[output]",
        'opaque = "hold"',
        'failed_checks = "hold"',
        'intermediates = "release"',
        'logs = "on_failure"',
        "",
    ])


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def agent_running(pid: int | None, config_file: Path) -> bool:
    """Whether `pid` is a run_node process of this config (not a recycled pid)."""
    if pid is None:
        return False
    # Right after Popen returns, exec may still be setting the new program up: for that
    # moment the kernel shows an empty command line. Wait it out (up to 1 s) rather than
    # take a starting agent for a stopped one.
    for _ in range(20):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if cmdline:
            break
        time.sleep(0.05)
    arguments = cmdline.split(b"\0")
    return b"run_node" in arguments and str(config_file).encode() in arguments


def stop_agent(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "no log"
    return lines[-1][:300] if lines else "empty log"


def ensure_node(node: DemoNode, *, state_dir: Path, server_url: str, registry_port: int,
                password_file: Path, trusted_key: Path, standby_images: tuple[str, ...] = ()) -> str:
    """Bring one node to its wanted state; returns what was done, for the progress line."""
    (node.folder / "runs").mkdir(parents=True, exist_ok=True)
    node.data_file.parent.mkdir(parents=True, exist_ok=True)
    source = DATA_DIR / f"{node.name}.csv"
    if not source.exists():
        raise DemoError(f"no demo data for {node.name} at {source}")
    data_changed = not node.data_file.exists() or not filecmp.cmp(source, node.data_file, shallow=False)
    if data_changed:
        shutil.copyfile(source, node.data_file)
        # The algorithm runs as nobody (uid 65534): the site's file must be readable by it.
        node.data_file.chmod(0o644)
    config = node_config(node, server_url=server_url, registry_port=registry_port, password_file=password_file,
                         trusted_key=trusted_key, standby_images=standby_images)
    config_changed = not node.config_file.exists() or node.config_file.read_text() != config
    if config_changed:
        node.config_file.write_text(config)
    pid_file = state_dir / f"node-{node.name}.pid"
    pid = read_pid(pid_file)
    key_changed = pid is not None and node.key_file.exists() and \
        node.key_file.stat().st_mtime > pid_file.stat().st_mtime
    if agent_running(pid, node.config_file):
        if not (config_changed or data_changed or key_changed):
            return f"running (pid {pid})"
        stop_agent(pid)
    with open(node.log_file, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO_DIR / "manage.py"), "run_node", "--config", str(node.config_file)],
            cwd=REPO_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        )
    pid_file.write_text(f"{process.pid}\n")
    return f"started (pid {process.pid}, log {node.log_file})"


def wait_online(api, collaboration_id: int, nodes: list[DemoNode], pids: dict[str, Path],
                timeout: float = START_SECONDS) -> None:
    """Until the server lists every demo node as online; a node that exits ends the wait."""
    deadline = time.monotonic() + timeout
    names = {node.name for node in nodes}
    while True:
        online = {n["name"] for n in api.nodes(collaboration_id) if n["status"] == "online"}
        if names <= online:
            return
        for node in nodes:
            if node.name not in online and not agent_running(read_pid(pids[node.name]), node.config_file):
                raise DemoError(f"the node agent {node.name} stopped: {last_line(node.log_file)} "
                                f"(see {node.log_file})")
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(names - online))
            raise DemoError(f"node(s) {missing} did not come online within {timeout:.0f} s "
                            f"(see the node.log files under {nodes[0].folder.parent})")
        time.sleep(0.3)
