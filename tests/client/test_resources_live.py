"""The Python client's resources and result objects against a real server (nodes played
over the REST API by FakeNode, as in test_client_live.py)."""

import json

import pytest

from tests.client.test_client_live import _client
from tests.client.test_console_live import COX_RESULT

from vantage_client import VantageError  # noqa: E402  (CLIENT_DIR is on the path)

pytestmark = pytest.mark.slow


@pytest.fixture
def researcher(api_server, client_seed):
    client = _client(api_server, client_seed)
    yield client
    client.session.close()


def test_catalogue_nodes_studies_and_paths_with_or_without_the_api_prefix(researcher, client_seed):
    [algorithm] = researcher.algorithms.list()
    assert algorithm["name"] == "client-cox"
    assert researcher.list("/api/algorithms/") == researcher.list("algorithms/") == [algorithm]
    assert researcher.get("/api/algorithms/%d/" % algorithm["id"])["id"] == algorithm["id"]
    nodes = researcher.nodes.list(collaboration=client_seed["plain"])
    assert len(nodes) == 2
    assert researcher.studies.list() == []


def test_results_are_objects_with_organisation_log_table_and_html(researcher, client_seed, fake_nodes):
    nodes = fake_nodes("plain")
    org = client_seed["org_1"]
    task = researcher.tasks.create(collaboration=client_seed["plain"], algorithm=client_seed["algorithm"],
                                   method="cox", organizations=[org],
                                   kwargs={"duration": "time", "event": "cens", "covariates": ["age", "tsize"]})
    [run] = task["runs"]
    nodes[org].claim(run["id"])
    logged = nodes[org].session.post(f"{nodes[org].url}/api/runs/{run['id']}/log/",
                                     json={"text": "fitted in 5 rounds\n"}, timeout=30)
    assert logged.status_code == 200, logged.text
    nodes[org].finish(run["id"], json.dumps(COX_RESULT).encode())
    researcher.tasks.wait(task["id"], timeout=60, live=False)
    [result] = researcher.task_results(task["id"])
    assert (result.run, result.organization, result.organization_name, result.status, result.kind) == (
        run["id"], org, "Client Hospital 1", "completed", "model")
    assert result.value == COX_RESULT
    assert result.log == researcher.runs.log(run["id"]) == "fitted in 5 rounds\n"
    frame = result.to_frame()
    assert list(frame["covariate"]) == ["age", "tsize"] and list(frame["hazard_ratio"]) == [0.99, 1.0141]
    assert "<caption>" in result._repr_html_() and "tsize" in result._repr_html_()
    assert researcher.results(task["id"]) == [COX_RESULT]  # the earlier API still answers
    assert [r["id"] for r in researcher.runs(task["id"])] == [run["id"]]


def test_the_catalogue_schema_is_checked_before_a_task_is_sent(researcher, client_seed):
    before = len(researcher.tasks.list())
    with pytest.raises(VantageError, match="missing required argument: covariates"):
        researcher.tasks.create(collaboration=client_seed["plain"], algorithm=client_seed["algorithm"],
                                method="cox", organizations=[client_seed["org_1"]],
                                kwargs={"duration": "time", "event": "cens"})
    with pytest.raises(VantageError, match="argument alpha: expected number"):
        researcher.tasks.create(collaboration=client_seed["plain"], algorithm=client_seed["algorithm"],
                                method="cox", organizations=[client_seed["org_1"]],
                                kwargs={"duration": "time", "event": "cens", "covariates": ["age"], "alpha": "x"})
    assert len(researcher.tasks.list()) == before


def test_wait_can_show_a_progress_bar_of_finished_runs(researcher, client_seed, fake_nodes):
    import io
    import threading

    nodes = fake_nodes("plain")
    task = researcher.tasks.create(collaboration=client_seed["plain"], image="127.0.0.1:5000/vantage/test:1",
                                   method="sum", organizations=[client_seed["org_1"], client_seed["org_2"]])

    def finish():
        for run in task["runs"]:
            nodes[run["organization"]].claim(run["id"])
            nodes[run["organization"]].finish(run["id"], b'{"sum": 1}')

    worker = threading.Thread(target=finish)
    worker.start()
    shown, events = io.StringIO(), []
    done = researcher.tasks.wait(task["id"], timeout=60, live=False, poll_interval=0.2, progress=events.append,
                                 bar={"file": shown, "mininterval": 0})
    worker.join()
    assert done["status"] == "completed"
    text = shown.getvalue()
    assert "2/2" in text and "Client Hospital 1: completed" in text and "Client Hospital 2: completed" in text
    assert any(e["type"] == "run.updated" for e in events)  # the caller's own progress still hears every event
