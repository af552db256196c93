"""The OpenAPI schema describes the real answers of runs, tasks and organisations.

These resources answer with dicts built from their shapes (core.shapes), and the same
shapes give their schema components. Here every answer each caller gets (a user, the node,
an algorithm container) is held to its operation's response schema in /api/schema/: every
key is a declared property of the declared type (null only where nullable), and every
required property is present. Answers are made to carry real values where fields may be
null (a finished, held, killed run with a result), so types are checked, not only nulls.
"""

import base64
from datetime import datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.test import APIClient

from collaborations.api import OrganizationViewSet
from tasks.api import RunViewSet, TaskViewSet
from tasks.models import Run, Task
from tasks.services import run_claim, run_start, task_kill
from tests.tasks.conftest import b64json

TYPES = {
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "array": lambda value: isinstance(value, list),
    "object": lambda value: isinstance(value, dict),
}


def violations(document: dict, schema: dict, value, where: str = "") -> list[str]:
    """How `value` breaks `schema` (an OpenAPI 3.0 schema object of `document`); [] if it conforms."""
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if value is None and schema.get("nullable"):
        return []
    if "allOf" in schema:
        return [found for part in schema["allOf"] for found in violations(document, part, value, where)]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            results = [violations(document, part, value, where) for part in schema[combinator]]
            matched = sum(not result for result in results)
            if matched == 1 or (combinator == "anyOf" and matched > 1):
                return []
            return [f"{where or '/'}: matches {matched} of its {combinator}: {results}"]
    if value is None:
        return [f"{where}: null, but not nullable"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    kind = schema.get("type")
    if kind and not TYPES[kind](value):
        return [f"{where}: {value!r} is not of type {kind}"]
    if kind == "string" and schema.get("format") == "date-time":
        datetime.fromisoformat(value)  # raises on anything else
    if kind == "string" and schema.get("format") == "byte":
        base64.b64decode(value, validate=True)
    if kind == "array":
        return [found for i, item in enumerate(value) for found in violations(document, schema["items"], item,
                                                                                 f"{where}/{i}")]
    if kind == "object" and "properties" in schema:
        found = [f"{where}/{key}: not in the schema" for key in value if key not in schema["properties"]]
        found += [f"{where}/{key}: required, missing" for key in schema.get("required", ()) if key not in value]
        for key, item in value.items():
            if key in schema["properties"]:
                found += violations(document, schema["properties"][key], item, f"{where}/{key}")
        return found
    return []


@pytest.fixture
def api_schema(db) -> dict:
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def conforms(api_schema):
    """conforms(response, "/api/runs/{id}/") -> the response's JSON, asserted to match its schema."""

    def check(response, path: str):
        method = response.request["REQUEST_METHOD"].lower()
        assert response.status_code < 300, response.content
        declared = api_schema["paths"][path][method]["responses"][str(response.status_code)]
        body = response.json()
        assert violations(api_schema, declared["content"]["application/json"]["schema"], body) == []
        return body

    return check


@pytest.fixture
def finished_run(api_for, run_b, node_b):
    """run_b held, then killed with a result: every nullable run field has a value."""
    client = api_for(node_b)
    client.post(f"/api/runs/{run_b.pk}/claim/")
    client.post(f"/api/runs/{run_b.pk}/start/", {"digest": "sha256:" + "ab" * 32})
    client.post(f"/api/runs/{run_b.pk}/hold/", {"output_type": "opaque", "size": 2, "flags": ["x"]})
    Run.objects.filter(pk=run_b.pk).update(kill_requested_at=timezone.now())
    client.post(f"/api/runs/{run_b.pk}/finish/", {"status": "killed", "exit_code": "137", "error_kind": "killed",
                                                  "result": SimpleUploadedFile("out", b"{}")}, format="multipart")
    run = Run.objects.get(pk=run_b.pk)
    assert None not in (run.node_id, run.exit_code, run.result_size, run.kill_requested_at, run.claimed_at,
                        run.started_at, run.finished_at, run.hold_info)
    return run


@pytest.fixture
def api_container(api_for, node_a, run_a) -> APIClient:
    run_claim(run_id=run_a.pk, node=node_a)
    run_start(run_id=run_a.pk, node=node_a)
    token = api_for(node_a).post(f"/api/runs/{run_a.pk}/container-token/").json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_runs_answer_a_user_as_the_schema_says(api_for, conforms, owner, run_a, finished_run):
    client = api_for(owner)
    listed = conforms(client.get("/api/runs/"), "/api/runs/")["results"]
    assert {run["id"] for run in listed} == {run_a.pk, finished_run.pk}
    for run in (run_a, finished_run):
        assert "log" in conforms(client.get(f"/api/runs/{run.pk}/"), "/api/runs/{id}/")


def test_runs_answer_their_node_as_the_schema_says(api_for, conforms, node_a, node_b, run_a, finished_run):
    assert len(conforms(api_for(node_b).get("/api/runs/"), "/api/runs/")["results"]) == 1
    conforms(api_for(node_b).get(f"/api/runs/{finished_run.pk}/"), "/api/runs/{id}/")
    client = api_for(node_a)
    assert "input" in conforms(client.get(f"/api/runs/{run_a.pk}/"), "/api/runs/{id}/")
    assert "input" in conforms(client.post(f"/api/runs/{run_a.pk}/claim/"), "/api/runs/{id}/claim/")
    conforms(client.post(f"/api/runs/{run_a.pk}/start/"), "/api/runs/{id}/start/")
    conforms(client.post(f"/api/runs/{run_a.pk}/log/", {"text": "line\n"}), "/api/runs/{id}/log/")
    conforms(client.post(f"/api/runs/{run_a.pk}/hold/", {"output_type": "opaque", "size": 1, "flags": []}),
             "/api/runs/{id}/hold/")
    finished = client.post(f"/api/runs/{run_a.pk}/finish/", {"status": "completed", "exit_code": 0,
                                                             "result": base64.b64encode(b"{}").decode()})
    assert conforms(finished, "/api/runs/{id}/finish/")["result_size"] == 2


def test_a_claim_of_a_task_without_creator_answers_as_the_schema_says(api_for, conforms, node_a, run_a):
    Task.objects.filter(pk=run_a.task_id).update(created_by=None)
    claimed = conforms(api_for(node_a).post(f"/api/runs/{run_a.pk}/claim/"), "/api/runs/{id}/claim/")
    assert claimed["created_by"] is None and claimed["created_by_username"] is None


def test_runs_answer_a_container_as_the_schema_says(api_container, conforms, run_a, run_b):
    listed = conforms(api_container.get("/api/runs/"), "/api/runs/")["results"]
    assert {run["id"] for run in listed} == {run_a.pk, run_b.pk}
    # The container gets the list shape: neither the user's (log) nor the node's (input).
    one = conforms(api_container.get(f"/api/runs/{run_b.pk}/"), "/api/runs/{id}/")
    assert "log" not in one and "input" not in one


def test_tasks_answer_a_user_as_the_schema_says(api_for, conforms, owner, collab, org_a, org_b, finished_run):
    client = api_for(owner)
    body = {"collaboration": collab.pk, "name": "t", "image": "127.0.0.1:5000/algo:1", "method": "partial",
            "organizations": [{"id": org.pk, "input": b64json({"method": "partial"})} for org in (org_b, org_a)],
            "databases": [{"label": "default"}]}
    created = conforms(client.post("/api/tasks/", body), "/api/tasks/")
    assert [run["organization"] for run in created["runs"]] == [org_b.pk, org_a.pk]
    assert len(conforms(client.get("/api/tasks/"), "/api/tasks/")["results"]) == 2
    conforms(client.get(f"/api/tasks/{finished_run.task_id}/"), "/api/tasks/{id}/")
    assert conforms(client.post(f"/api/tasks/{created['id']}/kill/"), "/api/tasks/{id}/kill/")["status"] == "killed"


def test_tasks_answer_a_container_as_the_schema_says(api_container, conforms, task, org_a, org_b):
    body = {"name": "partial", "method": "partial", "databases": [{"label": "default"}],
            "organizations": [{"id": org.pk, "input": b64json({"method": "partial"})} for org in (org_a, org_b)]}
    subtask = conforms(api_container.post("/api/tasks/", body), "/api/tasks/")
    assert subtask["parent"] == task.pk and subtask["job"] == task.pk
    conforms(api_container.get(f"/api/tasks/{subtask['id']}/"), "/api/tasks/{id}/")
    conforms(api_container.get(f"/api/tasks/{task.pk}/"), "/api/tasks/{id}/")


def test_a_killed_task_without_study_or_creator_answers_as_the_schema_says(api_for, conforms, owner, root, task):
    task_kill(actor=owner, task=task)
    Task.objects.filter(pk=task.pk).update(created_by=None)
    answer = conforms(api_for(root).get(f"/api/tasks/{task.pk}/"), "/api/tasks/{id}/")
    assert answer["created_by"] is None and answer["status"] == "killed"


def test_organizations_answer_a_user_as_the_schema_says(api_for, conforms, root, owner, org_a):
    client = api_for(root)
    created = conforms(client.post("/api/organizations/", {"name": "c", "country": "DE"}), "/api/organizations/")
    conforms(client.patch(f"/api/organizations/{created['id']}/", {"require_second_factor": True}),
             "/api/organizations/{id}/")
    conforms(client.get(f"/api/organizations/{org_a.pk}/"), "/api/organizations/{id}/")
    # The first page (a prepared query) and a filtered one (the queryset) answer alike.
    assert len(conforms(client.get("/api/organizations/"), "/api/organizations/")["results"]) == 3
    conforms(client.get("/api/organizations/?name=c"), "/api/organizations/")
    assert len(conforms(api_for(owner).get("/api/organizations/"), "/api/organizations/")["results"]) == 2


def test_organizations_answer_a_container_as_the_schema_says(api_container, conforms, collab, org_a):
    listed = conforms(api_container.get(f"/api/organizations/?collaboration={collab.pk}"), "/api/organizations/")
    assert len(listed["results"]) == 2
    conforms(api_container.get(f"/api/organizations/{org_a.pk}/"), "/api/organizations/{id}/")


def test_a_response_that_breaks_its_schema_is_caught(api_schema):
    """The checker itself: an undeclared key, a missing required one, a wrong type, a bad null."""
    run = {"$ref": "#/components/schemas/Run"}
    assert violations(api_schema, run, {"id": 1}) != []
    organization = {"$ref": "#/components/schemas/Organization"}
    good = {"id": 1, "name": "a", "country": "", "domain": "", "public_key": "", "require_second_factor": False,
            "created_at": "2026-12-07T10:00:00Z"}
    assert violations(api_schema, organization, good) == []
    assert violations(api_schema, organization, {**good, "extra": 1}) == ["/extra: not in the schema"]
    assert violations(api_schema, organization, {**good, "id": "1"}) == ["/id: '1' is not of type integer"]
    assert violations(api_schema, organization, {**good, "name": None}) == ["/name: null, but not nullable"]
    # A run for a container matches only the list shape among RunForCaller's alternatives.
    for_caller = {"$ref": "#/components/schemas/RunForCaller"}
    assert api_schema["components"]["schemas"]["RunForCaller"].keys() == {"anyOf"}
    assert violations(api_schema, for_caller, {"id": 1}) != []


@pytest.mark.parametrize("path", ["/api/tasks/", "/api/organizations/", "/api/runs/"])
def test_the_browsable_api_still_draws_the_resources_answered_as_shapes(api_for, owner, monkeypatch, path):
    """With DEBUG the browsable API is on; it draws its form from the view's serializer_class."""
    for view in (TaskViewSet, OrganizationViewSet, RunViewSet):
        monkeypatch.setattr(view, "renderer_classes", [JSONRenderer, BrowsableAPIRenderer])
    response = api_for(owner).get(path, HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
