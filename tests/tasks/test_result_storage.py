"""Where results are kept: in the run's row up to VANTAGE_RESULT_IN_DATABASE_BYTES, as files above.

Either way a result downloads the same, keeps its size and SHA-256, is purged under the
retention period and goes with its task; lists never load it.
"""

import base64
import hashlib
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks.jobs import purge_expired_results
from tasks.models import Run, Task
from tasks.services import run_claim, run_finish, run_start
from tests.tasks.test_api_runs import _body, _result

LIMIT = 1024


@pytest.fixture(autouse=True)
def small_row_limit(settings):
    settings.VANTAGE_RESULT_IN_DATABASE_BYTES = LIMIT


def _running(run, node):
    run_claim(run_id=run.pk, node=node)
    run_start(run_id=run.pk, node=node)


def _files() -> list[str]:
    return default_storage.listdir("results")[1] if default_storage.exists("results") else []


def _finish_multipart(client, run, data):
    return client.post(f"/api/runs/{run.pk}/finish/", {"status": "completed", "result": _result(data)},
                       format="multipart")


def _finish_inline(client, run, data):
    return client.post(f"/api/runs/{run.pk}/finish/", {"status": "completed", "result": base64.b64encode(data).decode()},
                       format="json")


@pytest.mark.parametrize("send", [_finish_multipart, _finish_inline], ids=["multipart", "inline"])
@pytest.mark.parametrize("size, in_row", [(0, True), (LIMIT, True), (LIMIT + 1, False)])
def test_result_is_kept_in_the_row_up_to_the_limit_and_downloads_the_same(api_for, member, node_a, run_a, send,
                                                                           size, in_row):
    _running(run_a, node_a)
    data = bytes((i * 7) % 256 for i in range(size))
    response = send(api_for(node_a), run_a, data)
    assert response.status_code == 200, response.content
    assert (response.data["result_size"], response.data["result_sha256"]) == (size, hashlib.sha256(data).hexdigest())
    run_a.refresh_from_db()
    assert (run_a.result_data is not None, bool(run_a.result)) == (in_row, not in_row)
    assert len(_files()) == (0 if in_row else 1)
    download = api_for(member).get(f"/api/runs/{run_a.pk}/result/")
    assert download.status_code == 200
    assert _body(download) == data
    assert download["X-Content-SHA256"] == hashlib.sha256(data).hexdigest()
    if in_row:
        assert download["Content-Length"] == str(size)


def test_a_failed_finish_leaves_the_row_as_it_was(api_for, node_a, node_b, run_a):
    _running(run_a, node_a)
    assert _finish_inline(api_for(node_b), run_a, b'{"stolen": 1}').status_code == 404
    run_a.refresh_from_db()
    assert (run_a.status, run_a.result_data, run_a.result_size) == (Run.Status.RUNNING, None, None)


def test_a_run_without_result_has_none_to_download(api_for, member, node_a, run_a):
    _running(run_a, node_a)
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/finish/", {"status": "crashed", "exit_code": 2},
                                format="json").status_code == 200
    run_a.refresh_from_db()
    assert not run_a.has_stored_result
    assert api_for(member).get(f"/api/runs/{run_a.pk}/result/").status_code == 404


def test_lists_do_not_load_results(api_for, member, node_a, run_a):
    _running(run_a, node_a)
    run_finish(run_id=run_a.pk, node=node_a, status=Run.Status.COMPLETED, result=b'{"n": 3}')
    with CaptureQueriesContext(connection) as queries:
        assert api_for(member).get("/api/runs/").status_code == 200
        assert api_for(member).get(f"/api/tasks/{run_a.task_id}/").status_code == 200
    assert not [q["sql"] for q in queries if "result_data" in q["sql"]]


def test_row_results_past_retention_are_purged_but_metadata_stays(collab, node_a, run_a,
                                                                   django_capture_on_commit_callbacks):
    collab.result_retention_days = 30
    collab.save()
    _running(run_a, node_a)
    run_finish(run_id=run_a.pk, node=node_a, status=Run.Status.COMPLETED, result=ContentFile(b'{"n": 10}'))
    Run.objects.filter(pk=run_a.pk).update(finished_at=timezone.now() - timedelta(days=31))
    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_results.delay().get() == 1
    assert purge_expired_results.delay().get() == 0
    run_a.refresh_from_db()
    assert (run_a.result_data, run_a.result_size, len(run_a.result_sha256)) == (None, 9, 64)
    assert run_a.result_purged_at is not None and not run_a.has_stored_result


def test_a_task_with_row_results_is_deleted_with_them(api_for, owner, task, run_a, run_b, node_a, node_b):
    for run, node in ((run_a, node_a), (run_b, node_b)):
        run_claim(run_id=run.pk, node=node)
        run_finish(run_id=run.pk, node=node, status=Run.Status.COMPLETED, result=b"{}")
    assert api_for(owner).delete(f"/api/tasks/{task.pk}/").status_code == 204
    assert not Task.objects.filter(pk=task.pk).exists() and not Run.objects.filter(pk=run_a.pk).exists()


@pytest.mark.parametrize("send", [_finish_multipart, _finish_inline], ids=["multipart", "inline"])
def test_result_files_are_readable_by_the_server_only(api_for, node_a, run_a, send, settings):
    # Issue 13.13: they were written 0644 (world-readable).
    import os
    import stat

    _running(run_a, node_a)
    assert send(api_for(node_a), run_a, b"x" * (LIMIT + 1)).status_code == 200
    run_a.refresh_from_db()
    path = default_storage.path(run_a.result.name)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
