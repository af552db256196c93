"""Beside the shared personas: what the tasks API tests need.

run_reader_less holds a custom role that may read tasks but not runs (the wrong role for
the runs API); algorithm_editor may edit algorithms at organisation scope only (not a
reviewer). `task` is a task of `owner` on org_a and org_b, with runs `run_a`, `run_b`.
"""

import base64
import json

import pytest

from accounts.models import Action, Resource, Rule, Scope
from accounts.services import role_create
from tests import factories


def b64json(value) -> str:
    """A run input as the API takes it: JSON, then base64."""
    return base64.b64encode(json.dumps(value).encode()).decode()


def _role(name: str, rules: list[tuple[str, str, int]]):
    return role_create(
        actor=None, name=name,
        rules=[Rule.objects.get_or_create(resource=r, action=a, scope=s)[0] for r, a, s in rules],
    )


@pytest.fixture
def run_reader_less(org_a, collab):
    _role("task-reader", [(Resource.TASK, Action.VIEW, Scope.COLLABORATION)])
    return factories.make_user(org_a, roles=("task-reader",), username="task-reader")


@pytest.fixture
def algorithm_editor(org_a, collab):
    _role("algorithm-editor", [
        (Resource.ALGORITHM, Action.VIEW, Scope.GLOBAL),
        (Resource.ALGORITHM, Action.EDIT, Scope.ORGANIZATION),
    ])
    return factories.make_user(org_a, roles=("algorithm-editor",), username="algorithm-editor")


@pytest.fixture
def task(owner, collab, org_a, org_b):
    return factories.make_task(owner, collab, [org_a, org_b], name="survival")


@pytest.fixture
def run_a(task, org_a):
    return task.runs.get(organization=org_a)


@pytest.fixture
def run_b(task, org_b):
    return task.runs.get(organization=org_b)
