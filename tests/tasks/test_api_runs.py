"""REST API for runs: lists and pages, the node's claim/start/log/finish, result downloads."""

import base64
import hashlib
import math
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from accounts.models import AuditEvent
from tasks.models import Run, Task
from tasks.services import run_claim, run_finish, run_start, task_kill
from tasks.uploads import FORM_FRAMING_BYTES
from tests import factories


def _claimed(run, node):
    run_claim(run_id=run.pk, node=node)
    return run


def _running(run, node):
    run_claim(run_id=run.pk, node=node)
    run_start(run_id=run.pk, node=node)
    return run


def _finish(client, run, **form):
    return client.post(f"/api/runs/{run.pk}/finish/", form, format="multipart")


def _result(data: bytes, name="output"):
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def _body(response) -> bytes:
    """Collect a streamed download (an asynchronous iterator, as served under ASGI)."""

    async def collect():
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(collect)()


@pytest.fixture(autouse=True)
def results_as_files(settings):
    """Every result goes to storage as a file here, however small: these tests follow the
    files (none left behind by a failure). Results kept in the row: test_result_storage.py."""
    settings.VANTAGE_RESULT_IN_DATABASE_BYTES = 0


def _stored_files() -> list[str]:
    return default_storage.listdir("results")[1] if default_storage.exists("results") else []


# --- list, pages, retrieve -----------------------------------------------------------


def test_run_list_shows_the_collaboration_runs_to_a_partner_without_inputs_or_logs(api_for, member, run_a, run_b):
    response = api_for(member).get("/api/runs/")
    assert response.status_code == 200
    assert [r["id"] for r in response.data["results"]] == [run_a.pk, run_b.pk]
    assert not {"input", "log"} & set(response.data["results"][0])


def test_run_list_is_empty_for_an_outsider(api_for, outsider, run_a):
    assert api_for(outsider).get("/api/runs/").data["results"] == []


def test_run_list_is_forbidden_without_a_run_role(api_for, run_reader_less, run_a):
    assert api_for(run_reader_less).get("/api/runs/").status_code == 403


def test_run_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/runs/").status_code == 401


def test_node_lists_only_the_runs_of_its_organisation(api_for, node_a, run_a, run_b):
    response = api_for(node_a).get("/api/runs/")
    assert response.status_code == 200
    assert [r["id"] for r in response.data["results"]] == [run_a.pk]


def test_run_list_filters_by_status_task_organisation_and_node(api_for, owner, collab, org_a, org_b, node_a,
                                                               task, run_a, run_b):
    other = factories.make_task(owner, collab, [org_a])
    _claimed(run_a, node_a)
    client = api_for(owner)

    def ids(**query):
        response = client.get("/api/runs/", query)
        assert response.status_code == 200
        return [r["id"] for r in response.data["results"]]

    assert ids(status="claimed") == [run_a.pk]
    assert ids(task=other.pk) == [other.runs.get().pk]
    assert ids(organization=org_b.pk) == [run_b.pk]
    assert ids(node=node_a.pk) == [run_a.pk]
    assert ids(task=task.pk, status="pending") == [run_b.pk]


@pytest.mark.parametrize("query, field", [({"status": "asleep"}, "status"), ({"node": "x"}, "node")])
def test_run_list_names_a_bad_filter(api_for, owner, query, field):
    response = api_for(owner).get("/api/runs/", query)
    assert response.status_code == 400
    assert field in response.data


def test_run_list_query_count_does_not_grow_with_runs(api_for, owner, node_a, collab, org_a, org_b,
                                                      django_assert_num_queries):
    for _ in range(5):
        factories.make_task(owner, collab, [org_a, org_b])
    user_client, node_client = api_for(owner), api_for(node_a)
    # user, rules, page (a short first page is its own count)
    with django_assert_num_queries(3):
        assert len(user_client.get("/api/runs/").data["results"]) == 10
    # node, page
    with django_assert_num_queries(2):
        assert len(node_client.get("/api/runs/").data["results"]) == 5


def _finished_with(run, node, data: bytes, status=Run.Status.COMPLETED):
    _running(run, node)
    return run_finish(run_id=run.pk, node=node, status=status, exit_code=0, result=data)


def test_run_list_with_results_carries_each_small_result_inline(api_for, owner, settings, task, run_a, run_b,
                                                                 node_a, node_b):
    settings.VANTAGE_RESULT_IN_DATABASE_BYTES = 1024
    _finished_with(run_a, node_a, b'{"n": 1}')
    _running(run_b, node_b)
    response = api_for(owner).get("/api/runs/", {"task": task.pk, "with_result": "true"})
    assert response.status_code == 200
    runs = {r["id"]: r for r in response.data["results"]}
    assert base64.b64decode(runs[run_a.pk]["result"]) == b'{"n": 1}'
    assert runs[run_a.pk]["status"] == "completed" and runs[run_a.pk]["result_size"] == 8
    assert runs[run_b.pk]["result"] is None and runs[run_b.pk]["status"] == "running"
    # Without asking, a list carries no result at all.
    assert "result" not in api_for(owner).get("/api/runs/", {"task": task.pk}).data["results"][0]


def test_run_list_with_results_leaves_a_result_kept_as_a_file_to_its_download(api_for, owner, task, run_a,
                                                                              node_a):
    _finished_with(run_a, node_a, b'{"n": 2}')  # kept as a file: results_as_files
    listed = api_for(owner).get("/api/runs/", {"task": task.pk, "with_result": "true"}).data["results"]
    mine = next(r for r in listed if r["id"] == run_a.pk)
    assert mine["result"] is None and mine["result_size"] == 8
    assert _body(api_for(owner).get(f"/api/runs/{run_a.pk}/result/")) == b'{"n": 2}'


def test_run_list_with_results_shows_only_what_the_caller_may_see(api_for, settings, task, run_a, run_b, node_a,
                                                                  node_b, outsider):
    settings.VANTAGE_RESULT_IN_DATABASE_BYTES = 1024
    _finished_with(run_a, node_a, b"a")
    _finished_with(run_b, node_b, b"b")
    assert api_for(outsider).get("/api/runs/", {"with_result": "true"}).data["results"] == []
    listed = api_for(node_b).get("/api/runs/", {"with_result": "true"}).data["results"]
    assert [(r["id"], r["result"]) for r in listed] == [(run_b.pk, base64.b64encode(b"b").decode())]


def test_run_list_names_a_bad_with_result(api_for, owner):
    response = api_for(owner).get("/api/runs/", {"with_result": "maybe"})
    assert response.status_code == 400
    assert "with_result" in response.data


def test_run_list_with_results_takes_no_more_queries(api_for, owner, settings, node_a, collab, org_a, org_b,
                                                     django_assert_num_queries):
    settings.VANTAGE_RESULT_IN_DATABASE_BYTES = 1024
    for _ in range(5):
        task = factories.make_task(owner, collab, [org_a, org_b])
        _finished_with(task.runs.get(organization=org_a), node_a, b"{}")
    with django_assert_num_queries(2):  # node, page
        listed = api_for(node_a).get("/api/runs/", {"with_result": "true"}).data["results"]
    assert [base64.b64decode(r["result"]) for r in listed] == [b"{}"] * 5


@pytest.fixture
def many_runs(owner, collab, org_a, org_b):
    """61 runs: a prime count, so no page size but 1 and 61 divides it."""
    for _ in range(30):
        factories.make_task(owner, collab, [org_a, org_b])
    factories.make_task(owner, collab, [org_a])
    return list(Run.objects.order_by("id").values_list("id", flat=True))


@pytest.mark.parametrize("page_size", [1, 7, 50, 1000])
def test_walking_next_links_visits_every_run_once(api_for, owner, many_runs, page_size):
    client = api_for(owner)
    url, seen, pages = f"/api/runs/?page_size={page_size}", [], 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        assert response.data["count"] == len(many_runs)
        seen += [r["id"] for r in response.data["results"]]
        url = response.data["next"]
        pages += 1
    assert seen == many_runs
    assert pages == math.ceil(len(many_runs) / page_size)


@pytest.mark.parametrize("page_size", [1, 7])
def test_next_links_keep_the_filter(api_for, owner, many_runs, org_a, page_size):
    client = api_for(owner)
    expected = list(Run.objects.filter(organization=org_a).order_by("id").values_list("id", flat=True))
    url, seen = f"/api/runs/?organization={org_a.pk}&page_size={page_size}", []
    while url:
        response = client.get(url)
        seen += [r["id"] for r in response.data["results"]]
        url = response.data["next"]
    assert seen == expected


@pytest.mark.parametrize("page_size", [1, 7])
def test_walking_task_pages_visits_every_task_once(api_for, owner, many_runs, page_size):
    client = api_for(owner)
    url, seen = f"/api/tasks/?page_size={page_size}", []
    while url:
        response = client.get(url)
        seen += [t["id"] for t in response.data["results"]]
        url = response.data["next"]
    assert seen == sorted(set(Run.objects.values_list("task_id", flat=True)), reverse=True)


def test_run_detail_shows_a_user_the_log_but_not_the_input(api_for, member, run_a, node_a):
    _running(run_a, node_a)
    api_for(node_a).post(f"/api/runs/{run_a.pk}/log/", {"text": "loading data\n"}, format="json")
    response = api_for(member).get(f"/api/runs/{run_a.pk}/")
    assert response.status_code == 200
    assert response.data["log"] == "loading data\n"
    assert response.data["status"] == "running"
    assert response.data["kill_requested"] is False
    assert "input" not in response.data


def test_run_detail_gives_the_node_its_input_and_what_to_run(api_for, node_a, task, run_a):
    response = api_for(node_a).get(f"/api/runs/{run_a.pk}/")
    assert response.status_code == 200
    assert base64.b64decode(response.data["input"]) == bytes(run_a.input)
    assert (response.data["image"], response.data["method"], response.data["job"]) == (task.image, "partial", task.pk)


def test_run_detail_tells_the_node_who_created_the_task_and_where(api_for, owner, node_a, task, run_a):
    response = api_for(node_a).get(f"/api/runs/{run_a.pk}/")
    assert response.status_code == 200
    assert {key: response.data[key] for key in ("created_by", "created_by_username", "collaboration_encrypted",
                                                 "parent", "created_by_run")} == {
        "created_by": owner.pk, "created_by_username": "owner", "collaboration_encrypted": False,
        "parent": None, "created_by_run": None}


def test_run_detail_names_the_parent_of_a_subtask_and_the_run_that_created_it(api_for, owner, collab, org_a,
                                                                             node_a, task, run_a):
    subtask = factories.make_task(owner, collab, [org_a], method="partial")
    # Flagged after creation: an encrypted collaboration takes only sealed inputs (test_encrypted_inputs.py).
    collab.encrypted = True
    collab.save(update_fields=["encrypted"])
    Task.objects.filter(pk=subtask.pk).update(parent=task, created_by_run=run_a, created_by=None)
    response = api_for(node_a).get(f"/api/runs/{subtask.runs.get().pk}/")
    assert response.status_code == 200
    assert (response.data["parent"], response.data["created_by_run"]) == (task.pk, run_a.pk)
    assert (response.data["created_by"], response.data["created_by_username"]) == (None, None)
    assert response.data["collaboration_encrypted"] is True


def test_node_run_detail_query_count_includes_the_creator_and_collaboration(api_for, node_a, run_a,
                                                                            django_assert_num_queries):
    client = api_for(node_a)
    # node, run with its task, creator and collaboration
    with django_assert_num_queries(2):
        assert client.get(f"/api/runs/{run_a.pk}/").data["created_by_username"] == "owner"


def test_run_detail_is_absent_for_an_outsider(api_for, outsider, run_a):
    assert api_for(outsider).get(f"/api/runs/{run_a.pk}/").status_code == 404


def test_run_detail_of_another_organisation_is_absent_for_a_node(api_for, node_b, run_a):
    assert api_for(node_b).get(f"/api/runs/{run_a.pk}/").status_code == 404


def test_run_detail_is_forbidden_without_a_run_role(api_for, run_reader_less, run_a):
    assert api_for(run_reader_less).get(f"/api/runs/{run_a.pk}/").status_code == 403


def test_run_detail_refuses_anonymous_callers(anon, run_a):
    assert anon.get(f"/api/runs/{run_a.pk}/").status_code == 401


# --- claim ---------------------------------------------------------------------------


def test_node_claims_a_pending_run_and_gets_its_input(api_for, node_a, run_a):
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/claim/")
    assert response.status_code == 200
    assert (response.data["status"], response.data["node"]) == ("claimed", node_a.pk)
    assert base64.b64decode(response.data["input"]) == bytes(run_a.input)
    assert AuditEvent.objects.filter(verb="run.claimed", target_id=str(run_a.pk)).exists()


def test_claim_tells_the_node_who_created_the_task_in_the_same_queries(api_for, owner, node_a, run_a,
                                                                      django_assert_num_queries):
    client = api_for(node_a)
    # node; savepoint, claim, run with its task, creator and collaboration, audit (3), release.
    # Audit: the chain's head read and locked, moved on, the event.
    with django_assert_num_queries(8):
        response = client.post(f"/api/runs/{run_a.pk}/claim/")
    assert response.status_code == 200
    assert (response.data["created_by"], response.data["created_by_username"]) == (owner.pk, "owner")
    assert (response.data["collaboration_encrypted"], response.data["parent"]) == (False, None)


def test_second_claim_of_a_run_conflicts(api_for, org_a, collab, node_a, run_a):
    second, _ = factories.make_node(org_a, collab, name="node-a2")
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/claim/").status_code == 200
    response = api_for(second).post(f"/api/runs/{run_a.pk}/claim/")
    assert response.status_code == 409
    assert "detail" in response.data
    run_a.refresh_from_db()
    assert run_a.node_id == node_a.pk


def test_claim_of_a_killed_run_conflicts(api_for, owner, node_a, task, run_a):
    task_kill(actor=owner, task=task)
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/claim/").status_code == 409


def test_claim_of_another_organisations_run_is_not_found(api_for, node_b, run_a):
    assert api_for(node_b).post(f"/api/runs/{run_a.pk}/claim/").status_code == 404
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.PENDING


def test_claim_is_forbidden_to_users(api_for, owner, run_a):
    assert api_for(owner).post(f"/api/runs/{run_a.pk}/claim/").status_code == 403
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.PENDING


def test_claim_refuses_anonymous_callers(anon, run_a):
    assert anon.post(f"/api/runs/{run_a.pk}/claim/").status_code == 401


# --- start and log -------------------------------------------------------------------


def test_node_starts_the_run_it_claimed(api_for, node_a, run_a):
    _claimed(run_a, node_a)
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/start/")
    assert response.status_code == 200
    assert response.data["status"] == "running"
    assert response.data["started_at"] is not None


def test_start_of_an_unclaimed_run_conflicts(api_for, node_a, run_a):
    assert api_for(node_a).post(f"/api/runs/{run_a.pk}/start/").status_code == 409


def test_start_by_a_node_that_did_not_claim_conflicts(api_for, org_a, collab, node_a, run_a):
    second, _ = factories.make_node(org_a, collab, name="node-a2")
    _claimed(run_a, node_a)
    assert api_for(second).post(f"/api/runs/{run_a.pk}/start/").status_code == 409


def test_start_of_another_organisations_run_is_not_found(api_for, node_a, node_b, run_a):
    _claimed(run_a, node_a)
    assert api_for(node_b).post(f"/api/runs/{run_a.pk}/start/").status_code == 404


def test_start_is_forbidden_to_users(api_for, owner, node_a, run_a):
    _claimed(run_a, node_a)
    assert api_for(owner).post(f"/api/runs/{run_a.pk}/start/").status_code == 403


def test_log_appends_and_tells_the_node_about_a_kill_request(api_for, owner, node_a, task, run_a):
    _running(run_a, node_a)
    client = api_for(node_a)
    client.post(f"/api/runs/{run_a.pk}/log/", {"text": "one\n"}, format="json")
    task_kill(actor=owner, task=task)
    response = client.post(f"/api/runs/{run_a.pk}/log/", {"text": "two\n"}, format="json")
    assert response.status_code == 200
    assert response.data["kill_requested"] is True
    run_a.refresh_from_db()
    assert run_a.log == "one\ntwo\n"


def test_log_without_text_is_refused(api_for, node_a, run_a):
    _running(run_a, node_a)
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/log/", {}, format="json")
    assert response.status_code == 400
    assert "text" in response.data


def test_log_of_another_organisations_run_is_not_found(api_for, node_a, node_b, run_a):
    _running(run_a, node_a)
    assert api_for(node_b).post(f"/api/runs/{run_a.pk}/log/", {"text": "x"}, format="json").status_code == 404


def test_log_is_forbidden_to_users(api_for, owner, node_a, run_a):
    _running(run_a, node_a)
    assert api_for(owner).post(f"/api/runs/{run_a.pk}/log/", {"text": "x"}, format="json").status_code == 403


def test_log_refuses_anonymous_callers(anon, run_a):
    assert anon.post(f"/api/runs/{run_a.pk}/log/", {"text": "x"}, format="json").status_code == 401


# --- finish --------------------------------------------------------------------------


def test_node_finishes_a_run_with_its_result_file(api_for, node_a, run_a):
    _running(run_a, node_a)
    data = b'{"coefficients": [0.1, -0.2]}'
    response = _finish(api_for(node_a), run_a, status="completed", exit_code="0", log="done\n",
                       result=_result(data))
    assert response.status_code == 200
    assert (response.data["status"], response.data["exit_code"]) == ("completed", 0)
    assert (response.data["result_size"], response.data["result_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    run_a.refresh_from_db()
    with run_a.result.open("rb") as stored:
        assert stored.read() == data
    assert run_a.log == "done\n"
    assert AuditEvent.objects.filter(verb="run.completed", target_id=str(run_a.pk)).exists()


def test_node_reports_a_crash_without_a_result(api_for, node_a, run_a):
    _running(run_a, node_a)
    response = _finish(api_for(node_a), run_a, status="crashed", exit_code="3", error_kind="algorithm")
    assert response.status_code == 200
    assert (response.data["status"], response.data["error_kind"], response.data["result_size"]) == (
        "crashed", "algorithm", None)


@pytest.mark.parametrize("form, field", [
    ({"status": "running"}, "status"),
    ({}, "status"),
    ({"status": "crashed", "error_kind": "gremlins"}, "error_kind"),
    ({"status": "crashed", "exit_code": "three"}, "exit_code"),
])
def test_finish_names_the_bad_field(api_for, node_a, run_a, form, field):
    _running(run_a, node_a)
    response = _finish(api_for(node_a), run_a, **form)
    assert response.status_code == 400
    assert field in response.data
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.RUNNING


def test_finish_takes_only_a_result_file(api_for, node_a, run_a):
    _running(run_a, node_a)
    response = _finish(api_for(node_a), run_a, status="completed", output=_result(b"{}"))
    assert response.status_code == 400
    assert "output" in response.data
    assert _stored_files() == []


def test_finish_takes_one_result_file(api_for, node_a, run_a):
    _running(run_a, node_a)
    response = _finish(api_for(node_a), run_a, status="completed", result=[_result(b"{}"), _result(b"[]")])
    assert response.status_code == 400
    assert "result" in response.data
    assert _stored_files() == []


def _finish_inline(client, run, **body):
    return client.post(f"/api/runs/{run.pk}/finish/", body, format="json")


def test_node_finishes_a_run_with_its_result_inline(api_for, node_a, run_a):
    _running(run_a, node_a)
    data = bytes(range(256)) * 3  # binary, not only text
    response = _finish_inline(api_for(node_a), run_a, status="completed", exit_code=0, log="done\n",
                              result=base64.b64encode(data).decode())
    assert response.status_code == 200
    assert (response.data["result_size"], response.data["result_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    run_a.refresh_from_db()
    assert (run_a.status, run_a.exit_code, run_a.log) == (Run.Status.COMPLETED, 0, "done\n")
    with run_a.result.open("rb") as stored:
        assert stored.read() == data
    assert AuditEvent.objects.filter(verb="run.completed", target_id=str(run_a.pk)).exists()


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("inline", [True, False])
def test_a_finish_records_the_start_it_was_not_sent_with_what_ran_and_when(api_for, node_a, run_a, inline):
    _claimed(run_a, node_a)
    Run.objects.filter(pk=run_a.pk).update(claimed_at=timezone.now() - timedelta(seconds=10))
    run_a.refresh_from_db()
    started = run_a.claimed_at + timedelta(seconds=2)
    fields = {"status": "completed", "exit_code": 0, "result": base64.b64encode(b"{}").decode(),
              "digest": DIGEST, "started_at": started.isoformat()}
    if inline:
        response = _finish_inline(api_for(node_a), run_a, **fields)
    else:
        response = _finish(api_for(node_a), run_a, **{**fields, "result": _result(b"{}")})
    assert response.status_code == 200
    assert (response.data["executed_digest"], response.data["status"]) == (DIGEST, "completed")
    run_a.refresh_from_db()
    assert (run_a.started_at, run_a.digest) == (started, DIGEST)
    verbs = list(AuditEvent.objects.filter(target_id=str(run_a.pk), verb__startswith="run.").order_by("id")
                 .values_list("verb", "details"))
    assert verbs[-2:] == [("run.started", {"digest": DIGEST}), ("run.completed", verbs[-1][1])]


def test_a_finish_keeps_the_start_it_records_between_the_claim_and_now(api_for, owner, collab, org_a, node_a, run_a):
    node = api_for(node_a)
    _claimed(run_a, node_a)
    before = timezone.now()
    _finish_inline(node, run_a, status="completed", exit_code=0, digest=DIGEST, started_at="2001-01-01T00:00:00Z")
    run_a.refresh_from_db()
    assert run_a.started_at == run_a.claimed_at  # not before its claim
    other = factories.make_task(owner, collab, [org_a]).runs.get()
    _claimed(other, node_a)
    _finish_inline(node, other, status="completed", exit_code=0, digest=DIGEST, started_at="2999-01-01T00:00:00Z")
    other.refresh_from_db()
    assert before <= other.started_at <= other.finished_at  # not after now


def test_a_finish_leaves_a_reported_start_as_it_was(api_for, node_a, run_a):
    run_claim(run_id=run_a.pk, node=node_a)
    run_start(run_id=run_a.pk, node=node_a, digest="sha256:" + "cd" * 32)
    run_a.refresh_from_db()
    started = run_a.started_at
    _finish_inline(api_for(node_a), run_a, status="completed", exit_code=0, digest=DIGEST,
                   started_at=(started + timedelta(seconds=5)).isoformat())
    run_a.refresh_from_db()
    assert (run_a.started_at, run_a.digest) == (started, "sha256:" + "cd" * 32)
    assert AuditEvent.objects.filter(verb="run.started", target_id=str(run_a.pk)).count() == 1


def test_a_finish_without_a_digest_records_no_start(api_for, node_a, run_a):
    _claimed(run_a, node_a)
    _finish_inline(api_for(node_a), run_a, status="rejected", error_kind="policy")
    run_a.refresh_from_db()
    assert (run_a.status, run_a.started_at, run_a.digest) == (Run.Status.REJECTED, None, "")
    assert not AuditEvent.objects.filter(verb="run.started", target_id=str(run_a.pk)).exists()


@pytest.mark.parametrize("body, field", [({"digest": "md5:x"}, "digest"), ({"started_at": "yesterday"}, "started_at")])
def test_a_finish_names_a_bad_digest_or_start(api_for, node_a, run_a, body, field):
    _claimed(run_a, node_a)
    response = _finish_inline(api_for(node_a), run_a, status="completed", exit_code=0, **body)
    assert response.status_code == 400
    assert field in response.data
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.CLAIMED


def test_inline_finish_without_a_result_stores_no_file(api_for, node_a, run_a):
    _running(run_a, node_a)
    response = _finish_inline(api_for(node_a), run_a, status="crashed", exit_code=3, error_kind="algorithm")
    assert response.status_code == 200
    assert (response.data["status"], response.data["result_size"]) == ("crashed", None)
    assert _stored_files() == []


@pytest.mark.parametrize("body, field", [
    ({"status": "completed", "result": "not base64!"}, "result"),
    ({"status": "completed", "result": 12}, "result"),
    ({"status": "pending", "result": ""}, "status"),
    ({"status": "crashed", "exit_code": "three"}, "exit_code"),
])
def test_inline_finish_names_the_bad_field_and_keeps_no_file(api_for, node_a, run_a, body, field):
    _running(run_a, node_a)
    response = _finish_inline(api_for(node_a), run_a, **body)
    assert response.status_code == 400
    assert field in response.data
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.RUNNING
    assert _stored_files() == []


def test_inline_result_above_the_result_limit_answers_413_and_keeps_no_file(api_for, node_a, run_a, settings):
    settings.VANTAGE_MAX_RESULT_BYTES = 1024
    _running(run_a, node_a)
    response = _finish_inline(api_for(node_a), run_a, status="completed", result=base64.b64encode(b"z" * 1025).decode())
    assert response.status_code == 413
    run_a.refresh_from_db()
    assert (run_a.status, run_a.result_size) == (Run.Status.RUNNING, None)
    assert _stored_files() == []


def test_json_body_above_the_request_limit_answers_413_unread(api_for, node_a, run_a, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    _running(run_a, node_a)
    response = _finish_inline(api_for(node_a), run_a, status="completed", result=base64.b64encode(b"z" * 4096).decode())
    assert response.status_code == 413
    assert "VANTAGE_MAX_REQUEST_BYTES" in response.data["detail"]
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.RUNNING


def test_inline_finish_of_another_organisations_run_is_not_found(api_for, node_a, node_b, run_a):
    _running(run_a, node_a)
    response = _finish_inline(api_for(node_b), run_a, status="completed", result=base64.b64encode(b"{}").decode())
    assert response.status_code == 404
    assert _stored_files() == []


def test_finish_of_a_final_run_conflicts_and_keeps_no_file(api_for, node_a, run_a):
    _running(run_a, node_a)
    client = api_for(node_a)
    assert _finish(client, run_a, status="crashed", exit_code="1").status_code == 200
    response = _finish(client, run_a, status="completed", result=_result(b"{}"))
    assert response.status_code == 409
    assert _stored_files() == []


def test_finish_of_another_organisations_run_is_not_found_and_keeps_no_file(api_for, node_a, node_b, run_a):
    _running(run_a, node_a)
    response = _finish(api_for(node_b), run_a, status="completed", result=_result(b'{"stolen": true}'))
    assert response.status_code == 404
    assert _stored_files() == []
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.RUNNING


def test_finish_is_forbidden_to_users(api_for, owner, node_a, run_a):
    _running(run_a, node_a)
    assert _finish(api_for(owner), run_a, status="completed").status_code == 403


def test_finish_refuses_anonymous_callers(anon, run_a):
    assert _finish(anon, run_a, status="completed").status_code == 401


@pytest.fixture
def small_limits(settings, tmp_path):
    """A 1 KiB result limit, and upload temporaries in a folder of their own to count them."""
    settings.VANTAGE_MAX_RESULT_BYTES = 1024
    settings.VANTAGE_RUN_LOG_MAX_CHARS = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    return tmp_path / "uploads"


def test_finish_above_the_declared_limit_answers_413_before_parsing(api_for, node_a, run_a, small_limits):
    _running(run_a, node_a)
    # Not multipart at all: parsing it would fail with 400, so a 413 means it was never parsed.
    garbage = b"x" * (1024 + 4 * 1024 + FORM_FRAMING_BYTES + 1)
    response = api_for(node_a).generic("POST", f"/api/runs/{run_a.pk}/finish/", garbage,
                                       content_type="multipart/form-data; boundary=nothing")
    assert response.status_code == 413
    run_a.refresh_from_db()
    assert run_a.status == Run.Status.RUNNING
    assert list(small_limits.iterdir()) == []


def test_result_beyond_the_limit_is_cut_off_leaving_no_file_and_no_state_change(api_for, node_a, run_a,
                                                                                small_limits):
    _running(run_a, node_a)
    # Small enough for the declared-length check; the handler stops it at 1 KiB.
    response = _finish(api_for(node_a), run_a, status="completed", result=_result(b"y" * 5000))
    assert response.status_code == 413
    run_a.refresh_from_db()
    assert (run_a.status, run_a.result.name, run_a.result_size) == (Run.Status.RUNNING, "", None)
    assert list(small_limits.iterdir()) == []
    assert _stored_files() == []


def test_result_at_the_limit_is_accepted(api_for, node_a, run_a, small_limits):
    _running(run_a, node_a)
    response = _finish(api_for(node_a), run_a, status="completed", result=_result(b"z" * 1024))
    assert response.status_code == 200
    assert response.data["result_size"] == 1024
    assert list(small_limits.iterdir()) == []


# --- result download -----------------------------------------------------------------


@pytest.fixture
def finished_run(run_a, node_a):
    _running(run_a, node_a)
    data = b'{"hazard_ratio": 0.82}'
    from django.core.files.base import ContentFile

    return run_finish(run_id=run_a.pk, node=node_a, status=Run.Status.COMPLETED, exit_code=0,
                      result=ContentFile(data, name="output")), data


def test_user_downloads_a_result_as_a_streamed_attachment(api_for, member, finished_run):
    run, data = finished_run
    response = api_for(member).get(f"/api/runs/{run.pk}/result/")
    assert response.status_code == 200
    assert response.is_async
    assert response["Content-Length"] == str(len(data))
    assert response["X-Content-SHA256"] == hashlib.sha256(data).hexdigest()
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-result.json"'
    assert _body(response) == data


def test_node_downloads_the_result_of_its_own_organisations_run(api_for, node_a, finished_run):
    run, data = finished_run
    response = api_for(node_a).get(f"/api/runs/{run.pk}/result/")
    assert response.status_code == 200
    assert _body(response) == data


def test_node_cannot_download_another_organisations_result(api_for, node_b, finished_run):
    run, _ = finished_run
    assert api_for(node_b).get(f"/api/runs/{run.pk}/result/").status_code == 404


def test_result_of_a_run_without_one_is_not_found(api_for, owner, run_a):
    response = api_for(owner).get(f"/api/runs/{run_a.pk}/result/")
    assert response.status_code == 404
    assert "detail" in response.data


def test_result_missing_from_storage_is_not_found(api_for, owner, finished_run):
    run, _ = finished_run
    default_storage.delete(run.result.name)
    assert api_for(owner).get(f"/api/runs/{run.pk}/result/").status_code == 404


def test_result_is_absent_for_an_outsider(api_for, outsider, finished_run):
    run, _ = finished_run
    assert api_for(outsider).get(f"/api/runs/{run.pk}/result/").status_code == 404


def test_result_is_forbidden_without_a_run_role(api_for, run_reader_less, finished_run):
    run, _ = finished_run
    assert api_for(run_reader_less).get(f"/api/runs/{run.pk}/result/").status_code == 403


def test_result_refuses_anonymous_callers(anon, finished_run):
    run, _ = finished_run
    assert anon.get(f"/api/runs/{run.pk}/result/").status_code == 401


def test_start_and_finish_cost_a_fixed_number_of_queries(api_for, node_a, run_a, django_assert_num_queries):
    client = api_for(node_a)
    client.post(f"/api/runs/{run_a.pk}/claim/")
    # the node (read on every request: a rotated key stops it at once), savepoint, start,
    # run with its task, audit (3: head locked, moved on, event), release
    with django_assert_num_queries(8):
        assert client.post(f"/api/runs/{run_a.pk}/start/").status_code == 200
    # the node, savepoint, run locked (404 for a run the node cannot see), its update, audit (3), release
    with django_assert_num_queries(8):
        response = client.post(f"/api/runs/{run_a.pk}/finish/", {"status": "completed", "exit_code": "0"},
                               format="multipart")
    assert response.status_code == 200


def test_starting_a_run_of_another_organisation_is_absent_not_conflicting(api_for, node_b, node_a, run_a):
    api_for(node_a).post(f"/api/runs/{run_a.pk}/claim/")
    assert api_for(node_b).post(f"/api/runs/{run_a.pk}/start/").status_code == 404
    assert api_for(node_a).post("/api/runs/nonsense/start/").status_code == 404
