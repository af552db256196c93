"""The node proxy in an encrypted collaboration: subtask inputs sealed per organisation,
subtask results opened for the algorithm. Same fake API as test_proxy.py; the run
through real containers is test_encryption_live.py."""

import base64
import json

import pytest

from nodeagent.crypto import RunSealing
from nodeagent.proxy import RunProxy
from tests.nodeagent.test_proxy import TOKEN, api, ask, encoded  # noqa: F401  (the fake API fixture)
from vantage_client import crypto

OURS = crypto.generate_private_key(2048)  # this node's organisation (1)
THEIRS = crypto.generate_private_key(2048)  # organisation 2


@pytest.fixture
def sealed_proxy(api, tmp_path):  # noqa: F811
    made = RunProxy(socket_dir=tmp_path, run_id=7, server_url=f"http://127.0.0.1:{api.port}", token=TOKEN,
                    sealing=RunSealing(OURS))
    yield made
    made.close()


def _publish(api, org_id: int, key) -> None:  # noqa: F811
    api.answers[("GET", f"/api/organizations/{org_id}/")] = (
        200, {"id": org_id, "public_key": crypto.public_key_pem(key) if key else ""})


def test_each_subtask_input_is_sealed_for_its_organisation_and_keys_are_read_once(sealed_proxy, api):  # noqa: F811
    _publish(api, 1, OURS)
    _publish(api, 2, THEIRS)
    api.answers[("POST", "/api/tasks/")] = (201, {"id": 12, "status": "pending"})
    organizations = [{"id": 1, "input": encoded("partial")}, {"id": 2, "input": encoded("partial")}]
    for _ in range(2):
        status, _answer = ask(sealed_proxy, "POST", "/task", {"name": "sub", "organizations": organizations})
        assert status == 201
    posts = [body for method, path, _, body in api.calls if method == "POST"]
    assert len(posts) == 2
    sent = {entry["id"]: base64.b64decode(entry["input"]) for entry in posts[0]["organizations"]}
    assert posts[0]["method"] == "partial"
    assert crypto.decrypt(sent[1], OURS) == base64.b64decode(encoded("partial"))
    assert crypto.decrypt(sent[2], THEIRS) == base64.b64decode(encoded("partial"))
    key_reads = [path for method, path, _, _ in api.calls if path.startswith("/api/organizations/")]
    assert sorted(key_reads) == ["/api/organizations/1/", "/api/organizations/2/"]


def test_a_subtask_for_an_organisation_without_a_key_is_refused_before_the_server(sealed_proxy, api):  # noqa: F811
    _publish(api, 2, None)
    status, answer = ask(sealed_proxy, "POST", "/task", {"organizations": [{"id": 2, "input": encoded("partial")}]})
    assert (status, answer["msg"]) == (400, "organisation 2 has no public key: the collaboration is encrypted")
    assert not [call for call in api.calls if call[0] == "POST"]


def test_subtask_results_reach_the_algorithm_opened(sealed_proxy, api):  # noqa: F811
    api.answers[("GET", "/api/runs/?task=12&page=1&with_result=true")] = (200, {"next": None, "results": [
        {"id": 40, "status": "completed", "organization": 2}]})
    api.answers[("GET", "/api/runs/40/result/")] = (200, crypto.encrypt(b'{"rows": 3}', OURS.public_key()))
    status, answer = ask(sealed_proxy, "GET", "/result?task_id=12")
    assert status == 200
    assert json.loads(base64.b64decode(answer["data"][0]["result"])) == {"rows": 3}


def test_a_sealed_result_inline_in_the_run_list_reaches_the_algorithm_opened(sealed_proxy, api):  # noqa: F811
    sealed = crypto.encrypt(b'{"rows": 4}', OURS.public_key())
    api.answers[("GET", "/api/runs/?task=12&page=1&with_result=true")] = (200, {"next": None, "results": [
        {"id": 40, "status": "completed", "organization": 2, "result": base64.b64encode(sealed).decode()}]})
    status, answer = ask(sealed_proxy, "GET", "/result?task_id=12")
    assert status == 200
    assert json.loads(base64.b64decode(answer["data"][0]["result"])) == {"rows": 4}
    assert not [call for call in api.calls if call[1].endswith("/result/")]


def test_a_result_that_does_not_open_is_an_error_for_the_algorithm(sealed_proxy, api):  # noqa: F811
    api.answers[("GET", "/api/runs/?task=12&page=1&with_result=true")] = (200, {"next": None, "results": [
        {"id": 40, "status": "completed", "organization": 2}]})
    api.answers[("GET", "/api/runs/40/result/")] = (200, crypto.encrypt(b'{"rows": 3}', THEIRS.public_key()))
    status, answer = ask(sealed_proxy, "GET", "/result?task_id=12")
    assert status == 502
    assert answer["msg"].startswith("a subtask result does not decrypt with this node's private key: "
                                    "sealed for another key")
