"""A task's status is derived from its runs by the database (tasks.selectors.with_status)."""

import pytest

from tasks.models import Run, Task
from tasks.selectors import task_list, with_status
from tasks.services import run_claim, run_finish, run_start, task_kill
from tests import factories

S = Run.Status


@pytest.fixture
def pair(owner, collab, org_a, org_b, node_a, node_b):
    """A task on org_a and org_b; `end(org, status)` takes that organisation's run to a final state."""
    task = factories.make_task(owner, collab, [org_a, org_b])
    nodes = {org_a.pk: node_a, org_b.pk: node_b}

    def end(org, status, **kwargs):
        run = task.runs.get(organization=org)
        run_claim(run_id=run.pk, node=nodes[org.pk])
        run_start(run_id=run.pk, node=nodes[org.pk])
        run_finish(run_id=run.pk, node=nodes[org.pk], status=status, **kwargs)

    return task, end


def _status(task) -> str:
    return with_status(Task.objects.filter(pk=task.pk)).get().status


def test_a_task_whose_runs_all_wait_is_pending(pair):
    task, _ = pair
    assert _status(task) == Task.Status.PENDING


def test_a_task_without_runs_is_pending(owner, collab, org_a):
    task = Task.objects.create(collaboration=collab, name="empty", image="i", method="m", init_organization=org_a)
    assert _status(task) == Task.Status.PENDING


def test_a_claimed_run_makes_the_task_active(pair, org_a, node_a):
    task, _ = pair
    run_claim(run_id=task.runs.get(organization=org_a).pk, node=node_a)
    assert _status(task) == Task.Status.ACTIVE


def test_a_task_with_one_run_done_and_one_pending_is_active(pair, org_a):
    task, end = pair
    end(org_a, S.COMPLETED, exit_code=0)
    assert _status(task) == Task.Status.ACTIVE


def test_a_task_whose_runs_all_completed_is_completed(pair, org_a, org_b):
    task, end = pair
    end(org_a, S.COMPLETED, exit_code=0)
    end(org_b, S.COMPLETED, exit_code=0)
    assert _status(task) == Task.Status.COMPLETED


@pytest.mark.parametrize("failure", [S.FAILED, S.CRASHED, S.REJECTED, S.TIMED_OUT])
def test_any_failed_run_fails_the_finished_task(pair, org_a, org_b, failure):
    task, end = pair
    end(org_a, S.COMPLETED, exit_code=0)
    end(org_b, failure)
    assert _status(task) == Task.Status.FAILED


def test_a_killed_task_is_killed(pair, owner):
    task, _ = pair
    task_kill(actor=owner, task=task)
    assert _status(task) == Task.Status.KILLED


def test_a_task_with_a_completed_and_a_killed_run_is_killed(pair, owner, org_a):
    task, end = pair
    end(org_a, S.COMPLETED, exit_code=0)
    task_kill(actor=owner, task=task)
    assert _status(task) == Task.Status.KILLED


def test_failure_outranks_kill(pair, owner, org_a):
    task, end = pair
    end(org_a, S.CRASHED, exit_code=2)
    task_kill(actor=owner, task=task)
    assert _status(task) == Task.Status.FAILED


def test_a_kill_requested_but_not_yet_honoured_leaves_the_task_active(pair, owner, org_a, node_a):
    task, _ = pair
    run_claim(run_id=task.runs.get(organization=org_a).pk, node=node_a)
    task_kill(actor=owner, task=task)
    assert _status(task) == Task.Status.ACTIVE


def test_task_list_derives_the_status_of_every_task_in_one_query(owner, collab, org_a, org_b, node_a,
                                                                 django_assert_num_queries):
    killed = factories.make_task(owner, collab, [org_a])
    task_kill(actor=owner, task=killed)
    active = factories.make_task(owner, collab, [org_a, org_b])
    run_claim(run_id=active.runs.get(organization=org_a).pk, node=node_a)
    pending = factories.make_task(owner, collab, [org_b])
    tasks = task_list(user=owner)
    with django_assert_num_queries(1):
        statuses = dict(tasks.values_list("pk", "status"))
    assert statuses == {killed.pk: "killed", active.pk: "active", pending.pk: "pending"}


def test_one_tasks_status_is_read_in_one_query_as_lists_derive_it(pair, org_a, org_b, django_assert_num_queries):
    from tasks.selectors import task_status

    task, end = pair
    end(org_a, S.COMPLETED)
    with django_assert_num_queries(1):
        status = task_status(task_id=task.pk)
    assert status == _status(task) == Task.Status.ACTIVE
    end(org_b, S.CRASHED)
    assert task_status(task_id=task.pk) == _status(task) == Task.Status.FAILED
    assert task_status(task_id=task.pk + 1000) is None
