"""Task and run events, published after commit (see core.events for the groups)."""

from django.db import transaction

from core import events
from tasks.models import Run, Task
from tasks.selectors import task_status


def _run_body(run: Run) -> dict:
    return {
        "id": run.pk, "task": run.task_id, "organization": run.organization_id, "status": run.status,
        "node": run.node_id, "exit_code": run.exit_code, "error_kind": run.error_kind,
        "result_size": run.result_size,
    }


def _run_visibility(run: Run, task: Task) -> dict:
    return events.visibility(
        "run", collaboration=task.collaboration_id,
        organizations=[run.organization_id, task.init_organization_id], owner=task.created_by_id,
    )


def _task_visibility(task: Task) -> dict:
    return events.visibility(
        "task", collaboration=task.collaboration_id, organizations=[task.init_organization_id],
        owner=task.created_by_id,
    )


def task_created(task: Task, runs: list[Run]) -> None:
    """Tell each target organisation's nodes about their new run, and users about the task."""
    for run in runs:
        events.publish_on_commit(
            [events.node_pool_group(run.organization_id, task.collaboration_id)],
            {"type": "run.created", "run": _run_body(run), "task": task.pk},
        )
    events.publish_to_users_on_commit(
        task.collaboration_id,
        {"type": "task.updated", "task": {"id": task.pk, "status": Task.Status.PENDING,
                                          "collaboration": task.collaboration_id},
         "visibility": _task_visibility(task)},
    )


def run_updated(run: Run, task: Task) -> None:
    """A run changed state: tell users, then the task's derived status once committed.

    A claimed or running run makes its task active whatever its other runs do, so only
    a final state needs the database to derive the task's status.
    """
    events.publish_to_users_on_commit(
        task.collaboration_id,
        {"type": "run.updated", "run": _run_body(run), "visibility": _run_visibility(run, task)},
    )
    known = Task.Status.ACTIVE if run.status in (Run.Status.CLAIMED, Run.Status.RUNNING,
                                                 Run.Status.AWAITING_RELEASE) else None
    transaction.on_commit(lambda: _publish_task_status(task, known))


def _publish_task_status(task: Task, status: str | None) -> None:
    groups = [events.collaboration_group(task.collaboration_id), events.GLOBAL_GROUP]
    if not events.anyone_listening(groups):
        return  # deriving the status is a query: not for an event nobody receives
    if status is None:
        status = task_status(task_id=task.pk)
    if status is None:
        return
    final = status in (Task.Status.COMPLETED, Task.Status.FAILED, Task.Status.KILLED)
    events.publish(
        groups,
        {"type": "task.completed" if final else "task.updated",
         "task": {"id": task.pk, "status": status, "collaboration": task.collaboration_id},
         "visibility": _task_visibility(task)},
    )


def run_kill_requested(run: Run) -> None:
    """Ask the node holding a claimed or running run to stop its container."""
    if run.node_id is not None:
        events.publish_on_commit([events.node_group(run.node_id)], {"type": "run.kill", "run": run.pk})


def run_log(run: Run, task: Task, text: str) -> None:
    events.publish_to_users_on_commit(
        task.collaboration_id,
        {"type": "run.log", "run": run.pk, "task": task.pk, "text": text,
         "visibility": _run_visibility(run, task)},
    )
