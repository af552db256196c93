"""A node's output gate holds a result: the run awaits release, with metadata only.

The node then finishes it (released, or rejected by its steward) through the normal
finish path; killing the task meanwhile ends the held run at once.
"""

import base64

import pytest

from accounts.models import AuditEvent
from tasks.models import Run, Task
from tasks.selectors import task_status
from tasks.services import run_claim, run_start, task_kill

HOLD = {"output_type": "count_table", "size": 321, "flags": ["cell 2 is below min_cell 5"]}


def _running(run, node):
    run_claim(run_id=run.pk, node=node)
    run_start(run_id=run.pk, node=node)
    return run


def test_node_holds_a_running_run_and_the_researcher_sees_awaiting_release(api_for, owner, node_a, task, run_a):
    _running(run_a, node_a)
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "awaiting_release"
    seen = api_for(owner).get(f"/api/runs/{run_a.pk}/").json()
    assert seen["status"] == "awaiting_release"
    assert seen["hold_info"]["flags"] == HOLD["flags"] and seen["hold_info"]["output_type"] == "count_table"
    listed = api_for(owner).get("/api/runs/", {"task": task.pk}).json()["results"]
    assert {r["id"]: r["status"] for r in listed}[run_a.pk] == "awaiting_release"
    assert task_status(task_id=task.pk) == Task.Status.ACTIVE
    assert AuditEvent.objects.filter(verb="run.held").count() == 1


def test_a_held_run_finishes_through_the_normal_path_when_released(api_for, node_a, run_a):
    _running(run_a, node_a)
    api_for(node_a).post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json")
    body = {"status": "completed", "exit_code": 0, "log": "", "result": base64.b64encode(b'{"a": 1}').decode()}
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/finish/", body, format="json")
    assert response.status_code == 200, response.content
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.COMPLETED and run_a.result_size == 8


def test_a_held_run_rejected_by_the_steward_keeps_no_result(api_for, node_a, run_a):
    _running(run_a, node_a)
    api_for(node_a).post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json")
    body = {"status": "rejected", "error_kind": "withheld", "log": "[node] rejected by the steward: too small"}
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/finish/", body, format="json").status_code == 200
    run_a.refresh_from_db()
    assert run_a.status == "rejected" and run_a.error_kind == "withheld" and not run_a.has_stored_result
    assert "too small" in run_a.log


def test_a_hold_records_the_start_it_was_not_sent_and_the_release_keeps_it(api_for, node_a, run_a):
    digest = "sha256:" + "ef" * 32
    run_claim(run_id=run_a.pk, node=node_a)  # a quick round: its start never reported on its own
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/hold/", {**HOLD, "digest": digest}, format="json")
    assert response.status_code == 200, response.content
    run_a.refresh_from_db()
    assert (run_a.status, run_a.digest) == (Run.Status.AWAITING_RELEASE, digest)
    assert run_a.claimed_at <= run_a.started_at
    started = run_a.started_at
    body = {"status": "completed", "exit_code": 0, "digest": "sha256:" + "00" * 32}
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/finish/", body, format="json").status_code == 200
    run_a.refresh_from_db()
    assert (run_a.status, run_a.started_at, run_a.digest) == (Run.Status.COMPLETED, started, digest)
    verbs = list(AuditEvent.objects.filter(target_id=str(run_a.pk), verb__startswith="run.").order_by("id")
                 .values_list("verb", flat=True))
    assert verbs == ["run.claimed", "run.started", "run.held", "run.completed"]


def test_hold_of_a_pending_run_conflicts(api_for, node_a, run_a):
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json").status_code == 409


def test_hold_of_a_final_run_conflicts(api_for, node_a, run_a):
    _running(run_a, node_a)
    api_for(node_a).post(f"/api/runs/{run_a.pk}/finish/", {"status": "failed"}, format="json")
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json").status_code == 409


@pytest.mark.parametrize("body, field", [
    ({"size": 1, "flags": []}, "output_type"),
    ({"output_type": "opaque", "size": -1, "flags": []}, "size"),
    ({"output_type": "opaque", "size": 1, "flags": "not a list"}, "flags"),
    ({"output_type": "opaque", "size": 1, "flags": ["x"] * 21}, "flags"),
    ({"output_type": "opaque", "size": 1, "flags": [], "digest": "sha256:short"}, "digest"),
    ({"output_type": "opaque", "size": 1, "flags": [], "started_at": "soon"}, "started_at"),
])
def test_hold_names_the_bad_field(api_for, node_a, run_a, body, field):
    _running(run_a, node_a)
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/hold/", body, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()


def test_hold_of_another_organisations_run_is_not_found(api_for, node_b, node_a, run_a):
    _running(run_a, node_a)
    assert api_for(node_b).post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json").status_code == 404


def test_hold_is_forbidden_to_users(api_for, owner, node_a, run_a):
    _running(run_a, node_a)
    assert api_for(owner).post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json").status_code == 403


def test_hold_refuses_anonymous_callers(anon, run_a):
    assert anon.post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json").status_code == 401


def test_killing_a_task_ends_its_held_runs_at_once(api_for, owner, node_a, task, run_a):
    _running(run_a, node_a)
    api_for(node_a).post(f"/api/runs/{run_a.pk}/hold/", HOLD, format="json")
    task_kill(actor=owner, task=task)
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.KILLED
    # The node's later release finds the run final.
    body = {"status": "completed", "exit_code": 0, "result": base64.b64encode(b"{}").decode()}
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/finish/", body, format="json").status_code == 409
