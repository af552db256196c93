"""Round workers end to end (nodeagent/rounds.py): a live server, real agents, real containers.

The image is algorithms/testimages/rounds, a toolkit algorithm that opts in with the
label org.vantage.round-worker="1". Every assertion is about what the researcher sees
through the API, what Docker shows of the containers, or what the algorithm reported.
"""

import signal
import time
from datetime import datetime

import pytest

from nodeagent.job import AgentContext

# What they check is the node's: the run statuses they read back are the server's own,
# tested on both databases with containers per run (test_live.py).
pytestmark = [pytest.mark.slow, pytest.mark.database_independent]

FINAL = {"completed", "failed", "crashed", "killed", "rejected", "timed_out"}


def workers(site, docker_client, index: int, *, standby: bool = False) -> list[dict]:
    """The round worker containers of node `index` (running or not): its jobs' workers, or its standby."""
    server_key = AgentContext.key_of(site.server.url)
    labels = [f"vantage.server={server_key}", f"vantage.round_worker_node={site.world['nodes'][index]['id']}"]
    return [c for c in docker_client.api.containers(all=True, filters={"label": labels})
            if (c["Labels"].get("vantage.job_id") == "standby") is standby]


def job_workers_ready(log: str) -> int:
    """How many workers started for a job (not as a standby) the agent's log shows ready."""
    return sum(1 for line in log.splitlines() if "(job " in line and ") ready in " in line)


def wait_for(condition, timeout: float, what: str, site) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s\n{site.agent_logs()}")
        time.sleep(0.1)


def subtask_runs(site, task_id: int) -> list[dict]:
    children = site.researcher.api("GET", f"tasks/?parent={task_id}&page_size=100").json()["results"]
    return [run for child in sorted(children, key=lambda c: c["id"]) for run in site.researcher.runs(child["id"])]


def ask(site, organizations, **kwargs):
    return site.task(site.rounds_image, "ask", site.organizations[:1],
                     kwargs={"organizations": organizations, **kwargs})


@pytest.fixture
def rounds_site(site, rounds_image):
    site.rounds_image = rounds_image
    return site


def test_a_jobs_rounds_share_one_worker_per_node_and_each_round_is_recorded_as_its_run(rounds_site, docker_client):
    site = rounds_site
    nodes = [site.node(0, rows=[(1,), (2,), (3,)]), site.node(1, rows=[(10,), (20,)], limits="round_worker_idle = 3")]
    for node in nodes:
        node.wait_connected()
    chosen = site.organizations[:2]
    task = ask(site, chosen, rounds=3)
    run_id = task["runs"][0]["id"]
    detail = site.wait_status(run_id, FINAL, timeout=120)
    assert detail["status"] == "completed", f"{detail['log']}\n{site.agent_logs()}"
    answer = site.researcher.result(run_id)
    rounds = answer["rounds"]
    assert [[a["rows"] for a in one] for one in rounds] == [[3, 2]] * 3
    # One process per node served all three rounds; neither is the central run's container.
    processes = [{one[i]["process"] for one in rounds} for i in range(2)]
    assert all(len(p) == 1 for p in processes), rounds
    assert len(processes[0] | processes[1] | {answer["central"]}) == 3
    # Each round is the run it is: started, finished, its own result, as with containers.
    runs = subtask_runs(site, task["id"])
    assert len(runs) == 6 and all(r["status"] == "completed" and r["started_at"] and r["finished_at"]
                                  for r in runs), runs
    # A quick round's start travels with its finish: when it started and which image ran.
    at = datetime.fromisoformat
    assert all(at(r["claimed_at"]) <= at(r["started_at"]) <= at(r["finished_at"]) for r in runs), runs
    assert len({r["executed_digest"] for r in runs}) == 1 and runs[0]["executed_digest"].startswith("sha256:"), runs
    by_org = {org: [site.researcher.result(r["id"]) for r in runs if r["organization"] == org] for org in chosen}
    assert by_org == {org: [one[i] for one in rounds] for i, org in enumerate(chosen)}
    # No container per run for the rounds: only the central run had one at node 0.
    server_key = AgentContext.key_of(site.server.url)
    for index, node in enumerate(nodes):
        assert node.log().count("round worker vantage-") >= 1
        assert job_workers_ready(node.log()) == 1, node.log()
    # The job ended: its central run's node removes its worker at once, the other after its idle limit.
    # The agent logs a removal once the container is gone, so the line may come a moment later.
    wait_for(lambda: not workers(site, docker_client, 0), 10, "node 0's worker gone after the job", site)
    wait_for(lambda: "its job ended" in nodes[0].log(), 5, "node 0 logging the worker removed as its job ended", site)
    wait_for(lambda: not workers(site, docker_client, 1), 15, "node 1's worker gone after 3 idle seconds", site)
    wait_for(lambda: "idle for 3 s" in nodes[1].log(), 5, "node 1 logging the worker removed as idle", site)
    left = docker_client.api.containers(all=True, filters={"label": [f"vantage.server={server_key}", "vantage.job_id"]})
    assert all(c["Labels"]["vantage.job_id"] == "standby" for c in left), left  # no job's worker


def test_a_standby_worker_serves_the_next_job_of_its_image_and_only_that_job(rounds_site, docker_client):
    site = rounds_site
    # The rounds at node 1, which is not told when a job ends: its job's worker stays until
    # its idle limit, as on most sites, and the standby starts beside it.
    nodes = [site.node(0), site.node(1, limits="round_worker_idle = 30")]
    for node in nodes:
        node.wait_connected()
    node = nodes[1]
    first = ask(site, site.organizations[1:2], rounds=2)
    assert site.wait_status(first["runs"][0]["id"], FINAL, timeout=120)["status"] == "completed", site.agent_logs()
    # Once the node is quiet, one standby starts, for the image and database the job used,
    # isolated as a job's worker.
    wait_for(lambda: "(standby) ready in" in node.log(), 60, "a standby worker ready", site)
    (standby,) = workers(site, docker_client, 1, standby=True)
    attrs = docker_client.api.inspect_container(standby["Id"])
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert attrs["Config"]["User"] == "65534:65534" and host["PidsLimit"] and host["Memory"]
    assert {m["Destination"] for m in attrs["Mounts"]} == {"/mnt/rounds", "/mnt/data/default"}
    (old,) = workers(site, docker_client, 1)
    assert not workers(site, docker_client, 0, standby=True)  # node 0 ran only the central run: no worker to keep

    second = ask(site, site.organizations[1:2], rounds=2)
    assert site.wait_status(second["runs"][0]["id"], FINAL, timeout=120)["status"] == "completed", site.agent_logs()
    assert f"a standby, now serves job {second['id']}" in node.log()
    assert job_workers_ready(node.log()) == 1  # no worker started for the second job: it took the standby
    one = site.researcher.result(first["runs"][0]["id"])["rounds"]
    two = site.researcher.result(second["runs"][0]["id"])["rounds"]
    assert len({r[0]["rows"] for r in one + two}) == 1
    # The standby served both of the second job's rounds; the first job's worker served none of them.
    assert two[0][0]["process"] == two[1][0]["process"] != one[0][0]["process"]
    # A container's labels cannot change: the second job's worker is still labelled a standby.
    every = lambda: {c["Id"] for c in workers(site, docker_client, 1) + workers(site, docker_client, 1, standby=True)}  # noqa: E731
    assert every() == {old["Id"], standby["Id"]}

    # Another standby follows the second job; the agent's stop removes every worker.
    wait_for(lambda: len(every()) == 3, 60, "the next standby", site)
    node.stop()
    assert not workers(site, docker_client, 1) and not workers(site, docker_client, 1, standby=True)


def test_a_standby_named_in_node_toml_is_ready_before_any_job_serves_the_first_and_is_kept(
        rounds_site, docker_client, test_images):
    site = rounds_site
    missing = f"{site.registry.host}/vantage-test/no-such-image:1"
    # Node 0 names three: one it keeps, one without the round-worker label, one its registry
    # does not have. Node 1's policy allows none of them.
    named = ", ".join(f'{{image = "{image}"}}' for image in (site.rounds_image, test_images["probe"], missing))
    nodes = [site.node(0, top=f"standby = [{named}]", limits="round_worker_standby = 0"),
             site.node(1, top=f'standby = [{{image = "{site.rounds_image}"}}]',
                       policy=f'allowed_images = ["{site.registry.host}/elsewhere/*"]')]
    for node in nodes:
        node.wait_connected()
    node = nodes[0]
    wait_for(lambda: "(standby) ready in" in node.log(), 60, "node 0's standby ready before any job", site)
    log = node.log()
    assert f"standby worker kept ready for image {site.rounds_image.split('@')[0]}" in log, log
    assert "does not declare the round-worker label" in log and "no-such-image" in log, log
    (standby,) = workers(site, docker_client, 0, standby=True)
    attrs = docker_client.api.inspect_container(standby["Id"])
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert {m["Destination"] for m in attrs["Mounts"]} == {"/mnt/rounds", "/mnt/data/default"}
    wait_for(lambda: "no standby worker for image" in nodes[1].log(), 30, "node 1 refusing its standby", site)
    assert "refused by this node's policy" in nodes[1].log() and not workers(site, docker_client, 1, standby=True)

    # The first job of that image here takes it: no worker starts for the job.
    task = ask(site, site.organizations[:1], rounds=2)
    assert site.wait_status(task["runs"][0]["id"], FINAL, timeout=120)["status"] == "completed", site.agent_logs()
    assert f"a standby, now serves job {task['id']}" in node.log() and job_workers_ready(node.log()) == 0
    rounds = site.researcher.result(task["runs"][0]["id"])["rounds"]
    assert rounds[0][0]["process"] == rounds[1][0]["process"] and rounds[0][0]["rows"] == 2
    # Kept while the agent runs (round_worker_standby = 0 is about the last job's image):
    # another follows once the job's worker is gone, and the agent's stop removes it.
    wait_for(lambda: node.log().count("(standby) ready in") == 2, 60, "the next standby", site)
    wait_for(lambda: len(workers(site, docker_client, 0, standby=True)) == 1, 15, "one standby left", site)

    # The site's data changes: the next job reads the new file, in a worker started for it,
    # not in the standby that mounts the old one.
    node.data.write_text("value\n1\n2\n3\n")
    task = ask(site, site.organizations[:1], rounds=1)
    assert site.wait_status(task["runs"][0]["id"], FINAL, timeout=120)["status"] == "completed", site.agent_logs()
    assert site.researcher.result(task["runs"][0]["id"])["rounds"][0][0]["rows"] == 3
    assert "a database it mounts changed since it started" in node.log() and job_workers_ready(node.log()) == 1
    node.stop()
    assert not workers(site, docker_client, 0, standby=True)


def test_a_standby_goes_when_no_job_takes_it_and_none_starts_when_turned_off(rounds_site, docker_client):
    site = rounds_site
    nodes = [site.node(0, limits="round_worker_idle = 2\nround_worker_standby = 2"),
             site.node(1, limits="round_worker_standby = 0")]
    for node in nodes:
        node.wait_connected()
    task = ask(site, site.organizations[:2], rounds=1)
    assert site.wait_status(task["runs"][0]["id"], FINAL, timeout=120)["status"] == "completed", site.agent_logs()
    wait_for(lambda: "(standby) ready in" in nodes[0].log(), 60, "node 0's standby ready", site)
    wait_for(lambda: "no job took it in 2 s" in nodes[0].log(), 15, "node 0's standby removed unused", site)
    assert not workers(site, docker_client, 0, standby=True)
    time.sleep(3)  # node 1 has been quiet for longer than a standby waits to start
    assert not workers(site, docker_client, 1, standby=True) and "standby" not in nodes[1].log()


def test_a_worker_is_isolated_like_a_run_container_and_a_kill_removes_it(rounds_site, docker_client):
    site = rounds_site
    node = site.node(0)
    node.wait_connected()
    task = ask(site, site.organizations[:1], nap=120)
    wait_for(lambda: any(r["status"] == "running" for r in subtask_runs(site, task["id"])), 60,
             "the round running", site)
    (container,) = workers(site, docker_client, 0)
    attrs = docker_client.api.inspect_container(container["Id"])
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert attrs["Config"]["User"] == "65534:65534" and host["PidsLimit"] and host["Memory"]
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert set(mounts) == {"/mnt/rounds", "/mnt/data/default"}, mounts
    assert not any(m["RW"] for m in mounts.values()), mounts  # its socket folder too: the node listens there
    # No host path that names the node's folders: the data is the node's read-only volume,
    # the socket folder a private temporary folder (as a run container, issue 14).
    assert mounts["/mnt/data/default"]["Type"] == "volume", mounts
    assert str(node.dir) not in mounts["/mnt/rounds"]["Source"], mounts
    assert set(host["Tmpfs"]) == {"/tmp", "/mnt/tmp"}
    (sub_run,) = subtask_runs(site, task["id"])
    time.sleep(1.5)  # "running" comes with the hand-over; let the round print its first line
    asked = time.monotonic()
    site.researcher.kill(task["id"])
    detail = site.wait_status(sub_run["id"], {"killed"}, timeout=15)
    took = time.monotonic() - asked
    assert detail["error_kind"] == "killed"
    assert "kill requested; round worker killed" in detail["log"]
    assert "rounds: napping 120" in detail["log"]
    assert took < 5, f"kill took {took:.1f} s"
    wait_for(lambda: not workers(site, docker_client, 0), 5, "the killed job's worker gone", site)


def test_a_round_past_its_deadline_times_out_and_its_worker_goes(rounds_site, docker_client):
    site = rounds_site
    nodes = [site.node(0), site.node(1, limits="deadline = 3")]
    for node in nodes:
        node.wait_connected()
    task = ask(site, site.organizations[1:2], nap=60)
    run_id = task["runs"][0]["id"]
    detail = site.wait_status(run_id, FINAL, timeout=60)
    assert detail["status"] == "crashed", detail  # the central method saw its subtask fail
    (sub_run,) = subtask_runs(site, task["id"])
    sub = site.researcher.run(sub_run["id"])
    assert (sub["status"], sub["error_kind"]) == ("timed_out", "timeout")
    assert "passed its deadline of 3 s; round worker killed" in sub["log"]
    assert "rounds: napping 60" in sub["log"]
    wait_for(lambda: not workers(site, docker_client, 1), 5, "the timed-out round's worker gone", site)


def test_a_round_that_kills_its_process_crashes_with_its_exit_code_and_the_next_job_gets_a_new_worker(
        rounds_site, docker_client):
    site = rounds_site
    node = site.node(0)
    node.wait_connected()
    task = ask(site, site.organizations[:1], method="die")
    detail = site.wait_status(task["runs"][0]["id"], FINAL, timeout=60)
    assert detail["status"] == "crashed"
    (sub_run,) = subtask_runs(site, task["id"])
    sub = site.researcher.run(sub_run["id"])
    assert (sub["status"], sub["exit_code"], sub["error_kind"]) == ("crashed", 7, "algorithm")
    assert "[node] the algorithm exited with code 7" in sub["log"]
    assert "rounds: about to die" in sub["log"]  # printed before the process ended: kept, as a container's
    again = ask(site, site.organizations[:1], rounds=2)
    detail = site.wait_status(again["runs"][0]["id"], FINAL, timeout=60)
    assert detail["status"] == "completed", f"{detail['log']}\n{site.agent_logs()}"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_an_agent_restart_mid_round_leaves_no_worker_and_the_round_completes_once(rounds_site, docker_client,
                                                                                  signum):
    site = rounds_site
    # The central run at node 0, its rounds at node 1, whose agent restarts: a central
    # container polls its own node's proxy, which an agent restart interrupts (as before).
    central, node = site.node(0), site.node(1)
    for agent in (central, node):
        agent.wait_connected()
    task = ask(site, site.organizations[1:2], rounds=2, nap=4)
    wait_for(lambda: any(r["status"] == "running" for r in subtask_runs(site, task["id"])), 60,
             "the first round running", site)
    (first,) = subtask_runs(site, task["id"])
    (old,) = workers(site, docker_client, 1)
    node.signal(signum)
    if signum == signal.SIGTERM:
        # The stopping agent takes its worker along; the round stays the next agent's.
        wait_for(lambda: not workers(site, docker_client, 1), 15, "the stopping agent's worker removed", site)
    node.start()
    detail = site.wait_status(task["runs"][0]["id"], FINAL, timeout=90)
    assert detail["status"] == "completed", f"{detail['log']}\n{site.agent_logs()}"
    assert old["Id"] not in {c["Id"] for c in workers(site, docker_client, 1)}
    run = site.researcher.run(first["id"])
    # The round's start is reported at the agent's first look, which also sends what it has
    # printed: the killed attempt's line is usually in the log before the one that completed.
    assert run["status"] == "completed" and 1 <= run["log"].count("rounds: napping 4") <= 2, run["log"]
    assert f"run {first['id']}: resuming (phase started)" in node.log()
    rounds = site.researcher.result(task["runs"][0]["id"])["rounds"]
    assert rounds[0] == [site.researcher.result(first["id"])]
    assert rounds[0][0]["process"] == rounds[1][0]["process"]  # the new agent's worker served both
