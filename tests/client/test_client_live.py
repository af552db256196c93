"""The researcher's client (client/vantage_client) against a real server process.

Nodes are played over the REST API (FakeNode) so these tests need no Docker; the
encrypted task through real node agents and containers is
tests/nodeagent/test_encryption_live.py.
"""

import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.client.conftest import CLIENT_DIR

from vantage_client import Client, VantageError, crypto  # noqa: E402  (CLIENT_DIR is on the path)
from vantage_client import client as client_module  # noqa: E402

pytestmark = pytest.mark.slow
IMAGE = "127.0.0.1:5000/vantage/test-e2e-sum:1"


def _client(server, seed, username=None, **kwargs) -> Client:
    client = Client(server.url, **kwargs)
    client.session.trust_env = False  # loopback only: never through a proxy from the environment
    client.login(username or seed["researcher"], seed["password"])
    return client


@pytest.fixture
def researcher(api_server, client_seed):
    client = _client(api_server, client_seed)
    yield client
    client.session.close()


@pytest.fixture(scope="session")
def sealed_keys(api_server, client_seed, tmp_path_factory):
    """Both hospitals' key pairs, made and published through the client's own helper."""
    folder = tmp_path_factory.mktemp("keys")
    paths = {}
    for org, username in ((client_seed["org_1"], client_seed["researcher"]), (client_seed["org_2"], client_seed["admin_2"])):
        admin = _client(api_server, client_seed, username=username)
        paths[org] = folder / f"org-{org}.pem"
        admin.setup_encryption(paths[org], bits=2048)
        admin.session.close()
    return {org: crypto.read_private_key(path) for org, path in paths.items()} | {"paths": paths}


def _finish_all(nodes: dict, task: dict, compute, delay: float = 0.0) -> threading.Thread:
    """Claim, run and finish every run of the task as its node would, in a thread."""
    def body():
        time.sleep(delay)
        for run in task["runs"]:
            node = nodes[run["organization"]]
            claimed = node.claim(run["id"])
            node.finish(run["id"], compute(run["organization"], base64.b64decode(claimed["input"])))

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def _plain_sum(org: int, raw_input: bytes) -> bytes:
    request = json.loads(raw_input)
    return json.dumps({"org": org, "method": request["method"], "sum": sum(request["args"]) + request["kwargs"]["extra"]}).encode()


# ---------------------------------------------------------------- reading


def test_login_lists_collaborations_and_organisations(researcher, client_seed):
    me = researcher.whoami()
    assert me["username"] == client_seed["researcher"] and me["organization"] == client_seed["org_1"]
    collaborations = {c["id"]: c for c in researcher.collaborations.list()}
    assert collaborations[client_seed["sealed"]]["encrypted"] is True
    assert collaborations[client_seed["plain"]]["encrypted"] is False
    organizations = {o["id"] for o in researcher.organizations.list()}
    assert {client_seed["org_1"], client_seed["org_2"]} <= organizations


def test_lists_follow_every_page(researcher, client_seed, monkeypatch):
    everything = researcher.organizations.list()
    monkeypatch.setattr(client_module, "PAGE_SIZE", 1)
    one_per_page = researcher.organizations.list()
    assert len(everything) >= 2
    assert [o["id"] for o in one_per_page] == [o["id"] for o in everything]


def test_wrong_password_is_one_readable_error(api_server, client_seed):
    client = Client(api_server.url)
    client.session.trust_env = False
    with pytest.raises(VantageError) as caught:
        client.login(client_seed["researcher"], "wrong")
    assert caught.value.status == 401
    assert str(caught.value) == "HTTP 401: Wrong username or password, or the account is disabled."


def _fresh_client(server) -> Client:
    client = Client(server.url)
    client.session.trust_env = False
    return client


def test_login_with_a_second_factor_takes_the_code(api_server, client_seed):
    import pyotp

    client = _fresh_client(api_server)
    with pytest.raises(VantageError) as caught:
        client.login(client_seed["guarded"], client_seed["password"])
    assert (caught.value.status, caught.value.code) == (401, "otp_required")
    with pytest.raises(VantageError) as caught:
        client.login(client_seed["guarded"], client_seed["password"], otp="12345x")
    assert (caught.value.status, caught.value.code) == (401, "otp_invalid")
    me = client.login(client_seed["guarded"], client_seed["password"], otp=pyotp.TOTP(client_seed["guarded_secret"]).now())
    assert me["username"] == client_seed["guarded"]


def test_logout_ends_this_login_and_everywhere_ends_all(api_server, client_seed):
    first, second, third = (_client(api_server, client_seed) for _ in range(3))
    first.logout()
    with pytest.raises(VantageError, match="not logged in"):
        first.collaborations.list()
    assert second.collaborations.list()
    second.logout(everywhere=True)
    with pytest.raises(VantageError) as caught:
        third.collaborations.list()  # its access token and its refresh token both ended
    assert caught.value.status == 401


def test_an_expired_access_token_is_refreshed_without_the_caller_noticing(researcher, client_seed):
    researcher._access = "not.a-valid.token"  # what a token past its lifetime looks like to the server
    assert researcher.collaborations.get(client_seed["plain"])["id"] == client_seed["plain"]
    assert researcher._access != "not.a-valid.token"


def test_without_login_the_client_says_so(api_server):
    with pytest.raises(VantageError, match="not logged in"):
        Client(api_server.url).collaborations.list()


# ---------------------------------------------------------------- tasks


def test_server_field_messages_reach_the_caller(researcher, client_seed):
    with pytest.raises(VantageError) as caught:
        researcher.tasks.create(collaboration=client_seed["plain"], image=IMAGE, method="sum",
                                organizations=[client_seed["org_1"]], databases=["Not A Label"])
    assert caught.value.status == 400
    assert "databases" in caught.value.fields
    assert str(caught.value).startswith("HTTP 400: databases: Entry 0: label 'Not A Label'")


def test_task_round_trip_followed_live(researcher, client_seed, fake_nodes):
    nodes = fake_nodes("plain")
    task = researcher.tasks.create(
        collaboration=client_seed["plain"], image=IMAGE, method="sum", args=[1, 2],
        organizations={client_seed["org_1"]: {"kwargs": {"extra": 10}}, client_seed["org_2"]: {"kwargs": {"extra": 20}}},
        databases=["default"], name="client live", description="from the client")
    assert (task["name"], task["description"], task["databases"]) == ("client live", "from the client",
                                                                       [{"label": "default"}])
    events = []
    worker = _finish_all(nodes, task, _plain_sum, delay=0.5)
    done = researcher.tasks.wait(task["id"], timeout=60, progress=events.append, live=True)
    worker.join()
    assert done["status"] == "completed"
    assert [e["task"]["status"] for e in events if e["type"] == "task.completed"] == ["completed"]
    assert {e["run"]["status"] for e in events if e["type"] == "run.updated"} >= {"claimed", "completed"}
    results = sorted(researcher.results(task["id"]), key=lambda r: r["org"])
    assert results == [{"org": client_seed["org_1"], "method": "sum", "sum": 13},
                       {"org": client_seed["org_2"], "method": "sum", "sum": 23}]
    runs = researcher.runs(task["id"])
    assert all(run["result"]["method"] == "sum" for run in runs)


def test_small_results_come_with_the_run_list_and_a_large_one_is_downloaded(researcher, client_seed, fake_nodes,
                                                                            monkeypatch):
    nodes = fake_nodes("plain")
    small, large = client_seed["org_1"], client_seed["org_2"]
    task = researcher.tasks.create(collaboration=client_seed["plain"], image=IMAGE, method="sum", args=[2],
                                   kwargs={"extra": 0}, organizations=[small, large])
    # Above the server's VANTAGE_RESULT_IN_DATABASE_BYTES (64 KiB): kept as a file, not in the row.
    padding = "x" * 100_000

    def compute(org, raw_input):
        answer = json.loads(_plain_sum(org, raw_input))
        return json.dumps({**answer, "padding": padding} if org == large else answer).encode()

    _finish_all(nodes, task, compute).join()
    downloaded, download = [], researcher.download_result
    monkeypatch.setattr(researcher, "download_result", lambda run_id: downloaded.append(run_id) or download(run_id))
    runs = {run["organization"]: run for run in researcher.runs(task["id"])}
    assert runs[small]["result"] == {"org": small, "method": "sum", "sum": 2}
    assert runs[large]["result"] == {"org": large, "method": "sum", "sum": 2, "padding": padding}
    assert downloaded == [runs[large]["id"]]


def test_polling_wait_reports_progress_and_the_end(researcher, client_seed, fake_nodes):
    nodes = fake_nodes("plain")
    task = researcher.tasks.create(collaboration=client_seed["plain"], image=IMAGE, method="sum", args=[5],
                                   kwargs={"extra": 0}, organizations=[client_seed["org_1"], client_seed["org_2"]])
    events = []
    worker = _finish_all(nodes, task, _plain_sum, delay=0.3)
    done = researcher.tasks.wait(task["id"], timeout=60, progress=events.append, live=False, poll_interval=0.1)
    worker.join()
    assert done["status"] == "completed"
    assert events[-1] == {"type": "task.completed", "task": {"id": task["id"], "status": "completed"}}
    assert [r["sum"] for r in researcher.results(task)] == [5, 5]


def test_a_task_that_ended_before_waiting_is_seen_at_once(researcher, client_seed, fake_nodes):
    nodes = fake_nodes("plain")
    task = researcher.tasks.create(collaboration=client_seed["plain"], image=IMAGE, method="sum", args=[],
                                   kwargs={"extra": 1}, organizations=[client_seed["org_2"]])
    _finish_all(nodes, task, _plain_sum).join()
    started = time.monotonic()
    assert researcher.tasks.wait(task["id"], timeout=30, live=True)["status"] == "completed"
    assert time.monotonic() - started < 5


def test_wait_gives_up_after_its_timeout(researcher, client_seed):
    task = researcher.tasks.create(collaboration=client_seed["plain"], image=IMAGE, method="sum",
                                   organizations=[client_seed["org_1"]])
    for live in (True, False):
        started = time.monotonic()
        with pytest.raises(VantageError, match=f"task {task['id']} did not finish in time"):
            researcher.tasks.wait(task["id"], timeout=1.0, live=live, poll_interval=0.2)
        assert time.monotonic() - started < 5
    researcher.tasks.kill(task["id"])


def test_kill_ends_a_pending_task(researcher, client_seed):
    task = researcher.tasks.create(collaboration=client_seed["plain"], image=IMAGE, method="sum",
                                   organizations=[client_seed["org_1"], client_seed["org_2"]])
    assert researcher.tasks.kill(task["id"])["status"] == "killed"
    assert researcher.tasks.wait(task["id"], timeout=10)["status"] == "killed"
    assert researcher.results(task["id"]) == []


# ---------------------------------------------------------------- encryption


def test_encrypted_task_server_holds_only_ciphertext_and_researcher_reads_the_answer(
        api_server, live_db, client_seed, sealed_keys, fake_nodes):
    researcher = _client(api_server, client_seed, private_key=sealed_keys["paths"][client_seed["org_1"]])
    nodes = fake_nodes("sealed")
    org_1_public = researcher.organizations.get(client_seed["org_1"])["public_key"]

    def sealed_node(org: int, raw_input: bytes) -> bytes:
        # What a node does: open its input with its own key, seal its output for the task's organisation.
        answer = _plain_sum(org, crypto.decrypt(raw_input, sealed_keys[org]))
        return crypto.encrypt(answer, org_1_public)

    task = researcher.tasks.create(collaboration=client_seed["sealed"], image=IMAGE, method="sum", args=[40],
                                   kwargs={"extra": 2}, organizations=[client_seed["org_1"], client_seed["org_2"]])
    _finish_all(nodes, task, sealed_node).join()
    assert researcher.tasks.wait(task["id"], timeout=30)["status"] == "completed"
    assert sorted(r["org"] for r in researcher.results(task["id"])) == [client_seed["org_1"], client_seed["org_2"]]
    assert {r["sum"] for r in researcher.results(task["id"])} == {42}

    stored_inputs = live_db.query("SELECT input FROM tasks_run WHERE task_id = %s", task["id"])
    stored_results = live_db.query("SELECT result, result_data FROM tasks_run WHERE task_id = %s", task["id"])
    assert len(stored_inputs) == 2
    for (stored,) in stored_inputs:
        assert crypto.is_envelope(bytes(stored)) and b"sum" not in bytes(stored)
    media = Path(live_db.env["VANTAGE_MEDIA_ROOT"])
    for name, in_row in stored_results:  # small results are kept in the row, larger ones as files
        data = bytes(in_row) if in_row is not None else (media / name).read_bytes()
        assert crypto.is_envelope(data) and b"sum" not in data


def test_encrypted_results_need_the_private_key(api_server, client_seed, sealed_keys, fake_nodes):
    researcher = _client(api_server, client_seed, private_key=sealed_keys["paths"][client_seed["org_1"]])
    task = researcher.tasks.create(collaboration=client_seed["sealed"], image=IMAGE, method="sum", args=[],
                                   kwargs={"extra": 0}, organizations=[client_seed["org_2"]])
    org_1_public = researcher.organizations.get(client_seed["org_1"])["public_key"]
    _finish_all(fake_nodes("sealed"), task,
                lambda org, raw: crypto.encrypt(_plain_sum(org, crypto.decrypt(raw, sealed_keys[org])),
                                                org_1_public)).join()
    keyless = _client(api_server, client_seed)
    with pytest.raises(VantageError, match="is encrypted: give the organisation's private key"):
        keyless.results(task["id"])
    keyless.use_private_key(sealed_keys["paths"][client_seed["org_2"]])
    with pytest.raises(VantageError, match="does not decrypt: sealed for another key"):
        keyless.results(task["id"])


def test_an_encrypted_task_for_an_organisation_without_a_key_is_refused_by_the_client(
        api_server, client_seed, sealed_keys, live_db):
    live_db.manage("shell", "-c", "from tests import factories\n"
                   "from collaborations.models import Collaboration\n"
                   "org = factories.make_organization('Client keyless hospital')\n"
                   "Collaboration.objects.get(name='Client sealed study').organizations.add(org)\n")
    researcher = _client(api_server, client_seed)
    keyless = next(o for o in researcher.organizations.list() if o["name"] == "Client keyless hospital")
    with pytest.raises(VantageError, match=f"organisation {keyless['id']} .* has no public key"):
        researcher.tasks.create(collaboration=client_seed["sealed"], image=IMAGE, method="sum",
                                organizations=[keyless["id"]])


# ---------------------------------------------------------------- command line


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "vantage_client", *args], capture_output=True, text=True,
                          cwd=CLIENT_DIR, env={**os.environ, **(env or {})}, timeout=120)


def test_cli_keygen_writes_an_owner_only_key_and_never_overwrites_it(tmp_path):
    path = tmp_path / "org.pem"
    done = _cli("keygen", str(path), "--bits", "2048")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.public_key_pem(crypto.read_private_key(path)) == done.stdout
    again = _cli("keygen", str(path))
    assert again.returncode == 1
    assert again.stderr == f"vantage-client: {path} exists already: a key is never overwritten\n"


def test_cli_publish_key_reports_a_bad_key_file_in_one_line(api_server, client_seed, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("no key here")
    done = _cli("publish-key", str(bad), "--url", api_server.url, "--username", client_seed["researcher"],
                env={"VANTAGE_PASSWORD": client_seed["password"], "NO_PROXY": "127.0.0.1"})
    assert done.returncode == 1
    assert done.stderr == f"vantage-client: {bad}: not a PEM private key, or the password is wrong\n"


def test_an_unusable_private_key_is_a_client_error(api_server, tmp_path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(VantageError, match=f"the private key cannot be used: cannot read the private key {missing}"):
        Client(api_server.url, private_key=missing)
    with pytest.raises(VantageError, match="the private key cannot be used: not a PEM private key"):
        Client(api_server.url, private_key=b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


def test_cli_public_key_prints_the_key_and_its_fingerprint(tmp_path):
    path = tmp_path / "org.pem"
    key = crypto.generate_private_key(2048)
    crypto.write_private_key(path, key)
    done = _cli("public-key", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == crypto.public_key_pem(key)
    assert done.stderr == f"fingerprint {crypto.fingerprint(key).hex()}\n"


@pytest.mark.parametrize("username, message", [
    ("client-nobody", "vantage-client: client-nobody belongs to no organisation: give --organization ID, or ask "
                      "an administrator to add the account to its organisation\n"),
    ("client-noroles", "vantage-client: client-noroles may not read its own account (HTTP 403: Your roles do not "
                       "allow this.), so its organisation is "
                       "unknown: give --organization ID (publishing a key needs the organization-admin role)\n"),
    ("client-plain2", "vantage-client: client-plain2 may not change organisation {org}'s public key: an "
                      "organisation admin (role organization-admin) of it must publish the key\n"),
])
def test_cli_publish_key_tells_a_user_who_may_not_publish_what_to_do(api_server, client_seed, tmp_path, username,
                                                                     message):
    path = tmp_path / "org.pem"
    crypto.write_private_key(path, crypto.generate_private_key(2048))
    done = _cli("publish-key", str(path), "--url", api_server.url, "--username", username,
                env={"VANTAGE_PASSWORD": client_seed["password"], "NO_PROXY": "127.0.0.1"})
    assert done.returncode == 1
    assert done.stderr == message.format(org=client_seed["org_2"])


def test_held_lists_the_runs_awaiting_their_stewards_release_with_why(researcher, client_seed, fake_nodes):
    nodes = fake_nodes("plain")
    org = client_seed["org_1"]
    task = researcher.tasks.create(collaboration=client_seed["plain"], image=IMAGE, method="sum",
                                   organizations=[org])
    run_id = task["runs"][0]["id"]
    nodes[org].claim(run_id)
    assert researcher.held(task) == []
    response = nodes[org].session.post(f"{nodes[org].url}/api/runs/{run_id}/hold/", timeout=30, json={
        "output_type": "opaque", "size": 1234, "flags": ["an opaque (untyped) output"]})
    assert response.status_code == 200, response.text
    [held] = researcher.held(task["id"])
    assert (held["id"], held["status"]) == (run_id, "awaiting_release")
    assert held["hold_info"]["flags"] == ["an opaque (untyped) output"] and held["hold_info"]["size"] == 1234
    with pytest.raises(VantageError, match="did not finish in time"):
        researcher.tasks.wait(task["id"], timeout=0.5, live=False, poll_interval=0.1)
    researcher.tasks.kill(task["id"])
    assert researcher.held(task) == []
