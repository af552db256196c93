"""`vantage`, the task command line (client/vantage_client/console.py), as a researcher
runs it: separate processes against a real server, nodes played over the REST API
(FakeNode) so no Docker is needed."""

import json
import os
import stat
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

from tests.client.conftest import CLIENT_DIR

pytestmark = pytest.mark.slow
IMAGE = "127.0.0.1:5000/vantage/test-e2e-sum:1"
COX_RESULT = {"type": "model", "model": "cox_ph", "n": 120, "residual_df": 60, "events": 62, "coefficients": [
    {"covariate": "age", "coef": -0.01, "se": 0.005, "z": -2.0, "p": 0.045, "hazard_ratio": 0.99,
     "hr_lower": 0.98, "hr_upper": 0.9998},
    {"covariate": "tsize", "coef": 0.014, "se": 0.0035, "z": 4.0, "p": 6e-05, "hazard_ratio": 1.0141,
     "hr_lower": 1.0072, "hr_upper": 1.0213}],
    "covariance": [[2.5e-05, 1e-06], [1e-06, 1.2e-05]]}


@pytest.fixture
def vantage(tmp_path, api_server):
    """vantage(*args) -> CompletedProcess, in a home of its own (its session file)."""
    env = {**os.environ, "VANTAGE_CONFIG_DIR": str(tmp_path / "config"), "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1", "PYTHONPATH": str(CLIENT_DIR)}
    env.pop("VANTAGE_URL", None)

    def run(*args, password=None):
        extra = {"VANTAGE_PASSWORD": password} if password else {}
        return subprocess.run([sys.executable, "-c", "from vantage_client.console import main; main()", *args],
                              capture_output=True, text=True, env={**env, **extra}, timeout=120)

    run.config = tmp_path / "config"
    return run


@pytest.fixture
def logged_in(vantage, api_server, client_seed):
    done = vantage("login", "--url", api_server.url, "--username", client_seed["researcher"],
                   password=client_seed["password"])
    assert done.returncode == 0, done.stderr
    return vantage


def _json(done):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_login_keeps_the_session_in_an_owner_only_file_and_whoami_reads_it(vantage, api_server, client_seed):
    done = vantage("login", "--url", api_server.url, "--username", client_seed["researcher"],
                   password=client_seed["password"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"logged in to {api_server.url} as {client_seed['researcher']}\n"
    session = vantage.config / "session.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert client_seed["password"] not in session.read_text()
    me = _json(vantage("whoami", "--json"))
    assert me["username"] == client_seed["researcher"] and me["organization_name"] == "Client Hospital 1"
    assert vantage("logout").returncode == 0 and not session.exists()
    gone = vantage("whoami")
    assert gone.returncode == 1 and gone.stderr.startswith("vantage: not logged in") and "Traceback" not in gone.stderr


def test_a_wrong_password_is_one_line_and_a_non_zero_exit(vantage, api_server, client_seed):
    done = vantage("login", "--url", api_server.url, "--username", client_seed["researcher"], password="wrong")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("vantage: ")


def test_lists_of_collaborations_nodes_and_the_catalogue(logged_in, client_seed):
    collaborations = _json(logged_in("collaborations", "--json"))
    assert {c["id"] for c in collaborations} == {client_seed["plain"], client_seed["sealed"]}
    text = logged_in("collaborations")
    assert text.returncode == 0 and "Client plain study" in text.stdout
    nodes = _json(logged_in("--json", "nodes", "--collaboration", str(client_seed["plain"])))
    assert len(nodes) == 2 and all("status" in n for n in nodes)
    catalogue = logged_in("algorithms")
    assert catalogue.returncode == 0, catalogue.stderr
    assert "client-cox" in catalogue.stdout
    assert "central  cox(" in catalogue.stdout and "covariates: array" in catalogue.stdout
    assert "alpha?: number" in catalogue.stdout


def test_create_from_the_catalogue_types_arguments_by_its_schema_and_runs_at_the_own_organisation(
        logged_in, client_seed, fake_nodes):
    nodes = fake_nodes("plain")
    task = _json(logged_in("tasks", "create", "--json", "--collaboration", str(client_seed["plain"]),
                           "--algorithm", "client-cox", "--method", "cox", "--arg", "covariates=age,tsize",
                           "--arg", "duration=time", "--arg", "event=cens", "--arg", "alpha=0.1",
                           "--database", "gbsg2"))
    assert task["algorithm"] == client_seed["algorithm"] and task["method"] == "cox"
    [run] = task["runs"]
    assert run["organization"] == client_seed["org_1"]  # a central method: the researcher's own organisation
    claimed = nodes[client_seed["org_1"]].claim(run["id"])
    import base64

    sent = json.loads(base64.b64decode(claimed["input"]))
    assert sent["kwargs"] == {"covariates": ["age", "tsize"], "duration": "time", "event": "cens", "alpha": 0.1}
    nodes[client_seed["org_1"]].finish(run["id"], json.dumps(COX_RESULT).encode())

    waited = logged_in("tasks", "wait", str(task["id"]), "--timeout", "60")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout == f"task {task['id']}: completed\n"

    results = logged_in("tasks", "results", str(task["id"]))
    assert results.returncode == 0, results.stderr
    assert "Client Hospital 1" in results.stdout and "hazard_ratio" in results.stdout
    assert "tsize" in results.stdout and "1.0141" in results.stdout and "covariance" in results.stdout
    as_json = _json(logged_in("tasks", "results", str(task["id"]), "--json"))
    assert as_json[0]["result"] == COX_RESULT and as_json[0]["organization_name"] == "Client Hospital 1"


def test_results_plot_to_an_svg_file(logged_in, client_seed, fake_nodes, tmp_path):
    pytest.importorskip("matplotlib")
    nodes = fake_nodes("plain")
    task = _json(logged_in("tasks", "create", "--json", "--collaboration", str(client_seed["plain"]),
                           "--image", IMAGE, "--method", "cox", "--organizations", str(client_seed["org_1"])))
    [run] = task["runs"]
    nodes[client_seed["org_1"]].claim(run["id"])
    nodes[client_seed["org_1"]].finish(run["id"], json.dumps(COX_RESULT).encode())
    out = tmp_path / "forest.svg"
    done = logged_in("tasks", "results", str(task["id"]), "--plot", str(out))
    assert done.returncode == 0, done.stderr
    assert f"plot written to {out}" in done.stdout
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")


def test_schema_violations_are_refused_before_anything_is_sent(logged_in, client_seed):
    before = _json(logged_in("tasks", "list", "--json"))
    cases = [
        (["--arg", "duration=time", "--arg", "event=cens"], "vantage: missing required argument: covariates\n"),
        (["--arg", "covariates=age", "--arg", "duration=time", "--arg", "event=cens", "--arg", "alpha=x"],
         "vantage: --arg alpha: 'x' is not a number\n"),
        (["--arg", "covariates=age", "--arg", "duration=time", "--arg", "event=cens", "--arg", "colour=red"],
         "vantage: unknown argument: colour (known: alpha, covariates, duration, event, max_iterations)\n"),
    ]
    for extra, message in cases:
        done = logged_in("tasks", "create", "--collaboration", str(client_seed["plain"]), "--algorithm", "client-cox",
                         "--method", "cox", *extra)
        assert (done.returncode, done.stderr) == (1, message)
    wrong_method = logged_in("tasks", "create", "--collaboration", str(client_seed["plain"]), "--algorithm",
                             "client-cox", "--method", "kaplan_meier")
    assert wrong_method.returncode == 1
    assert wrong_method.stderr == "vantage: client-cox has no method 'kaplan_meier' (it has: cox, cox_site_terms)\n"
    assert _json(logged_in("tasks", "list", "--json")) == before


def test_wait_shows_progress_per_organisation_then_logs_show_and_kill(logged_in, client_seed, fake_nodes):
    nodes = fake_nodes("plain")
    task = _json(logged_in("tasks", "create", "--json", "--collaboration", str(client_seed["plain"]),
                           "--image", IMAGE, "--method", "sum", "--kwargs", '{"extra": 1}'))
    assert len(task["runs"]) == 2

    def finish():
        for run in task["runs"]:
            nodes[run["organization"]].claim(run["id"])
            nodes[run["organization"]].finish(run["id"], b'{"sum": 1}')

    worker = threading.Thread(target=finish)
    worker.start()
    waited = logged_in("tasks", "wait", str(task["id"]), "--timeout", "60")
    worker.join()
    assert waited.returncode == 0, waited.stderr
    assert "Client Hospital 1: completed" in waited.stderr and "Client Hospital 2: completed" in waited.stderr

    shown = logged_in("tasks", "show", str(task["id"]))
    assert shown.returncode == 0 and f"task {task['id']} sum: completed" in shown.stdout
    assert shown.stdout.count("Client Hospital") == 2
    logs = _json(logged_in("tasks", "logs", str(task["id"]), "--json"))
    assert {entry["run"] for entry in logs} == {r["id"] for r in task["runs"]}

    open_task = _json(logged_in("tasks", "create", "--json", "--collaboration", str(client_seed["plain"]),
                                "--image", IMAGE, "--method", "sum"))
    killed = logged_in("tasks", "kill", str(open_task["id"]))
    assert killed.returncode == 0 and killed.stdout == f"kill requested for task {open_task['id']}\n"
    assert _json(logged_in("tasks", "show", str(open_task["id"]), "--json"))["status"] == "killed"
    not_done = logged_in("tasks", "wait", str(open_task["id"]))
    assert not_done.returncode == 1


def test_an_unknown_task_is_one_line(logged_in):
    done = logged_in("tasks", "show", "999999")
    assert done.returncode == 1 and done.stderr.startswith("vantage: ") and done.stderr.count("\n") == 1
