"""The output gate and the airlock end to end: a real server, a real node agent with a new
node's default policy, real containers of a hostile image, and the steward's page driven
in a real browser (Debian's chromium through selenium).

The hostile image (algorithms/testimages/hostile) writes an unsuppressed small cell, an
aggregate over 3 rows, a dump of the site's data file, and patient rows into its log.
Each is held; none leaves until the steward decides on the page; what the steward
rejects never reaches the server (its database and storage are read for its bytes);
restarting the agent while results are held loses none and releases none.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from nodeagent.decision_log import DecisionLog
from nodeagent.job import AgentContext
from nodeagent.steward import hash_password
from tests.nodeagent import images
from tests.nodeagent.live import PYTHON, REPO_ROOT, free_port
from tests.portal.test_browser import browser  # noqa: F401 - the real-browser fixture
from tests.portal.test_browser import _wait

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]

PASSWORD = "steward password for the test"
PATIENTS = 40
# Strings only the site's data file holds: none may reach the server unless released.
MARKER = "PATIENT-7f3a"


def _data_rows() -> list[tuple]:
    return [(f"{MARKER}-{i:03d}", f"Jane{i:03d} Doe", 40 + i % 37, "f" if i % 3 else "m", "C50.9")
            for i in range(PATIENTS)]


@pytest.fixture(scope="module")
def hostile_image(docker_client, registry):
    return images.build_and_push(docker_client, registry, "hostile")


class StewardPage:
    def __init__(self, node):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = node.dir / "steward.log"
        log = open(self.log_path, "a")
        self.process = subprocess.Popen([PYTHON, "manage.py", "steward", "--config", str(node.config_path),
                                         "--port", str(self.port)], cwd=REPO_ROOT, env=node.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while "steward page on" not in self.log_path.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.05)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)


def _server_holds(server, needles: list[str]) -> list[str]:
    """Which needles occur anywhere in the server's database (every row of every model) or
    its result storage (every file under its media root)."""
    script = (
        "import json, os, sys\n"
        "from django.apps import apps\n"
        "from django.conf import settings\n"
        "needles = json.loads(sys.argv[1])\n"
        "found = set()\n"
        "for model in apps.get_models():\n"
        "    for row in model.objects.all().values():\n"
        "        text = repr(row)\n"
        "        found |= {n for n in needles if n in text}\n"
        "for folder, _, files in os.walk(settings.MEDIA_ROOT):\n"
        "    for name in files:\n"
        "        data = open(os.path.join(folder, name), 'rb').read()\n"
        "        found |= {n for n in needles if n.encode() in data}\n"
        "print('FOUND ' + json.dumps(sorted(found)))\n"
    )
    done = subprocess.run([PYTHON, "-c", "import django; django.setup(); exec(open(0).read())", json.dumps(needles)],
                          input=script, cwd=REPO_ROOT, env=server.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("FOUND "))
    return json.loads(line[len("FOUND "):])


def _start_node(site, *, output: str):
    entry = site.world["nodes"][0]
    data = site.workdir / "patients.csv"
    data.write_text("patient_id,name,age,sex,diagnosis\n" + "".join(",".join(map(str, r)) + "\n"
                                                                     for r in _data_rows()))
    data.chmod(0o644)
    from tests.nodeagent.live import NodeProcess

    node = NodeProcess(site.workdir, f"node-{entry['id']}", server_url=site.server.url, api_key=entry["api_key"],
                       registry=site.registry, databases={"default": data}, limits="max_concurrent_runs = 4",
                       output=output)
    node.start()
    site.nodes.append(node)
    node.wait_connected()
    return node


def _log_in(driver, page):
    driver.get(f"{page.url}/login")
    driver.find_element("id", "password").send_keys(PASSWORD)
    driver.find_element("id", "login").click()
    _wait(driver, lambda d: "Held results" in d.title, "the steward could not log in")


def _open(driver, page, run_id):
    driver.get(f"{page.url}/")
    driver.find_element("link text", f"run {run_id}").click()
    _wait(driver, lambda d: f"run {run_id}" in d.title, f"the page of run {run_id} did not open")


def test_hostile_outputs_wait_for_the_steward_and_rejected_ones_never_reach_the_server(
        site, hostile_image, browser):  # noqa: F811
    steward_table = f'[steward]\npassword_hash = "{hash_password(PASSWORD)}"'
    node = _start_node(site, output=steward_table)  # [output] empty: a new node's defaults
    page = StewardPage(node)
    try:
        runs = {}
        for method in ("small_cell", "few_rows", "dump", "log_rows", "fine"):
            task = site.task(hostile_image, method)
            runs[method] = task["runs"][0]["id"]
        fine = site.wait_status(runs["fine"], {"completed"}, timeout=120)
        held = {m: site.wait_status(r, {"awaiting_release"}, timeout=120)
                for m, r in runs.items() if m != "fine"}
        assert "min_cell" in " ".join(held["small_cell"]["hold_info"]["flags"])
        assert "min_rows" in " ".join(held["few_rows"]["hold_info"]["flags"])
        assert held["dump"]["hold_info"]["output_type"] == "opaque"
        assert "log" in " ".join(held["log_rows"]["hold_info"]["flags"])
        assert site.researcher.result(fine["id"])["counts"] == [20, PATIENTS - 20]

        # Held: the server has metadata only, not a byte of the data, the results or the log.
        assert _server_holds(site.server, [MARKER, "Jane0"]) == []

        # The agent restarts: nothing held is lost, nothing is released.
        node.stop()
        node.start()
        node.wait_connected()
        time.sleep(2)
        assert {site.researcher.run(r)["status"] for m, r in runs.items() if m != "fine"} == {"awaiting_release"}

        # The steward decides, in a real browser.
        _log_in(browser, page)
        _open(browser, page, runs["small_cell"])
        assert browser.find_element("css selector", "#output td.small").text == "2"
        assert "min_cell" in browser.find_element("id", "flags").text
        assert site.world["user"]["username"] in browser.find_element("id", "requester").text
        browser.find_element("id", "release-suppressed").click()
        _wait(browser, lambda d: d.find_elements("id", "decided"), "no decision shown")

        _open(browser, page, runs["few_rows"])
        browser.find_element("id", "release").click()
        _wait(browser, lambda d: d.find_elements("id", "decided"), "no decision shown")

        for method, reason in (("dump", "a copy of our data file"), ("log_rows", "patient rows in the log")):
            _open(browser, page, runs[method])
            if method == "dump":
                assert MARKER in browser.find_element("id", "output").text  # the steward sees what was held
            else:
                assert MARKER in browser.find_element("id", "log").text
            browser.find_element("id", "reason").send_keys(reason)
            browser.find_element("id", "reject").click()
            _wait(browser, lambda d: d.find_elements("id", "decided"), "no decision shown")

        # The agent sweeps its airlock every kill_poll_interval (0.5 s here), also while its
        # websocket is up (which made it wait for the minute's kill listing before).
        released = site.wait_status(runs["small_cell"], {"completed"}, timeout=15)
        table = site.researcher.result(released["id"])
        assert None in table["counts"] and 2 not in table["counts"]
        assert "with suppression" in released["log"]
        few = site.wait_status(runs["few_rows"], {"completed"}, timeout=15)
        assert site.researcher.result(few["id"])["n"] == 3
        for method, reason in (("dump", "a copy of our data file"), ("log_rows", "patient rows in the log")):
            rejected = site.wait_status(runs[method], {"rejected"}, timeout=15)
            assert rejected["error_kind"] == "withheld" and reason in rejected["log"]
            assert rejected["result_size"] is None

        # Nothing of the rejected results (the data file, the log's patient rows) is on the server.
        assert _server_holds(site.server, [MARKER, "Jane0"]) == []
        decisions = DecisionLog(node.task_folder / "state")
        assert decisions.verify().ok
        steward_decisions = [e for e in decisions.entries() if e["actor"] == "steward"]
        assert sorted(e["decision"] for e in steward_decisions) == [
            "rejected", "rejected", "released", "released with suppression"]
        server_key = AgentContext.key_of(site.server.url)
        assert not any((node.task_folder / "state" / "airlock").glob(f"{server_key}-run*"))
        verified = subprocess.run([PYTHON, "manage.py", "run_node", "--config", str(node.config_path), "--verify-log"],
                                  cwd=REPO_ROOT, env=node.env, capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0 and "chain and keys verify" in verified.stdout
    finally:
        page.stop()


def test_refuse_policies_end_runs_without_their_output_or_log(site, hostile_image):
    node = _start_node(site, output='opaque = "refuse"\nfailed_checks = "refuse"\nlogs = "never"')
    dump = site.task(hostile_image, "dump")["runs"][0]["id"]
    rows = site.task(hostile_image, "log_rows")["runs"][0]["id"]
    refused = site.wait_status(dump, {"failed"}, timeout=120)
    assert refused["error_kind"] == "withheld" and "refused the result" in refused["log"]
    logged = site.wait_status(rows, {"completed"}, timeout=120)
    assert "stays at this node" in logged["log"]
    assert _server_holds(site.server, [MARKER, "Jane0"]) == []
    assert node.process.poll() is None
