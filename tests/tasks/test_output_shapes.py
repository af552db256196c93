"""The plain-dict answers of the hot endpoints match the serializers that document them.

Runs, claims and new tasks (tasks.serializers.run_data, node_run_data, task_data) and the
organisation list (collaborations.serializers.organization_data) skip DRF serializers
for speed; these tests hold them to the serializers' JSON, field for field.
"""

import json
from datetime import timedelta

from django.core.files.base import ContentFile
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from collaborations.models import Organization
from collaborations.serializers import OrganizationSerializer
from tasks.models import Run, Task
from tasks.selectors import task_detail
from tasks.serializers import NodeRunSerializer, RunSerializer, TaskSerializer, node_run_data, run_columns, run_data
from tasks.services import run_claim, run_finish, run_start
from tests import factories
from tests.tasks.conftest import b64json


def _json(value):
    return json.loads(JSONRenderer().render(value))


def test_a_finished_run_with_a_result_and_a_kill_request_renders_as_its_serializer(node_a, run_a):
    run_claim(run_id=run_a.pk, node=node_a)
    run_start(run_id=run_a.pk, node=node_a)
    Run.objects.filter(pk=run_a.pk).update(kill_requested_at=timezone.now() - timedelta(seconds=3))
    run = run_finish(run_id=run_a.pk, node=node_a, status=Run.Status.KILLED, exit_code=137,
                     error_kind=Run.ErrorKind.KILLED, result=ContentFile(b"{}", name="out"))
    run = Run.objects.get(pk=run.pk)
    assert run.kill_requested_at and run.finished_at and run.result_size == 2
    assert _json(run_data(run_columns(run))) == _json(RunSerializer(run).data)


def test_a_pending_run_renders_as_its_serializer(run_a):
    run = Run.objects.get(pk=run_a.pk)
    assert _json(run_data(run_columns(run))) == _json(RunSerializer(run).data)


def test_the_run_list_renders_each_run_as_its_serializer(api_for, owner, node_a, run_a, run_b):
    run_claim(run_id=run_a.pk, node=node_a)
    listed = api_for(owner).get("/api/runs/").json()["results"]
    assert listed == _json(RunSerializer(Run.objects.order_by("id"), many=True).data)


def test_a_claim_answers_as_the_node_run_serializer(api_for, node_a, run_a):
    answer = api_for(node_a).post(f"/api/runs/{run_a.pk}/claim/").json()
    run = Run.objects.select_related("task__created_by", "task__collaboration").get(pk=run_a.pk)
    assert answer == _json(NodeRunSerializer(run).data)


def test_a_run_of_a_task_without_creator_renders_as_the_node_run_serializer(node_a, run_a):
    Task.objects.filter(pk=run_a.task_id).update(created_by=None)
    run = Run.objects.select_related("task__created_by", "task__collaboration").get(pk=run_a.pk)
    assert _json(node_run_data(run)) == _json(NodeRunSerializer(run).data)
    assert node_run_data(run)["created_by_username"] is None


def test_start_and_finish_answer_as_the_run_serializer(api_for, node_a, run_a):
    client = api_for(node_a)
    client.post(f"/api/runs/{run_a.pk}/claim/")
    started = client.post(f"/api/runs/{run_a.pk}/start/").json()
    assert started == _json(RunSerializer(Run.objects.get(pk=run_a.pk)).data)
    finished = client.post(f"/api/runs/{run_a.pk}/finish/", {"status": "completed", "exit_code": "0"},
                           format="multipart").json()
    assert finished == _json(RunSerializer(Run.objects.get(pk=run_a.pk)).data)


def test_a_new_task_answers_as_the_task_serializer(api_for, owner, collab, org_a, org_b):
    body = {"collaboration": collab.pk, "name": "t", "image": "127.0.0.1:5000/algo:1", "method": "partial",
            "organizations": [{"id": org.pk, "input": b64json({"method": "partial"})} for org in (org_b, org_a)],
            "databases": [{"label": "default"}]}
    answer = api_for(owner).post("/api/tasks/", body).json()
    assert answer == _json(TaskSerializer(task_detail(task_id=answer["id"])).data)
    assert [run["organization"] for run in answer["runs"]] == [org_b.pk, org_a.pk]


def test_the_organization_list_renders_each_organization_as_its_serializer(api_for, owner, collab):
    collab.organizations.add(factories.make_organization(domain="c.example.org", country="DE"))
    listed = api_for(owner).get("/api/organizations/").json()["results"]
    assert listed == _json(OrganizationSerializer(Organization.objects.order_by("name", "pk"), many=True).data)
    assert len(listed) == 3
