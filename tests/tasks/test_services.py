import pytest

from tasks.models import Run, Task
from tasks.selectors import task_list
from tasks.services import run_claim, run_finish, run_start, task_kill
from tests.factories import make_task


def _status(user, task):
    return task_list(user=user).get(pk=task.pk).status


def test_task_status_is_derived_from_runs(owner, collab, org_a, org_b, node_a, node_b):
    task = make_task(owner, collab, [org_a, org_b])
    assert _status(owner, task) == Task.Status.PENDING
    run_a = task.runs.get(organization=org_a)
    run_b = task.runs.get(organization=org_b)
    assert run_claim(run_id=run_a.pk, node=node_a) is not None
    assert _status(owner, task) == Task.Status.ACTIVE
    run_start(run_id=run_a.pk, node=node_a)
    run_finish(run_id=run_a.pk, node=node_a, status=Run.Status.COMPLETED, exit_code=0)
    assert _status(owner, task) == Task.Status.ACTIVE
    run_claim(run_id=run_b.pk, node=node_b)
    run_finish(run_id=run_b.pk, node=node_b, status=Run.Status.CRASHED, exit_code=3,
               error_kind=Run.ErrorKind.ALGORITHM)
    assert _status(owner, task) == Task.Status.FAILED


def test_claim_returns_none_when_another_node_won(owner, collab, org_a, node_a):
    from tests.factories import make_node

    other_node, _ = make_node(org_a, collab, name="node-a2")
    task = make_task(owner, collab, [org_a])
    run = task.runs.get()
    assert run_claim(run_id=run.pk, node=node_a) is not None
    assert run_claim(run_id=run.pk, node=other_node) is None
    run.refresh_from_db()
    assert run.node_id == node_a.pk


def test_kill_ends_pending_runs_and_flags_running_ones(owner, collab, org_a, org_b, node_a):
    task = make_task(owner, collab, [org_a, org_b])
    run_a = task.runs.get(organization=org_a)
    run_claim(run_id=run_a.pk, node=node_a)
    assert task_kill(actor=owner, task=task) == 2
    statuses = dict(task.runs.values_list("organization_id", "status"))
    assert statuses == {org_a.pk: Run.Status.CLAIMED, org_b.pk: Run.Status.KILLED}
    run_a.refresh_from_db()
    assert run_a.kill_requested_at is not None


def test_a_finished_runs_log_is_closed(owner, collab, org_a, node_a):
    from tasks.services import run_append_log
    from core.errors import Conflict

    run = make_task(owner, collab, [org_a]).runs.get()
    run_claim(run_id=run.pk, node=node_a)
    run_append_log(run_id=run.pk, node=node_a, text="working\n")
    run_finish(run_id=run.pk, node=node_a, status=Run.Status.COMPLETED, exit_code=0)
    with pytest.raises(Conflict):
        run_append_log(run_id=run.pk, node=node_a, text="late\n")
