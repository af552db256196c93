"""Container tokens: issued to the node holding a run, used by its algorithm container.

`container` is the container of run_a (org_a's run of the owner's task), running on
node_a; `api_container` carries its token. A body naming another collaboration or image
is refused (400), not silently replaced: a container asking for that is misbehaving.
"""

import base64
import json
import time
from datetime import timedelta

import jwt
import pytest
from asgiref.sync import async_to_sync
from django.core.files.base import ContentFile
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from accounts.models import Action, AuditEvent, Resource
from accounts.permissions import user_scope
from collaborations.services import node_rotate_key
from core.authentication import websocket_principal
from core.errors import Conflict
from tasks.authentication import ContainerTokenAuthentication
from tasks.models import Run, Task
from tasks.services import run_claim, run_finish, run_start, subtask_create, task_kill
from tests import factories
from tests.tasks.conftest import b64json

DIGEST = "sha256:" + "ab" * 32


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _token_response(api_for, node, run):
    return api_for(node).post(f"/api/runs/{run.pk}/container-token/")


@pytest.fixture
def running_a(run_a, node_a):
    run_claim(run_id=run_a.pk, node=node_a)
    return run_start(run_id=run_a.pk, node=node_a)


@pytest.fixture
def container_token(api_for, node_a, running_a) -> str:
    response = _token_response(api_for, node_a, running_a)
    assert response.status_code == 200, response.data
    return response.data["token"]


@pytest.fixture
def api_container(container_token) -> APIClient:
    return _client(container_token)


@pytest.fixture
def container(container_token):
    authentication = ContainerTokenAuthentication()
    return authentication.principal(authentication.token(container_token.encode()))


def _subtask_body(*orgs, **extra) -> dict:
    return {"name": "partial", "method": "partial_stats",
            "organizations": [{"id": org.pk, "input": b64json({"method": "partial_stats"})} for org in orgs],
            "databases": [{"label": "default"}], **extra}


def _finish(run, node, **kwargs):
    return run_finish(run_id=run.pk, node=node, status=Run.Status.COMPLETED, exit_code=0, **kwargs)


# --- issuing ---------------------------------------------------------------------------


def test_holding_node_gets_a_token_that_expires_at_the_run_deadline(api_for, node_a, running_a):
    response = _token_response(api_for, node_a, running_a)
    assert response.status_code == 200
    remaining = (running_a.deadline_at - timezone.now()).total_seconds()
    assert remaining - 5 <= response.data["expires_in"] <= remaining
    assert set(response.data) == {"token", "expires_in"}


def test_token_carries_vantage6s_container_identity_in_sub(container_token, running_a, node_a, task):
    # As vantage6's AlgorithmClient reads it: without the key, `sub` as an object.
    claims = jwt.decode(container_token, options={"verify_signature": False})
    assert claims["sub"] == {
        "client_type": "container", "task_id": task.pk, "organization_id": running_a.organization_id,
        "collaboration_id": task.collaboration_id, "node_id": node_a.pk, "study_id": task.study_id,
        "store_id": None, "image": task.image, "databases": task.databases,
    }


def test_token_with_an_altered_identity_is_refused(container_token, task):
    header, payload, signature = container_token.split(".")
    claims = jwt.decode(container_token, options={"verify_signature": False})
    claims["sub"]["task_id"] = claims["task_id"] = task.pk + 1
    # The payload changed under the server's signature of the original one.
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert _client(f"{header}.{forged}.{signature}").get(f"/api/tasks/{task.pk}/").status_code == 401


def test_claimed_run_gets_a_token_too(api_for, node_a, run_a):
    run_claim(run_id=run_a.pk, node=node_a)
    assert _token_response(api_for, node_a, run_a).status_code == 200


def test_pending_run_gets_no_token(api_for, node_a, run_a):
    assert _token_response(api_for, node_a, run_a).status_code == 409


def test_another_node_of_the_same_organisation_gets_409(api_for, org_a, collab, running_a):
    twin, _key = factories.make_node(org_a, collab, name="node-a2")
    assert _token_response(api_for, twin, running_a).status_code == 409


def test_node_of_another_organisation_gets_404(api_for, node_b, running_a):
    assert _token_response(api_for, node_b, running_a).status_code == 404


def test_final_run_gets_no_token(api_for, node_a, running_a):
    _finish(running_a, node_a)
    assert _token_response(api_for, node_a, running_a).status_code == 409


def test_past_deadline_gets_no_token(api_for, node_a, running_a):
    Run.objects.filter(pk=running_a.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert _token_response(api_for, node_a, running_a).status_code == 409


def test_user_cannot_ask_for_a_container_token(api_for, owner, running_a):
    assert api_for(owner).post(f"/api/runs/{running_a.pk}/container-token/").status_code == 403


def test_unauthenticated_caller_cannot_ask_for_a_container_token(anon, running_a):
    assert anon.post(f"/api/runs/{running_a.pk}/container-token/").status_code == 401


# --- subtasks ----------------------------------------------------------------------------


def test_container_creates_a_subtask_with_the_fields_of_its_own_task(
    api_container, task, running_a, owner, collab, org_a, org_b
):
    response = api_container.post("/api/tasks/", _subtask_body(org_a, org_b), format="json")
    assert response.status_code == 201, response.data
    subtask = Task.objects.get(pk=response.data["id"])
    assert (subtask.collaboration_id, subtask.image, subtask.digest) == (collab.pk, task.image, task.digest)
    assert (subtask.parent_id, subtask.job_id, subtask.created_by_run_id) == (task.pk, task.pk, running_a.pk)
    assert (subtask.created_by_id, subtask.init_organization_id) == (owner.pk, org_a.pk)
    assert subtask.databases == [{"label": "default"}]
    assert sorted(subtask.runs.values_list("organization_id", "status")) == [
        (org_a.pk, Run.Status.PENDING), (org_b.pk, Run.Status.PENDING)]
    assert response.data["status"] == Task.Status.PENDING


def test_subtask_of_a_pinned_image_keeps_the_digest(api_for, owner, collab, org_a, node_a):
    pinned = factories.make_task(owner, collab, [org_a], image=f"127.0.0.1:5000/algo:1@{DIGEST}")
    run = pinned.runs.get()
    run_claim(run_id=run.pk, node=node_a)
    client = _client(_token_response(api_for, node_a, run).data["token"])
    body = _subtask_body(org_a, image=f"127.0.0.1:5000/algo:1@{DIGEST}", collaboration=collab.pk)
    response = client.post("/api/tasks/", body, format="json")
    assert response.status_code == 201, response.data
    assert (response.data["image"], response.data["digest"]) == (pinned.image, DIGEST)


def test_body_repeating_the_containers_collaboration_and_image_is_accepted(api_container, task, collab, org_b):
    body = _subtask_body(org_b, collaboration=collab.pk, image=task.image)
    assert api_container.post("/api/tasks/", body, format="json").status_code == 201


@pytest.mark.parametrize("field, value", [
    ("collaboration", "other"),
    ("image", "127.0.0.1:5000/other:1"),
    ("image", f"127.0.0.1:5000/algo:1@{DIGEST}"),  # its own name with a digest it was not started from
])
def test_body_naming_another_collaboration_or_image_is_refused(api_container, other_collab, org_b, field, value):
    value = other_collab.pk if value == "other" else value
    response = api_container.post("/api/tasks/", _subtask_body(org_b, **{field: value}), format="json")
    assert response.status_code == 400
    assert field in response.data
    assert Task.objects.count() == 1


def test_subtask_for_an_organisation_outside_the_collaboration_is_refused(api_container, org_c):
    response = api_container.post("/api/tasks/", _subtask_body(org_c), format="json")
    assert response.status_code == 400
    assert "organizations" in response.data
    assert Task.objects.count() == 1


def test_subtask_without_method_or_organisations_is_refused_field_by_field(api_container):
    response = api_container.post("/api/tasks/", {"name": "x", "organizations": []}, format="json")
    assert response.status_code == 400
    assert {"method", "organizations"} <= set(response.data)


def test_subtask_creation_is_audited_with_the_container_as_actor(api_container, running_a, task):
    response = api_container.post("/api/tasks/", _subtask_body(running_a.organization), format="json")
    event = AuditEvent.objects.get(verb="task.created", target_id=str(response.data["id"]))
    assert (event.actor_type, event.actor_id) == ("container", running_a.pk)
    assert event.details["parent"] == task.pk


def test_container_of_a_subtask_creates_subtasks_in_the_same_job(api_container, api_for, node_b, task, org_b):
    subtask_id = api_container.post("/api/tasks/", _subtask_body(org_b), format="json").data["id"]
    run = Run.objects.get(task_id=subtask_id)
    run_claim(run_id=run.pk, node=node_b)
    nested = _client(_token_response(api_for, node_b, run).data["token"])
    response = nested.post("/api/tasks/", _subtask_body(org_b), format="json")
    assert response.status_code == 201
    assert (response.data["parent"], response.data["job"]) == (subtask_id, task.pk)


def test_token_stops_working_once_the_run_finished(api_container, node_a, running_a, org_b):
    _finish(running_a, node_a)
    response = api_container.post("/api/tasks/", _subtask_body(org_b), format="json")
    assert response.status_code == 401
    assert Task.objects.count() == 1


def test_subtask_is_refused_when_the_run_finished_after_authentication(container, node_a, running_a, org_b):
    _finish(running_a, node_a)
    with pytest.raises(Conflict):
        subtask_create(container=container, name="late", method="partial",
                       organization_inputs={org_b.pk: b"{}"})
    assert Task.objects.count() == 1


def test_subtask_is_refused_while_the_job_is_being_killed(api_container, owner, task, org_b):
    task_kill(actor=owner, task=task)
    response = api_container.post("/api/tasks/", _subtask_body(org_b), format="json")
    assert response.status_code == 409
    assert Task.objects.count() == 1


# --- reading its own job, and nothing else ------------------------------------------------


@pytest.fixture
def other_job(member, collab, org_a, org_b):
    return factories.make_task(member, collab, [org_a, org_b], name="someone else's")


def test_container_reads_its_jobs_tasks_and_runs(api_container, task, org_b):
    subtask_id = api_container.post("/api/tasks/", _subtask_body(org_b), format="json").data["id"]
    assert api_container.get(f"/api/tasks/{subtask_id}/").data["status"] == Task.Status.PENDING
    assert api_container.get(f"/api/tasks/{task.pk}/").status_code == 200
    runs = api_container.get(f"/api/runs/?task={subtask_id}").data["results"]
    assert [(r["task"], r["organization"]) for r in runs] == [(subtask_id, org_b.pk)]
    detail = api_container.get(f"/api/runs/{runs[0]['id']}/")
    assert detail.status_code == 200
    assert not {"input", "log"} & set(detail.data)


def test_container_downloads_its_subtasks_result(api_container, api_for, node_b, org_b):
    subtask_id = api_container.post("/api/tasks/", _subtask_body(org_b), format="json").data["id"]
    run = Run.objects.get(task_id=subtask_id)
    run_claim(run_id=run.pk, node=node_b)
    _finish(run, node_b, result=ContentFile(b'{"n": 12}', name="output"))
    response = api_container.get(f"/api/runs/{run.pk}/result/")
    assert response.status_code == 200
    assert b"".join(async_to_sync(_collect)(response)) == b'{"n": 12}'


async def _collect(response):
    return [part async for part in response.streaming_content]


def test_container_cannot_see_another_jobs_tasks_runs_or_results(api_container, other_job, node_b):
    run = other_job.runs.get(organization__name="Hospital B")
    run_claim(run_id=run.pk, node=node_b)
    _finish(run, node_b, result=ContentFile(b"{}", name="output"))
    assert api_container.get(f"/api/tasks/{other_job.pk}/").status_code == 404
    assert api_container.get(f"/api/runs/{run.pk}/").status_code == 404
    assert api_container.get(f"/api/runs/{run.pk}/result/").status_code == 404
    assert api_container.get(f"/api/runs/?task={other_job.pk}").data["results"] == []


def test_run_list_for_a_container_costs_a_fixed_number_of_queries(
    api_container, org_a, org_b, django_assert_num_queries
):
    for _ in range(3):
        api_container.post("/api/tasks/", _subtask_body(org_a, org_b), format="json")
    # authentication (the run, its task and node), page (a short first page is its own count)
    with django_assert_num_queries(2):
        assert len(api_container.get("/api/runs/").data["results"]) == 8


@pytest.mark.parametrize("method, path", [
    ("get", "/api/tasks/"),
    ("post", "/api/tasks/{task}/kill/"),
    ("delete", "/api/tasks/{task}/"),
    ("get", "/api/users/"),
    ("get", "/api/collaborations/"),
    ("get", "/api/algorithms/"),
    ("get", "/api/nodes/"),
    ("get", "/api/audit/"),
    ("post", "/api/runs/{run}/claim/"),
    ("post", "/api/runs/{run}/start/"),
    ("post", "/api/runs/{run}/log/"),
    ("post", "/api/runs/{run}/container-token/"),
    ("get", "/api/node/me/"),
])
def test_container_cannot_use_user_or_node_endpoints(api_container, task, running_a, method, path):
    response = getattr(api_container, method)(path.format(task=task.pk, run=running_a.pk))
    assert response.status_code == 403


def test_container_has_no_role_scope(container):
    assert user_scope(container, Resource.TASK, Action.VIEW) is None


def test_container_lists_its_collaborations_members_with_public_keys(api_container, collab, other_collab, org_a,
                                                                      org_b, org_c):
    response = api_container.get(f"/api/organizations/?collaboration={collab.pk}")
    assert response.status_code == 200
    assert [o["id"] for o in response.data["results"]] == [org_a.pk, org_b.pk]  # by name
    assert "public_key" in response.data["results"][0]
    assert api_container.get(f"/api/organizations/?collaboration={other_collab.pk}").data["results"] == []
    assert api_container.get(f"/api/organizations/{org_b.pk}/").status_code == 200
    assert api_container.get(f"/api/organizations/{org_c.pk}/").status_code == 404
    assert api_container.patch(f"/api/organizations/{org_a.pk}/", {"name": "x"}, format="json").status_code == 403


# --- revocation ----------------------------------------------------------------------------


def test_rotating_the_node_key_revokes_its_container_tokens(api_container, node_a, task):
    node_rotate_key(actor=None, node=node_a)
    assert api_container.get(f"/api/tasks/{task.pk}/").status_code == 401


def test_expired_container_token_is_refused(api_for, node_a, running_a, task):
    Run.objects.filter(pk=running_a.pk).update(deadline_at=timezone.now() + timedelta(seconds=2))
    response = _token_response(api_for, node_a, running_a)
    assert response.data["expires_in"] == 1
    Run.objects.filter(pk=running_a.pk).update(deadline_at=timezone.now() + timedelta(hours=1))
    time.sleep(1.2)  # JWT expiry has one-second resolution
    client = _client(response.data["token"])
    assert client.get(f"/api/tasks/{task.pk}/").status_code == 401


def test_websocket_handshake_refuses_a_container_token(container_token):
    with pytest.raises(AuthenticationFailed):
        websocket_principal(container_token.encode())


@pytest.mark.parametrize("field, value", [("study", 1), ("algorithm", 1), ("created_by", 1), ("job", 5)])
def test_subtask_naming_a_field_a_container_cannot_set_is_refused(api_container, org_b, field, value):
    # The serializer has no such field for a container: DRF dropped it silently before.
    response = api_container.post("/api/tasks/", _subtask_body(org_b, **{field: value}), format="json")
    assert response.status_code == 400
    assert response.data == {field: ["This field cannot be set here."]}
    assert Task.objects.count() == 1
