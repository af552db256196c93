"""Portal fixtures beside the shared personas (tests/conftest.py).

`task` is a job of `owner` (org_a) on org_a and org_b in `collab`; `finish_run` ends one
of its runs through the node services, with a result file and a log, as a node would.
"""

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from tasks.models import Run
from tasks.services import run_append_log, run_claim, run_finish, run_start
from tests import factories


@pytest.fixture
def task(owner, collab, org_a, org_b):
    return factories.make_task(owner, collab, [org_a, org_b], name="survival", method="summary",
                               databases=[{"label": "gbsg2", "type": "csv"}])


@pytest.fixture
def finish_run():
    def finish(task, organization, node, result: bytes | None, *, log: str = "", status=Run.Status.COMPLETED):
        run = task.runs.get(organization=organization)
        run_claim(run_id=run.pk, node=node)
        run_start(run_id=run.pk, node=node)
        if log:
            run_append_log(run_id=run.pk, node=node, text=log)
        return run_finish(
            run_id=run.pk, node=node, status=status, exit_code=0 if status == Run.Status.COMPLETED else 1,
            result=ContentFile(result, name="output") if result is not None else None,
        )

    return finish


@pytest.fixture
def browser_for():
    """browser_for(user) -> a Django test client with that user's session (CSRF checked)."""

    def build(user) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    return build


def csrf_token(client: Client, url: str = "/portal/") -> str:
    """The CSRF token a page of the portal hands the browser."""
    client.get(url)
    return client.cookies["csrftoken"].value
