"""A finished run's task-status event: derived (one query) only when someone can receive it."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import events
from tasks.models import Run
from tasks.services import run_claim, run_finish


def _status_queries(queries) -> list[str]:
    # The derived status counts the task's runs per state (tasks.selectors._status_expression).
    return [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "CASE" in q["sql"].upper()]


@pytest.fixture
def listener(collab):
    """A channel in the collaboration's event group of this process's channel layer."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    group = events.collaboration_group(collab.pk)
    async_to_sync(layer.group_add)(group, channel)
    yield layer, channel
    async_to_sync(layer.group_discard)(group, channel)


def _finish(run_a, node_a, django_capture_on_commit_callbacks):
    run_claim(run_id=run_a.pk, node=node_a)
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        run_finish(run_id=run_a.pk, node=node_a, status=Run.Status.COMPLETED, result=b"{}")
    return queries


def test_with_nobody_listening_the_status_is_not_derived(run_a, node_a, django_capture_on_commit_callbacks):
    assert events.anyone_listening([events.collaboration_group(run_a.task.collaboration_id), events.GLOBAL_GROUP]) is False
    assert _status_queries(_finish(run_a, node_a, django_capture_on_commit_callbacks)) == []


def test_a_listener_receives_the_derived_status(run_a, node_a, listener, django_capture_on_commit_callbacks):
    layer, channel = listener
    queries = _finish(run_a, node_a, django_capture_on_commit_callbacks)
    assert len(_status_queries(queries)) == 1
    received = []
    while True:
        message = async_to_sync(layer.receive)(channel)
        received.append(message["event"])
        if message["event"]["type"] in ("task.updated", "task.completed"):
            break
    # run_a's task has a second run (org_b) still pending: the task stays active.
    assert received[-1]["task"] == {"id": run_a.task_id, "status": "active", "collaboration": run_a.task.collaboration_id}
    assert received[0]["type"] == "run.updated"


def test_a_layer_shared_between_processes_is_always_sent_to(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    from channels.layers import channel_layers
    channel_layers.backends.clear()
    try:
        # Channels' own layer cannot tell who listens (as with Redis): the event is always built.
        assert events.anyone_listening(["events.global"]) is True
    finally:
        channel_layers.backends.clear()
