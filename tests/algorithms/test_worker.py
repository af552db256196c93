"""The toolkit's round worker (vantage_algorithms/worker.py) against a node played here.

Every round a worker serves must answer exactly what a container of its own would have:
the same output, the same exit code, the same log. Each test runs the same inputs both
ways, through `python -m vantage_algorithms` in a subprocess, and compares.
"""

import json
import socket
import struct
import subprocess
import sys

import pandas as pd
import pytest

from tests.algorithms.test_toolkit import REPO_ROOT, Run, frame
from vantage_algorithms.encoding import encode_value

pytestmark = pytest.mark.database_independent  # the toolkit alone, in subprocesses

LENGTH = struct.Struct(">I")


class Node:
    """The node's side of the socket: listens, starts the worker, hands it rounds."""

    def __init__(self, folder, run: Run, module: str = "reference.summary"):
        self.path = folder / "round.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        self.listener.settimeout(60)
        env = {**run.env, "VANTAGE_ROUND_WORKER": encode_value(str(self.path))}
        self.process = subprocess.Popen([sys.executable, "-m", "vantage_algorithms", module], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(60)
        assert json.loads(self.recv()) == {"ready": 1}

    def send(self, kind: bytes, payload: bytes) -> None:
        self.conn.sendall(LENGTH.pack(len(payload) + 1) + kind + payload)

    def recv(self, kind: bytes | None = b"H") -> bytes | tuple[bytes, bytes]:
        (size,) = LENGTH.unpack(self._exactly(LENGTH.size))
        frame = self._exactly(size)
        if kind is None:
            return frame[:1], frame[1:]
        assert frame[:1] == kind, frame[:40]
        return frame[1:]

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.conn.recv(size - len(data))
            assert chunk, "the worker hung up"
            data += chunk
        return data

    def round(self, run_id: int, request: dict | bytes) -> dict:
        self.send(b"R", json.dumps({"run": run_id}).encode())
        self.send(b"I", request if isinstance(request, bytes) else json.dumps(request).encode())
        log = b""
        while (frame := self.recv(None))[0] == b"L":  # what the round prints, line by line
            log += frame[1]
        assert frame[0] == b"A"
        header = json.loads(frame[1])
        assert header["run"] == run_id
        if "decline" in header:
            assert log == b""
            return header
        return {**header, "log": log.decode(), "output": self.recv(b"O").decode()}

    def close(self) -> int:
        self.conn.close()
        self.listener.close()
        return self.process.wait(timeout=30)


@pytest.fixture
def worker_node(tmp_path):
    nodes = []

    def start(run: Run, module: str = "reference.summary") -> Node:
        node = Node(tmp_path, run, module)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        if node.process.poll() is None:
            node.process.kill()
            node.process.wait()


def one_container(run: Run, request: dict | bytes, module: str = "reference.summary") -> dict:
    (run.folder / "input").write_bytes(request if isinstance(request, bytes) else json.dumps(request).encode())
    (run.folder / "output").write_text("")
    done = run(module)
    return {"exit_code": done.returncode, "log": done.stdout + done.stderr,
            "output": (run.folder / "output").read_text()}


CASES = [
    {"method": "summary_site", "kwargs": {"columns": ["age"]}},
    {"method": "summary_site", "kwargs": {"columns": ["age", "grade"], "categorical": ["grade"]}},
    {"method": "summary_site", "kwargs": {"columns": ["weight"]}},  # exit 2, one line
    {"method": "summary_site", "kwargs": {"min_rows": 1}},  # policy in the input: exit 2
    {"method": "summary_site", "kwargs": {"columns": ["age"], "table": "x"}},  # not SQL: exit 2
    {"method": "nope"},
    {"method": "summary_site", "args": [1, 2]},  # wrong arguments
    b"not json",
    b"\xff\xfe",
]


def test_every_round_answers_what_a_container_of_its_own_would_have(tmp_path, worker_node):
    run = Run(tmp_path, CASES[0], frame(12))
    node = worker_node(run)
    expected = [one_container(run, case) for case in CASES]
    for run_id, (case, alone) in enumerate(zip(CASES, expected), start=1):
        served = node.round(run_id, case)
        assert served == {"run": run_id, **alone}, case
    # The same rounds again, in the same worker: nothing of the earlier ones is left over.
    for run_id, (case, alone) in enumerate(zip(CASES, expected), start=100):
        assert node.round(run_id, case) == {"run": run_id, **alone}, case
    assert node.close() == 0  # the node hanging up ends the worker, cleanly


def test_a_policy_refusal_and_an_unexpected_failure_keep_their_exit_codes_and_withheld_messages(tmp_path,
                                                                                           worker_node):
    refusing = Run(tmp_path, CASES[0], frame(12), env={"VANTAGE_MIN_ROWS": "20"})
    node = worker_node(refusing)
    answer = node.round(1, CASES[0])
    assert answer == {"run": 1, **one_container(refusing, CASES[0])}
    assert answer["exit_code"] == 3 and answer["output"] == ""
    assert answer["log"].strip() == ("refused by this site's disclosure policy: this site has 12 rows, fewer than "
                                     "its policy's minimum of 20 (VANTAGE_MIN_ROWS)")
    node.close()


def test_a_data_file_that_breaks_mid_job_is_read_anew_each_round(tmp_path, worker_node):
    secret = pd.DataFrame({"age": ["Jane Doe"] * 12})
    run = Run(tmp_path, CASES[0], secret)
    node = worker_node(run)
    request = {"method": "summary_site", "kwargs": {}}
    first = node.round(1, request)
    assert first["exit_code"] == 0
    (tmp_path / "data.csv").write_bytes(b"\xff\xfe\x00broken")
    second, alone = node.round(2, request), one_container(run, request)
    # The frames it passed differ where they begin (the worker's loop, not the container's main).
    assert [line for line in second["log"].splitlines() if not line.startswith("  at ")] == \
        [line for line in alone["log"].splitlines() if not line.startswith("  at ")]
    assert (second["exit_code"], second["output"]) == (alone["exit_code"], alone["output"])
    assert second["exit_code"] == 1 and "UnicodeDecodeError" in second["log"] and "broken" not in second["log"]
    node.close()


def test_a_central_method_is_declined_so_the_node_gives_it_a_container(tmp_path, worker_node):
    node = worker_node(Run(tmp_path, CASES[0], frame(12)))
    assert node.round(7, {"method": "summary", "kwargs": {"columns": ["age"]}}) == {
        "run": 7, "decline": "summary is a central method"}
    assert node.round(8, CASES[0])["exit_code"] == 0  # and serves on
    node.close()


def test_what_a_round_prints_and_its_warnings_are_that_rounds_log(tmp_path, worker_node):
    module = tmp_path / "chatty.py"
    module.write_text(
        "import sys, warnings\n"
        "from vantage_algorithms import partial\n"
        "@partial\n"
        "def talk(data, policy, *, word):\n"
        "    print('said', word)\n"
        "    warnings.warn('careful')\n"
        "    return {'n': len(data)}\n"
        "@partial\n"
        "def leave(data, policy, *, code):\n"
        "    sys.exit(code)\n")
    run = Run(tmp_path, CASES[0], frame(12))
    run.env["PYTHONPATH"] = f"{tmp_path}:{REPO_ROOT / 'algorithms'}"
    node = worker_node(run, "chatty")
    for run_id, word in enumerate(["one", "two"], start=1):
        request = {"method": "talk", "kwargs": {"word": word}}
        answer = node.round(run_id, request)
        alone = one_container(run, request, "chatty")
        assert answer["output"] == alone["output"] == '{"n": 12}'
        assert answer["exit_code"] == alone["exit_code"] == 0
        assert f"said {word}" in answer["log"] and "UserWarning: careful" in answer["log"], answer["log"]
        assert "one" not in answer["log"] or word == "one"
    answer = node.round(3, {"method": "leave", "kwargs": {"code": 5}})
    assert answer["exit_code"] == one_container(run, {"method": "leave", "kwargs": {"code": 5}}, "chatty")["exit_code"] == 5
    assert node.round(4, {"method": "talk", "kwargs": {"word": "after"}})["exit_code"] == 0  # still serving
    node.close()


def test_a_module_that_cannot_be_imported_ends_the_worker_before_it_is_ready(tmp_path):
    run = Run(tmp_path, CASES[0], frame(12))
    path = tmp_path / "round.sock"
    env = {**run.env, "VANTAGE_ROUND_WORKER": encode_value(str(path))}
    done = subprocess.run([sys.executable, "-m", "vantage_algorithms", "reference.nothing_here"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no algorithm module 'reference.nothing_here'"
    assert not path.exists()


def test_a_central_methods_container_imports_no_pandas():
    """pandas is the largest import of a run (about half a second of CPU, issue 18): only
    the sites' rounds read data, so a central run's container does without it."""
    code = ("import sys, vantage_algorithms.container, reference.summary, reference.kaplan_meier, reference.cox,"
            " reference.crosstab, reference.logistic\n"
            "print(sorted(m for m in ('pandas', 'scipy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO_ROOT / "algorithms")},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
