"""End to end: a live server, real node agent processes, real containers.

A researcher creates tasks through the REST API; node agents started as a hospital
would start them (`manage.py run_node`, no database) claim, check, pull from the
authenticated registry, run and report. Every assertion is about what the
researcher sees through the API, or what the algorithm saw inside its container.
"""

import json
import signal
import time

import pytest
import requests

from nodeagent import volumes
from nodeagent.job import AgentContext

pytestmark = pytest.mark.slow

def test_partial_method_runs_on_two_sites_and_results_are_downloadable(site, test_images):
    nodes = [site.node(0, rows=[(1,), (2,), (3,)]), site.node(1, rows=[(10,), (20,)])]
    for node in nodes:
        node.wait_connected()
    started = time.monotonic()
    task = site.task(test_images["probe"], "partial", site.organizations, kwargs={"column": "value"})
    runs = site.researcher.wait_runs(task["id"])
    elapsed = time.monotonic() - started
    assert {r["status"] for r in runs} == {"completed"}, site.agent_logs()
    results = {r["organization"]: site.researcher.result(r["id"]) for r in runs}
    assert results == {site.organizations[0]: {"rows": 3, "sum": 6.0},
                       site.organizations[1]: {"rows": 2, "sum": 30.0}}
    print(f"task created -> both results visible: {elapsed:.2f} s")


@pytest.mark.database_independent
def test_an_agent_copies_its_database_into_a_volume_before_a_run_needs_it(site, test_images, docker_client):
    node = site.node(0, rows=[(4,), (5,)])
    deadline = time.monotonic() + 60
    while "copied into its volume" not in node.log():
        assert time.monotonic() < deadline and node.process.poll() is None, node.log()[-3000:]
        time.sleep(0.1)
    node_id = site.world["nodes"][0]["id"]
    filled = docker_client.volumes.list(filters={"label": [
        f"{volumes.LABEL_VOLUME}=data", f"{volumes.LABEL_DATA_LABEL}=default", f"vantage.node_id={node_id}"]})
    assert len(filled) == 1, [v.name for v in filled]
    # The first run reads that copy: it makes none of its own.
    task = site.task(test_images["probe"], "partial", kwargs={"column": "value"})
    run = site.wait_status(task["runs"][0]["id"], {"completed", "failed", "crashed"})
    assert run["status"] == "completed", site.agent_logs()
    assert site.researcher.result(run["id"]) == {"rows": 2, "sum": 9.0}
    assert node.log().count("copied into its volume") == 1, node.log()[-3000:]


@pytest.mark.database_independent
def test_container_sees_the_vantage6_contract_and_the_node_env(site, test_images):
    site.node(0, algorithm_env='ALGO_MIN_ROWS = "5"')
    task = site.task(test_images["probe"], "env")
    (run,) = site.researcher.wait_runs(task["id"])
    assert run["status"] == "completed", site.agent_logs()
    seen = site.researcher.result(run["id"])
    assert seen["uid"] == 65534
    assert seen["token"].count(".") == 2  # the run's own container token, a JWT
    assert seen["env"] == {
        "INPUT_FILE": "/mnt/run/input", "OUTPUT_FILE": "/mnt/run/output", "TOKEN_FILE": "/mnt/run/token",
        "TEMPORARY_FOLDER": "/mnt/tmp", "HOST": "http://127.0.0.1", "PORT": "7601", "API_PATH": "",
        "USER_REQUESTED_DATABASE_LABELS": "default", "DB_LABELS": "default",
        "DEFAULT_DATABASE_URI": "/mnt/data/default/default.csv", "DEFAULT_DATABASE_TYPE": "csv", "ALGO_MIN_ROWS": "5",
    }


def test_central_method_creates_a_subtask_through_the_proxy_and_combines_its_results(site, test_images,
                                                                                    docker_client):
    nodes = [site.node(0, rows=[(1,), (2,), (3,)], limits="max_concurrent_runs = 2"),
             site.node(1, rows=[(10,), (20,)])]
    for node in nodes:
        node.wait_connected()
    task = site.task(test_images["probe"], "central", site.organizations[:1], kwargs={"column": "value", "count": 2})
    run_id = task["runs"][0]["id"]
    detail = site.wait_status(run_id, {"completed", "failed", "crashed", "timed_out"}, timeout=90)
    assert detail["status"] == "completed", f"{detail['log']}\n{site.agent_logs()}"
    combined = site.researcher.result(run_id)
    chosen = sorted(site.organizations)[:2]
    assert combined["organizations"] == chosen
    assert (combined["rows"], combined["sum"]) == (5, 36.0)
    subtask = site.researcher.api("GET", f"tasks/{combined['subtask']}/").json()
    assert subtask["parent"] in (task["id"], {"id": task["id"]}) or subtask.get("parent_id") == task["id"], subtask
    sub_runs = site.researcher.runs(combined["subtask"])
    node_of = {entry["organization"]: entry["id"] for entry in site.world["nodes"]}
    assert sorted(r["organization"] for r in sub_runs) == chosen
    assert all(r["status"] == "completed" and r["node"] == node_of[r["organization"]] for r in sub_runs), sub_runs
    # One forwarder per slot, reused by the runs; a stopping agent takes its idle ones along.
    server_key = AgentContext.key_of(site.server.url)
    for index, node in enumerate(nodes):
        node_label = f"vantage.forwarder_node_id={site.world['nodes'][index]['id']}"
        labels = {"label": [f"vantage.server={server_key}", node_label]}
        assert len(docker_client.api.containers(all=True, filters=labels)) == 2  # max_concurrent_runs
        node.stop()
        assert docker_client.api.containers(all=True, filters=labels) == [], "a forwarder was left behind"


@pytest.mark.database_independent
def test_policy_refusal_is_rejected_before_pulling_with_the_reason_in_the_log(site, test_images):
    site.node(0, policy='allowed_images = ["127.0.0.1:5000/approved/*"]')
    task = site.task(test_images["probe"], "partial")
    (run,) = site.researcher.wait_runs(task["id"])
    detail = site.researcher.run(run["id"])
    assert (detail["status"], detail["error_kind"]) == ("rejected", "policy")
    assert "refused by this node's policy" in detail["log"]
    assert "policy.allowed_images" in detail["log"]


@pytest.mark.database_independent
def test_a_crash_is_crashed_with_exit_code_and_stderr_in_the_log(site, test_images):
    site.node(0)
    task = site.task(test_images["probe"], "crash", kwargs={"code": 3})
    (run,) = site.researcher.wait_runs(task["id"])
    detail = site.researcher.run(run["id"])
    assert (detail["status"], detail["exit_code"], detail["error_kind"]) == ("crashed", 3, "algorithm")
    assert "probe: about to fail" in detail["log"]
    assert "[node] the algorithm exited with code 3" in detail["log"]


@pytest.mark.database_independent
def test_output_that_is_not_json_fails_as_output(site, test_images):
    site.node(0)
    task = site.task(test_images["probe"], "bad_output")
    (run,) = site.researcher.wait_runs(task["id"])
    detail = site.researcher.run(run["id"])
    assert (detail["status"], detail["error_kind"], detail["exit_code"]) == ("failed", "output", 0)
    assert "the output is not valid JSON" in detail["log"]


@pytest.mark.database_independent
def test_deadline_kills_the_container_as_timed_out(site, test_images):
    site.node(0, limits="deadline = 2")
    task = site.task(test_images["probe"], "sleep", kwargs={"seconds": 60})
    (run,) = site.researcher.wait_runs(task["id"], timeout=30)
    detail = site.researcher.run(run["id"])
    assert (detail["status"], detail["error_kind"]) == ("timed_out", "timeout")
    assert "probe: sleeping 60 s" in detail["log"]
    assert "passed its deadline of 2 s" in detail["log"]


@pytest.mark.database_independent
def test_kill_request_stops_the_container_within_seconds(site, test_images, docker_client):
    node = site.node(0)
    task = site.task(test_images["probe"], "sleep", kwargs={"seconds": 120})
    run_id = task["runs"][0]["id"]
    site.wait_status(run_id, {"running"})
    asked = time.monotonic()
    site.researcher.kill(task["id"])
    detail = site.wait_status(run_id, {"killed"}, timeout=15)
    took = time.monotonic() - asked
    assert detail["error_kind"] == "killed"
    assert "kill requested; container killed" in detail["log"]
    assert took < 5, f"kill took {took:.1f} s"
    server_key = AgentContext.key_of(site.server.url)
    name = f"vantage-{server_key}-node{site.world['nodes'][0]['id']}-run{run_id}"

    def container_left():
        # The low-level listing: no per-container inspect that could race the removal.
        return any(f"/{name}" in c["Names"] for c in docker_client.api.containers(all=True, filters={"name": name}))

    deadline = time.monotonic() + 10
    while container_left() or list((node.task_folder / "runs").iterdir()):
        assert time.monotonic() < deadline, "container or run folder left behind"
        time.sleep(0.1)
    print(f"kill request -> killed: {took:.2f} s")


@pytest.mark.database_independent
def test_an_image_that_does_not_exist_fails_as_image(site):
    site.node(0)
    task = site.task("127.0.0.1:5000/vantage-test/no-such-image@sha256:" + "0" * 64, "partial")
    (run,) = site.researcher.wait_runs(task["id"])
    detail = site.researcher.run(run["id"])
    assert (detail["status"], detail["error_kind"]) == ("failed", "image")
    assert "pulling 127.0.0.1:5000/vantage-test/no-such-image@sha256:" in detail["log"]


@pytest.mark.database_independent
def test_a_registry_refusing_the_credentials_fails_as_image(site, test_images, docker_client, registry):
    # A repository the engine has no local copy of, so the node has to pull it.
    source = docker_client.images.get(test_images["nostart"].split("@")[0])
    repository = f"{registry.host}/vantage-test/creds-{site.world['collaboration']}"
    source.tag(repository, "1")
    auth = {"username": registry.username, "password": registry.password}
    for event in docker_client.api.push(repository, tag="1", stream=True, decode=True, auth_config=auth):
        assert "error" not in event, event
    digest = next(d for d in docker_client.images.get(f"{repository}:1").attrs["RepoDigests"]
                  if d.startswith(repository)).split("@")[1]
    docker_client.images.remove(f"{repository}:1")

    wrong = registry.__class__(registry.host, registry.username, "wrong", site.workdir / "wrong-password")
    wrong.password_file.write_text("wrong-password\n")
    site.node(0, registry=wrong)
    task = site.task(f"{repository}:1@{digest}", "partial")
    (run,) = site.researcher.wait_runs(task["id"])
    detail = site.researcher.run(run["id"])
    assert (detail["status"], detail["error_kind"]) == ("failed", "image")
    assert "unauthorized" in detail["log"].lower() or "authentication required" in detail["log"].lower()


@pytest.mark.database_independent
def test_a_container_that_cannot_start_fails_as_startup(site, test_images):
    site.node(0)
    task = site.task(test_images["nostart"], "partial")
    (run,) = site.researcher.wait_runs(task["id"])
    detail = site.researcher.run(run["id"])
    assert (detail["status"], detail["error_kind"]) == ("failed", "startup")
    assert "/no/such/program" in detail["log"]


@pytest.mark.database_independent
def test_a_forwarder_that_cannot_start_fails_the_run_as_startup(site, test_images):
    site.node(0, top='forwarder_image = "127.0.0.1:5000/vantage-test/no-such-forwarder:1"')
    task = site.task(test_images["probe"], "partial")
    (run,) = site.researcher.wait_runs(task["id"])
    detail = site.researcher.run(run["id"])
    assert (detail["status"], detail["error_kind"]) == ("failed", "startup")
    assert "the node proxy could not start for this run" in detail["log"]


@pytest.mark.database_independent
def test_containers_cannot_reach_the_network_write_their_data_or_read_other_runs(site, test_images):
    node = site.node(0)
    node.data.chmod(0o666)  # the algorithm reads a copy: the original is out of its reach anyway
    sleeper = site.task(test_images["probe"], "sleep", kwargs={"seconds": 30})
    sleeper_run = sleeper["runs"][0]["id"]
    site.wait_status(sleeper_run, {"running"})
    other = node.task_folder / "runs" / f"run-{sleeper_run}"
    assert (other / "input").exists()
    port = int(site.server.url.rsplit(":", 1)[1])
    task = site.task(test_images["probe"], "escape", kwargs={
        "server_port": port, "other_files": [str(other / "input"), str(other / "state.json")]})
    run = site.wait_status(task["runs"][0]["id"], {"completed", "failed", "crashed"})
    assert run["status"] == "completed", site.agent_logs()
    seen = site.researcher.result(run["id"])
    assert seen["interfaces"] == ["lo"]
    assert seen["connect_server"].startswith("ConnectionRefusedError")
    # The relay to the node proxy is all there is, and the proxy offers only vantage6's calls.
    assert seen["proxy_users"].startswith("HTTPError: HTTP Error 404"), seen["proxy_users"]
    # A copy of the data, read-only twice over: 0444 root's, on a read-only mount.
    assert seen["write_data"].startswith("PermissionError"), seen["write_data"]
    assert " /mnt/data/default ro," in seen["mountinfo"]
    assert "Read-only file system" in seen["write_root"] and "Read-only file system" in seen["write_usr"]
    assert seen["write_input"].startswith(("PermissionError", "OSError"))
    assert all(result.startswith("FileNotFoundError") for result in seen["read_other"].values()), seen
    assert seen["mnt_run"] == ["input", "output", "token"]
    assert seen["create_in_run"].startswith("PermissionError"), seen["create_in_run"]
    # Its mount table names no path of the node's: not the run's folder, not the task
    # folder above it, not the data file or its folder (all reach it through volumes).
    mountinfo = seen["mountinfo"]
    assert mountinfo.startswith("ok: ") and " /mnt/run " in mountinfo and " /mnt/data/default " in mountinfo
    for host_path in (other, node.task_folder, node.task_folder.resolve(), node.data, node.data.parent, node.dir):
        assert str(host_path) not in mountinfo, (host_path, mountinfo)
    # Nor does it read the host's kernel command line, kernel build string or boot id.
    assert seen["host_files"] == {path: "ok: " for path in (
        "/proc/cmdline", "/proc/version", "/proc/sys/kernel/random/boot_id")}, seen["host_files"]
    assert seen["write_tmp"].startswith("ok") and seen["write_temporary_folder"].startswith("ok")
    assert (seen["uid"], seen["cap_eff"], seen["no_new_privs"]) == (65534, "0000000000000000", "1")
    assert node.data.read_text() == "value\n1\n2\n"
    site.researcher.kill(sleeper["id"])
    site.wait_status(sleeper_run, {"killed"})


@pytest.mark.database_independent
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_agent_restart_mid_run_reattaches_and_the_run_completes_once(site, test_images, signum):
    node = site.node(0)
    task = site.task(test_images["probe"], "sleep", kwargs={"seconds": 6})
    run_id = task["runs"][0]["id"]
    site.wait_status(run_id, {"running"})
    node.signal(signum)
    time.sleep(1)
    assert site.researcher.run(run_id)["status"] == "running"
    node.start()
    detail = site.wait_status(run_id, {"completed", "failed", "crashed"}, timeout=60)
    assert detail["status"] == "completed", site.agent_logs()
    assert site.researcher.result(run_id) == {"slept": 6}
    assert detail["log"].count("probe: sleeping 6 s") == 1
    assert f"run {run_id}: resuming (phase started)" in node.log()


@pytest.mark.database_independent
@pytest.mark.parametrize("restart_agent", [False, True], ids=["same-agent", "agent-restarted-meanwhile"])
def test_server_down_during_upload_keeps_the_result_and_uploads_it_later(site, test_images, restart_agent):
    node = site.node(0)
    task = site.task(test_images["probe"], "sleep", kwargs={"seconds": 2})
    run_id = task["runs"][0]["id"]
    site.wait_status(run_id, {"running"})
    site.server.stop()
    try:
        state_file = node.task_folder / "runs" / f"run-{run_id}" / "state.json"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state_file.exists() and json.loads(state_file.read_text())["phase"] == "finished":
                break
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        assert state["phase"] == "finished" and state["outcome"]["status"] == "completed"
        assert json.loads((state_file.parent / "output").read_text()) == {"slept": 2}
        time.sleep(2)  # a few failed upload attempts
        if restart_agent:
            node.signal(signal.SIGTERM)
            assert state_file.exists()
    finally:
        site.server.start()
    if restart_agent:
        node.start()
    detail = site.wait_status(run_id, {"completed"}, timeout=60)
    assert site.researcher.result(run_id) == {"slept": 2}
    assert detail["log"].count("probe: sleeping 2 s") == 1
    assert "upload failed" in node.log()
    if restart_agent:
        assert f"run {run_id}: resuming (phase finished)" in node.log()


def test_websocket_brings_new_runs_and_kill_requests_without_polling(site, test_images):
    node = site.node(0, server="poll_interval = 600\nkill_poll_interval = 600")
    node.wait_connected()
    deadline = time.monotonic() + 10
    while "websocket connected" not in node.log():
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.05)
    time.sleep(0.5)  # past the first poll the agent makes on connecting
    started = time.monotonic()
    task = site.task(test_images["probe"], "partial")
    (run,) = site.researcher.wait_runs(task["id"], timeout=10)
    assert run["status"] == "completed", site.agent_logs()
    print(f"websocket: task created -> result visible: {time.monotonic() - started:.2f} s")

    sleeper = site.task(test_images["probe"], "sleep", kwargs={"seconds": 120})
    run_id = sleeper["runs"][0]["id"]
    site.wait_status(run_id, {"running"}, timeout=10)
    site.researcher.kill(sleeper["id"])
    assert site.wait_status(run_id, {"killed"}, timeout=5)["error_kind"] == "killed"


def test_runs_execute_in_parallel_up_to_the_limit_and_none_is_lost(site, test_images):
    site.node(0, limits="max_concurrent_runs = 2")
    tasks = [site.task(test_images["probe"], "sleep", kwargs={"seconds": 2}) for _ in range(5)]
    run_ids = [t["runs"][0]["id"] for t in tasks]
    most_running = 0
    deadline = time.monotonic() + 60
    while True:
        statuses = [site.researcher.run(run_id)["status"] for run_id in run_ids]
        most_running = max(most_running, statuses.count("running"))
        if all(s == "completed" for s in statuses) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert statuses == ["completed"] * 5, f"{statuses}\n{site.agent_logs()}"
    assert most_running == 2
    assert all(site.researcher.result(run_id) == {"slept": 2} for run_id in run_ids)


def test_a_run_claimed_by_this_node_but_unknown_locally_is_failed_on_start(site, test_images):
    # As if the agent had been killed right after claiming, and its task folder lost.
    api_key = site.world["nodes"][0]["api_key"]
    token = requests.post(f"{site.server.url}/api/node/token/", json={"api_key": api_key}, timeout=10).json()["access"]
    task = site.task(test_images["probe"], "partial")
    run_id = task["runs"][0]["id"]
    claimed = requests.post(f"{site.server.url}/api/runs/{run_id}/claim/", timeout=10,
                            headers={"Authorization": f"Bearer {token}"})
    assert claimed.status_code == 200, claimed.text
    site.node(0)
    detail = site.wait_status(run_id, {"failed"}, timeout=30)
    assert detail["error_kind"] == "internal"
    assert "this node holds the run but has no trace of it here" in detail["log"]


def test_websocket_cut_mid_task_loses_no_event_and_runs_nothing_twice(site, test_images):
    # Polling is all but off: only the websocket, and the listing on every reconnect, bring work.
    node = site.node(0, server="poll_interval = 600\nkill_poll_interval = 600")
    node.wait_connected()
    deadline = time.monotonic() + 10
    while "websocket connected" not in node.log():
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.05)
    running = site.task(test_images["probe"], "sleep", kwargs={"seconds": 3})
    running_id = running["runs"][0]["id"]
    site.wait_status(running_id, {"running"}, timeout=20)

    site.server.stop()  # cuts the websocket mid-task
    site.server.start()
    # Created right after the restart, typically before the agent's backoff lets it reconnect,
    # so its run.created event reaches nobody; the listing on reconnect must find it.
    missed = site.task(test_images["probe"], "partial")
    missed_id = missed["runs"][0]["id"]

    assert site.wait_status(running_id, {"completed"}, timeout=60)["status"] == "completed", site.agent_logs()
    assert site.wait_status(missed_id, {"completed"}, timeout=60)["status"] == "completed", site.agent_logs()
    deadline = time.monotonic() + 90  # the agent goes back on the socket after its backoff
    while node.log().count("websocket connected") < 2:
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.2)
    log = node.log()
    assert log.count(f"run {running_id}: claimed") == 1
    assert log.count(f"run {missed_id}: claimed") == 1
    assert site.researcher.result(running_id) == {"slept": 3}
