"""REST API for tasks: create with per-organisation inputs, list, filter, kill, delete."""

import base64

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from accounts.models import AuditEvent
from collaborations.services import collaboration_archive, study_create
from tasks.models import Run, Task
from tasks.services import algorithm_submit, run_claim, run_finish, task_kill
from tests import factories
from tests.tasks.conftest import b64json

DIGEST = "sha256:" + "b" * 64


@pytest.fixture
def body(collab, org_a, org_b):
    return {
        "collaboration": collab.pk,
        "name": "survival",
        "image": f"127.0.0.1:5000/cox@{DIGEST}",
        "method": "partial",
        "organizations": [
            {"id": org_a.pk, "input": b64json({"method": "partial", "args": [], "kwargs": {"site": "a"}})},
            {"id": org_b.pk, "input": b64json({"method": "partial", "args": [], "kwargs": {"site": "b"}})},
        ],
        "databases": [{"label": "default", "type": "csv"}],
    }


def _post(client, body):
    return client.post("/api/tasks/", body, format="json")


def _nothing_written():
    return not Task.objects.exists() and not Run.objects.exists()


# --- create --------------------------------------------------------------------------


def test_researcher_creates_a_task_with_one_pending_run_per_organisation(api_for, owner, collab, org_a, org_b, body):
    response = _post(api_for(owner), body)
    assert response.status_code == 201
    data = response.data
    task = Task.objects.get(pk=data["id"])
    runs = {run.organization_id: run for run in task.runs.all()}
    assert data["status"] == "pending"
    assert (data["collaboration"], data["init_organization"], data["created_by"]) == (collab.pk, org_a.pk, owner.pk)
    assert (data["image"], data["digest"], data["method"]) == (body["image"], DIGEST, "partial")
    assert data["databases"] == [{"label": "default", "type": "csv"}]
    assert data["job"] == task.pk and data["parent"] is None
    assert data["runs"] == [{"id": runs[org_a.pk].pk, "organization": org_a.pk, "status": "pending"},
                            {"id": runs[org_b.pk].pk, "organization": org_b.pk, "status": "pending"}]
    assert bytes(runs[org_b.pk].input) == base64.b64decode(body["organizations"][1]["input"])
    assert AuditEvent.objects.filter(verb="task.created", target_id=str(task.pk)).exists()


def test_task_from_an_approved_algorithm_runs_its_pinned_image(api_for, owner, root, body):
    algorithm = algorithm_submit(actor=owner, name="cox", image="127.0.0.1:5000/cox", digest=DIGEST)
    factories.approved_algorithm(algorithm, root)
    response = _post(api_for(owner), {**body, "image": "", "algorithm": algorithm.pk})
    assert response.status_code == 201
    assert (response.data["algorithm"], response.data["image"], response.data["digest"]) == (
        algorithm.pk, "127.0.0.1:5000/cox", DIGEST)


def test_task_create_is_forbidden_to_a_viewer(api_for, viewer, body):
    assert _post(api_for(viewer), body).status_code == 403
    assert _nothing_written()


def test_task_create_is_forbidden_to_nodes(api_for, node_a, body):
    assert _post(api_for(node_a), body).status_code == 403
    assert _nothing_written()


def test_task_create_refuses_anonymous_callers(anon, body):
    assert _post(anon, body).status_code == 401


def test_bad_base64_input_is_refused_on_organizations(api_for, owner, body):
    body["organizations"][1]["input"] = "not base64!"
    response = _post(api_for(owner), body)
    assert response.status_code == 400
    assert response.data["organizations"][1] == {"input": ["Not valid base64."]}
    assert _nothing_written()


def test_an_unknown_and_an_invisible_collaboration_read_the_same(api_for, owner, other_collab, body):
    client = api_for(owner)
    invisible = _post(client, {**body, "collaboration": other_collab.pk})
    missing = _post(client, {**body, "collaboration": other_collab.pk + 1000})
    assert invisible.status_code == missing.status_code == 400
    assert invisible.data["collaboration"] == [f"No object with id {other_collab.pk} (or not visible to you)."]
    assert missing.data["collaboration"] == [f"No object with id {other_collab.pk + 1000} (or not visible to you)."]
    assert _nothing_written()


def test_an_organisation_outside_the_collaboration_is_refused(api_for, owner, org_c, body):
    body["organizations"].append({"id": org_c.pk, "input": b64json({"method": "partial"})})
    response = _post(api_for(owner), body)
    assert response.status_code == 400
    assert "organizations" in response.data
    assert _nothing_written()


def test_input_above_the_limit_answers_413(api_for, owner, body, settings):
    settings.VANTAGE_MAX_INPUT_BYTES = 64
    body["organizations"][0]["input"] = b64json({"method": "partial", "kwargs": {"pad": "x" * 100}})
    response = _post(api_for(owner), body)
    assert response.status_code == 413
    assert _nothing_written()


def test_input_that_is_not_a_json_object_is_refused_in_an_unencrypted_collaboration(api_for, owner, body):
    body["organizations"][0]["input"] = base64.b64encode(b"[1, 2]").decode()
    response = _post(api_for(owner), body)
    assert response.status_code == 400
    assert "organizations" in response.data


def test_archived_collaboration_accepts_no_tasks(api_for, owner, collab, body):
    collaboration_archive(actor=None, collaboration=collab)
    response = _post(api_for(owner), body)
    assert response.status_code == 400
    assert "collaboration" in response.data
    assert _nothing_written()


def test_study_of_another_collaboration_is_refused(api_for, root, collab, other_collab, org_c, body):
    study = study_create(actor=None, collaboration=other_collab, name="elsewhere", organizations=[org_c])
    response = _post(api_for(root), {**body, "study": study.pk})
    assert response.status_code == 400
    assert "study" in response.data


def test_organisation_outside_the_study_is_refused(api_for, owner, collab, org_a, body):
    study = study_create(actor=None, collaboration=collab, name="a only", organizations=[org_a])
    response = _post(api_for(owner), {**body, "study": study.pk})
    assert response.status_code == 400
    assert "organizations" in response.data


def test_unapproved_algorithm_is_refused(api_for, owner, body):
    algorithm = algorithm_submit(actor=owner, name="cox", image="127.0.0.1:5000/cox", digest=DIGEST)
    response = _post(api_for(owner), {**body, "algorithm": algorithm.pk})
    assert response.status_code == 400
    assert "algorithm" in response.data


@pytest.mark.parametrize("change, field", [
    ({"databases": [{"label": "Bad Label!"}]}, "databases"),
    ({"databases": [{"label": "default", "type": "mongodb"}]}, "databases"),
    ({"databases": [{"label": "a"}, {"label": "a"}]}, "databases"),
    ({"organizations": []}, "organizations"),
    ({"organizations": "everyone"}, "organizations"),
    ({"organizations": [{"id": 1}]}, "organizations"),
    ({"method": ""}, "method"),
    ({"name": ""}, "name"),
    ({"image": ""}, "image"),
    ({"image": "127.0.0.1:5000/cox@sha256:short"}, "image"),
    ({"collaboration": "one"}, "collaboration"),
    ({"algorithm": 999999}, "algorithm"),
])
def test_task_create_names_the_bad_field(api_for, owner, body, change, field):
    response = _post(api_for(owner), {**body, **change})
    assert response.status_code == 400
    assert field in response.data
    assert _nothing_written()


def test_an_organisation_named_twice_is_refused(api_for, owner, org_a, body):
    body["organizations"].append({"id": org_a.pk, "input": b64json({})})
    response = _post(api_for(owner), body)
    assert response.status_code == 400
    assert response.data["organizations"] == [f"Organisation {org_a.pk} is named twice."]


# --- list and retrieve ---------------------------------------------------------------


def test_task_list_shows_the_collaboration_tasks_to_a_partner(api_for, member, task):
    response = api_for(member).get("/api/tasks/")
    assert response.status_code == 200
    assert [t["id"] for t in response.data["results"]] == [task.pk]


def test_task_list_is_empty_for_an_outsider(api_for, outsider, task):
    response = api_for(outsider).get("/api/tasks/")
    assert response.status_code == 200
    assert response.data["results"] == []


def test_task_list_is_forbidden_without_a_task_role(api_for, algorithm_editor, task):
    assert api_for(algorithm_editor).get("/api/tasks/").status_code == 403


def test_task_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/tasks/").status_code == 401


def test_task_list_filters_by_collaboration_organisation_parent_and_job(api_for, root, owner, member, collab,
                                                                        other_collab, org_a, org_b, org_c, outsider):
    mine = factories.make_task(owner, collab, [org_a])
    theirs = factories.make_task(member, collab, [org_a, org_b])
    elsewhere = factories.make_task(outsider, other_collab, [org_c])
    child = factories.make_task(owner, collab, [org_b])
    Task.objects.filter(pk=child.pk).update(parent=mine, job=mine)
    client = api_for(root)

    def ids(**query):
        response = client.get("/api/tasks/", query)
        assert response.status_code == 200
        return sorted(t["id"] for t in response.data["results"])

    assert ids(collaboration=other_collab.pk) == [elsewhere.pk]
    assert ids(init_organization=org_b.pk) == [theirs.pk]
    assert ids(parent=mine.pk) == [child.pk]
    assert ids(job=mine.pk) == sorted([mine.pk, child.pk])
    assert ids(collaboration=collab.pk, init_organization=org_a.pk) == sorted([mine.pk, child.pk])


def test_task_list_filters_by_derived_status(api_for, owner, collab, org_a, org_b, node_a):
    pending = factories.make_task(owner, collab, [org_a, org_b])
    active = factories.make_task(owner, collab, [org_a, org_b])
    run_claim(run_id=active.runs.get(organization=org_a).pk, node=node_a)
    killed = factories.make_task(owner, collab, [org_a, org_b])
    task_kill(actor=owner, task=killed)
    client = api_for(owner)
    for status, expected in [("pending", pending), ("active", active), ("killed", killed)]:
        response = client.get("/api/tasks/", {"status": status})
        assert [t["id"] for t in response.data["results"]] == [expected.pk], status
        assert response.data["results"][0]["status"] == status
    assert client.get("/api/tasks/", {"status": "completed"}).data["results"] == []


@pytest.mark.parametrize("query, field", [({"status": "sleeping"}, "status"), ({"collaboration": "x"}, "collaboration")])
def test_task_list_names_a_bad_filter(api_for, owner, query, field):
    response = api_for(owner).get("/api/tasks/", query)
    assert response.status_code == 400
    assert field in response.data


def test_task_list_query_count_does_not_grow_with_tasks(api_for, owner, collab, org_a, org_b,
                                                        django_assert_num_queries):
    for _ in range(6):
        factories.make_task(owner, collab, [org_a, org_b])
    client = api_for(owner)
    # user, rules, page of tasks with derived status (a short first page is its own count), their runs
    with django_assert_num_queries(4):
        response = client.get("/api/tasks/")
    assert len(response.data["results"]) == 6
    assert all(len(t["runs"]) == 2 for t in response.data["results"])


def test_task_detail_shows_status_and_runs(api_for, member, task, run_a, run_b, org_a, org_b):
    response = api_for(member).get(f"/api/tasks/{task.pk}/")
    assert response.status_code == 200
    assert response.data["status"] == "pending"
    assert response.data["runs"] == [{"id": run_a.pk, "organization": org_a.pk, "status": "pending"},
                                     {"id": run_b.pk, "organization": org_b.pk, "status": "pending"}]
    assert "input" not in response.data["runs"][0]


def test_task_detail_is_absent_for_an_outsider(api_for, outsider, task):
    assert api_for(outsider).get(f"/api/tasks/{task.pk}/").status_code == 404


def test_task_detail_refuses_anonymous_callers(anon, task):
    assert anon.get(f"/api/tasks/{task.pk}/").status_code == 401


# --- kill ----------------------------------------------------------------------------


def test_owner_kills_a_task_and_its_status_reads_killed(api_for, owner, task):
    response = api_for(owner).post(f"/api/tasks/{task.pk}/kill/")
    assert response.status_code == 200
    assert response.data["status"] == "killed"
    assert {r["status"] for r in response.data["runs"]} == {"killed"}
    assert AuditEvent.objects.filter(verb="task.killed", target_id=str(task.pk)).exists()


def test_kill_asks_the_node_of_a_claimed_run_to_stop(api_for, owner, task, run_a, node_a):
    run_claim(run_id=run_a.pk, node=node_a)
    response = api_for(owner).post(f"/api/tasks/{task.pk}/kill/")
    assert response.status_code == 200
    assert response.data["status"] == "active"
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.CLAIMED and run_a.kill_requested_at is not None


def test_kill_is_forbidden_to_a_partner_who_only_sees_the_task(api_for, member, task):
    assert api_for(member).post(f"/api/tasks/{task.pk}/kill/").status_code == 403
    assert set(task.runs.values_list("status", flat=True)) == {Run.Status.PENDING}


def test_kill_is_forbidden_to_a_viewer(api_for, viewer, task):
    assert api_for(viewer).post(f"/api/tasks/{task.pk}/kill/").status_code == 403
    assert set(task.runs.values_list("status", flat=True)) == {Run.Status.PENDING}


def test_kill_of_an_invisible_task_is_not_found(api_for, outsider, task):
    assert api_for(outsider).post(f"/api/tasks/{task.pk}/kill/").status_code == 404
    assert set(task.runs.values_list("status", flat=True)) == {Run.Status.PENDING}


def test_kill_refuses_anonymous_callers(anon, task):
    assert anon.post(f"/api/tasks/{task.pk}/kill/").status_code == 401


# --- delete --------------------------------------------------------------------------


def _finish_with_result(run, node):
    run_claim(run_id=run.pk, node=node)
    return run_finish(run_id=run.pk, node=node, status=Run.Status.COMPLETED, exit_code=0,
                      result=ContentFile(b'{"n": 1}', name="output"))


def test_owner_deletes_a_finished_task_with_its_result_files(api_for, owner, task, run_a, run_b, node_a, node_b,
                                                             django_capture_on_commit_callbacks, settings):
    settings.VANTAGE_RESULT_IN_DATABASE_BYTES = 0
    stored = _finish_with_result(run_a, node_a).result.name
    _finish_with_result(run_b, node_b)
    assert default_storage.exists(stored)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(owner).delete(f"/api/tasks/{task.pk}/")
    assert response.status_code == 204
    assert not Task.objects.filter(pk=task.pk).exists()
    assert not default_storage.exists(stored)
    assert AuditEvent.objects.filter(verb="task.deleted", target_id=str(task.pk)).exists()


def test_delete_of_a_task_with_open_runs_conflicts(api_for, owner, task):
    response = api_for(owner).delete(f"/api/tasks/{task.pk}/")
    assert response.status_code == 409
    assert Task.objects.filter(pk=task.pk).exists()


def test_delete_of_a_subtask_conflicts(api_for, owner, task, collab, org_a):
    child = factories.make_task(owner, collab, [org_a])
    Task.objects.filter(pk=child.pk).update(parent=task, job=task)
    task_kill(actor=owner, task=task)
    response = api_for(owner).delete(f"/api/tasks/{child.pk}/")
    assert response.status_code == 409
    assert Task.objects.filter(pk=child.pk).exists()


def test_delete_is_forbidden_to_a_partner_who_only_sees_the_task(api_for, owner, member, task):
    task_kill(actor=owner, task=task)
    assert api_for(member).delete(f"/api/tasks/{task.pk}/").status_code == 403
    assert Task.objects.filter(pk=task.pk).exists()


def test_delete_is_forbidden_to_a_viewer(api_for, owner, viewer, task):
    task_kill(actor=owner, task=task)
    assert api_for(viewer).delete(f"/api/tasks/{task.pk}/").status_code == 403
    assert Task.objects.filter(pk=task.pk).exists()


def test_delete_of_an_invisible_task_is_not_found(api_for, owner, outsider, task):
    task_kill(actor=owner, task=task)
    assert api_for(outsider).delete(f"/api/tasks/{task.pk}/").status_code == 404
    assert Task.objects.filter(pk=task.pk).exists()


def test_delete_refuses_anonymous_callers(anon, task):
    assert anon.delete(f"/api/tasks/{task.pk}/").status_code == 401
