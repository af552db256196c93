"""The portal's pages through Django's test client: sessions, scoping, roles, forms, CSRF.

Personas (tests/conftest.py): owner (org_a) and member (org_b) are researchers in
`collab`; viewer (org_a) may only read; outsider (org_c) is in another collaboration.
"""

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from accounts.models import AuditEvent, User
from collaborations.services import collaboration_archive, node_heartbeat
from tasks.models import Run, Task
from tasks.services import algorithm_submit, run_claim, run_start, task_create
from tests import factories
from tests.portal.conftest import csrf_token
from vantage_client import crypto

pytestmark = pytest.mark.django_db
DIGEST = "sha256:" + "c" * 64


def _login_redirect(response, path: str) -> bool:
    return response.status_code == 302 and response["Location"] == f"/portal/login/?next={path}"


# --- anonymous visitors -------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("get", "/portal/"),
    ("get", "/portal/collaborations/{collab}/"),
    ("get", "/portal/tasks/{task}/"),
    ("get", "/portal/tasks/new/"),
    ("post", "/portal/tasks/new/"),
    ("post", "/portal/tasks/{task}/kill/"),
])
def test_every_page_sends_an_anonymous_visitor_to_the_login_page(client, collab, task, method, path):
    path = path.format(collab=collab.pk, task=task.pk)
    response = getattr(client, method)(path)
    assert _login_redirect(response, path)
    assert Run.objects.filter(task=task, status=Run.Status.PENDING).count() == 2


def test_the_bare_address_and_the_login_page_need_no_session(client):
    assert client.get("/").headers["Location"] == "/portal/"
    page = client.get("/portal/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content and b'name="csrfmiddlewaretoken"' in page.content


# --- login and logout ---------------------------------------------------------------------


def _log_in(client: Client, password: str, username: str = "owner", next_url: str = ""):
    token = csrf_token(client, "/portal/login/")
    return client.post("/portal/login/", {"username": username, "password": password, "next": next_url,
                                          "csrfmiddlewaretoken": token})


def test_login_opens_a_session_and_follows_next(owner, collab):
    client = Client(enforce_csrf_checks=True)
    response = _log_in(client, factories.PASSWORD, next_url=f"/portal/collaborations/{collab.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/portal/collaborations/{collab.pk}/"
    assert client.get(response["Location"]).status_code == 200


def test_login_ignores_a_next_address_on_another_site(owner):
    response = _log_in(Client(enforce_csrf_checks=True), factories.PASSWORD, next_url="https://evil.example/")
    assert response.status_code == 302 and response["Location"] == "/portal/"


def test_a_wrong_password_is_refused_with_a_message_and_counts_towards_the_lockout(owner):
    response = _log_in(Client(enforce_csrf_checks=True), "not-the-password")
    assert response.status_code == 401
    assert b"Wrong username or password" in response.content
    assert User.objects.get(pk=owner.pk).failed_logins == 1


def test_the_account_locks_as_through_the_api_and_refuses_even_the_right_password(owner, settings):
    settings.VANTAGE_LOCKOUT_THRESHOLD = 2
    client = Client(enforce_csrf_checks=True)
    assert _log_in(client, "wrong-1").status_code == 401
    assert _log_in(client, "wrong-2").status_code == 401
    locked = _log_in(client, factories.PASSWORD)
    assert locked.status_code == 401 and b"locked until" in locked.content
    assert AuditEvent.objects.filter(verb="user.locked", target_id=str(owner.pk)).count() == 1
    assert client.get("/portal/").status_code == 302  # still no session


def test_a_successful_login_clears_earlier_failures(owner, settings):
    settings.VANTAGE_LOCKOUT_THRESHOLD = 2
    client = Client(enforce_csrf_checks=True)
    assert _log_in(client, "wrong").status_code == 401
    assert _log_in(client, factories.PASSWORD).status_code == 302
    assert User.objects.get(pk=owner.pk).failed_logins == 0


def test_a_disabled_account_cannot_log_in(owner):
    User.objects.filter(pk=owner.pk).update(is_active=False)
    assert _log_in(Client(enforce_csrf_checks=True), factories.PASSWORD).status_code == 401


def test_an_empty_login_form_answers_400_with_field_errors(db):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/portal/login/", {"csrfmiddlewaretoken": csrf_token(client, "/portal/login/")})
    assert response.status_code == 400
    assert response.context["form"].errors == {"username": ["This field is required."],
                                               "password": ["This field is required."]}


def test_login_without_the_csrf_token_is_refused(owner):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/portal/login/", {"username": "owner", "password": factories.PASSWORD})
    assert response.status_code == 403
    assert client.get("/portal/").status_code == 302


def test_logout_needs_a_post_with_the_csrf_token_and_ends_the_session(browser_for, owner):
    client = browser_for(owner)
    assert client.get("/portal/logout/").status_code == 405
    assert client.post("/portal/logout/").status_code == 403  # no token: still logged in
    assert client.get("/portal/").status_code == 200
    response = client.post("/portal/logout/", {"csrfmiddlewaretoken": csrf_token(client)})
    assert response.status_code == 302 and response["Location"] == "/portal/login/"
    assert _login_redirect(client.get("/portal/"), "/portal/")
    assert b"You are logged out." in client.get("/portal/login/").content


# --- dashboard ------------------------------------------------------------------------------


def test_dashboard_lists_the_users_collaborations_and_recent_jobs(browser_for, owner, collab, task, node_a):
    node_heartbeat(node_id=node_a.pk)
    page = browser_for(owner).get("/portal/")
    assert page.status_code == 200
    [summary] = page.context["collaborations"]
    assert (summary.collaboration, summary.organizations, summary.nodes_online, summary.nodes) == (collab, 2, 1, 1)
    assert [t.pk for t in page.context["tasks"]] == [task.pk]
    assert page.context["tasks"][0].status == "pending"
    body = page.content.decode()
    assert f'href="/portal/tasks/{task.pk}/"' in body and "Breast cancer study" in body
    assert f'data-watch-collaborations="{collab.pk} "' in body


def test_dashboard_shows_an_outsider_nothing_of_other_collaborations(browser_for, outsider, collab, task):
    page = browser_for(outsider).get("/portal/")
    assert [s.collaboration.name for s in page.context["collaborations"]] == ["Other study"]
    assert page.context["tasks"] == []
    assert b"Breast cancer study" not in page.content


def test_dashboard_lists_jobs_not_their_subtasks(browser_for, owner, collab, org_a, task):
    Task.objects.filter(pk=factories.make_task(owner, collab, [org_a], name="sub").pk).update(parent=task)
    assert [t.pk for t in browser_for(owner).get("/portal/").context["tasks"]] == [task.pk]


# --- collaboration page ---------------------------------------------------------------------


def test_collaboration_page_shows_organisations_nodes_with_status_and_tasks(
    browser_for, member, collab, task, node_a, node_b
):
    node_heartbeat(node_id=node_b.pk)
    page = browser_for(member).get(f"/portal/collaborations/{collab.pk}/")
    assert page.status_code == 200
    assert [o.name for o in page.context["organizations"]] == ["Hospital A", "Hospital B"]
    assert {n.name: n.status for n in page.context["nodes"]} == {"node-a": "offline", "node-b": "online"}
    assert [t.pk for t in page.context["tasks"]] == [task.pk]
    assert page.context["may_create"] is True
    assert b'class="status status-online">online<' in page.content


def test_collaboration_page_is_404_for_an_outsider_and_for_unknown_ids(browser_for, outsider, owner, collab):
    response = browser_for(outsider).get(f"/portal/collaborations/{collab.pk}/")
    assert response.status_code == 404
    assert b"No such collaboration." in response.content
    assert browser_for(owner).get("/portal/collaborations/999999/").status_code == 404


def test_collaboration_page_offers_no_new_task_to_a_viewer(browser_for, viewer, collab):
    page = browser_for(viewer).get(f"/portal/collaborations/{collab.pk}/")
    assert page.status_code == 200 and page.context["may_create"] is False
    assert b"/portal/tasks/new/" not in page.content  # neither on the page nor in the menu


# --- task page --------------------------------------------------------------------------------


def test_task_page_shows_runs_logs_and_results_as_tables(browser_for, member, task, org_a, org_b, node_a, finish_run):
    result = {"type": "aggregate", "n": 120, "columns": {"age": {"mean": 53.25, "variance": 101.5}}}
    finish_run(task, org_a, node_a, json.dumps(result).encode(), log="reading gbsg2\n120 rows\n")
    page = browser_for(member).get(f"/portal/tasks/{task.pk}/")
    assert page.status_code == 200
    assert page.context["task"].status == "active"
    runs = {view.run.organization_id: view for view in page.context["runs"]}
    assert runs[org_a.pk].run.status == "completed" and runs[org_b.pk].run.status == "pending"
    assert runs[org_a.pk].preview.value == result and runs[org_b.pk].preview is None
    assert "input" in runs[org_a.pk].run.get_deferred_fields()  # never read back for a page
    body = page.content.decode()
    assert "<caption>aggregate</caption>" in body
    assert '<span class="num" title="53.25">53.25</span>' in body
    assert "120 rows" in body
    assert f'href="/api/runs/{runs[org_a.pk].run.pk}/result/"' in body
    assert page.context["may_kill"] is False  # a partner may read the task, not kill it


def test_task_page_shows_the_digest_each_run_executed(browser_for, member, task, org_a, node_a):
    digest = "sha256:" + "7" * 64
    run = task.runs.get(organization=org_a)
    run_claim(run_id=run.pk, node=node_a)
    run_start(run_id=run.pk, node=node_a, digest=digest)
    body = browser_for(member).get(f"/portal/tasks/{task.pk}/").content.decode()
    assert f'<code class="meta" title="{digest}">{digest[:19]}…</code>' in body


def test_the_download_link_streams_the_result_to_the_session_and_not_to_an_outsider(
    browser_for, owner, outsider, task, org_a, node_a, finish_run
):
    run = finish_run(task, org_a, node_a, b'{"n": 7}')
    response = browser_for(owner).get(f"/api/runs/{run.pk}/result/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-result.json"'

    async def body():
        return b"".join([part async for part in response.streaming_content])

    assert async_to_sync(body)() == b'{"n": 7}'
    assert browser_for(outsider).get(f"/api/runs/{run.pk}/result/").status_code == 404


def test_task_page_explains_results_it_does_not_show(browser_for, owner, task, org_a, org_b, node_a, node_b,
                                                     finish_run, monkeypatch):
    finish_run(task, org_a, node_a, b"\x00\x01 not json")
    monkeypatch.setattr("portal.selectors.RESULT_PREVIEW_BYTES", 20)
    finish_run(task, org_b, node_b, b'{"values": [1, 2, 3, 4, 5, 6]}')
    page = browser_for(owner).get(f"/portal/tasks/{task.pk}/")
    states = {view.run.organization_id: view.preview.state for view in page.context["runs"]}
    assert states == {org_a.pk: "not_json", org_b.pk: "too_large"}
    assert b"Not JSON: download it to read it." in page.content
    assert b"too large to show here" in page.content


def test_task_page_does_not_decode_results_of_an_encrypted_collaboration(browser_for, org_a, finish_run):
    key = crypto.generate_private_key(2048)
    org_a.public_key = crypto.public_key_pem(key)
    org_a.save(update_fields=["public_key"])
    encrypted = factories.make_collaboration([org_a], name="Encrypted study", encrypted=True)
    researcher = factories.make_user(org_a, username="crypto")
    node, _key = factories.make_node(org_a, encrypted)
    sealed = crypto.encrypt(b'{"method": "summary", "args": [], "kwargs": {}}', key.public_key())
    task = task_create(actor=researcher, collaboration=encrypted, name="sealed", image="127.0.0.1:5000/s:1",
                       method="summary", organization_inputs={org_a.pk: sealed})
    finish_run(task, org_a, node, crypto.encrypt(b'{"n": 12}', key.public_key()))
    page = browser_for(researcher).get(f"/portal/tasks/{task.pk}/")
    assert [view.preview.state for view in page.context["runs"]] == ["encrypted"]
    assert b"decrypt it with the Python client" in page.content


def test_task_page_escapes_whatever_the_result_and_log_contain(browser_for, owner, task, org_a, node_a, finish_run):
    finish_run(task, org_a, node_a, b'{"<script>alert(1)</script>": "<img src=x onerror=alert(2)>"}',
               log="<script>alert(3)</script>")
    body = browser_for(owner).get(f"/portal/tasks/{task.pk}/").content.decode()
    assert "<script>alert" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "&lt;script&gt;alert(3)&lt;/script&gt;" in body


def test_task_page_lists_subtasks_and_watches_them(browser_for, owner, collab, org_a, task):
    subtask = factories.make_task(owner, collab, [org_a], name="partial")
    Task.objects.filter(pk=subtask.pk).update(parent=task, job=task)
    page = browser_for(owner).get(f"/portal/tasks/{task.pk}/")
    assert [t.pk for t in page.context["subtasks"]] == [subtask.pk]
    assert f'data-watch-tasks="{task.pk} {subtask.pk}"' in page.content.decode()
    # Folded under one line that counts them by status.
    assert '<details id="subtasks">\n    <summary>1 subtask: 1 pending</summary>' in page.content.decode()
    subtask_page = browser_for(owner).get(f"/portal/tasks/{subtask.pk}/").content.decode()
    assert f"Subtask of</dt><dd><a href=\"/portal/tasks/{task.pk}/\"" in subtask_page
    assert f"Kill job #{task.pk}</button>" in subtask_page  # task_kill stops the whole job


def test_task_page_is_404_for_an_outsider(browser_for, outsider, task):
    response = browser_for(outsider).get(f"/portal/tasks/{task.pk}/")
    assert response.status_code == 404 and b"No such task." in response.content


def test_task_page_query_count_does_not_grow_with_runs(browser_for, owner, collab, django_assert_num_queries):
    organizations = [factories.make_organization() for _ in range(6)]
    for organization in organizations:
        collab.organizations.add(organization)
    task = factories.make_task(owner, collab, organizations)
    client = browser_for(owner)
    # session, user, rules, task, its runs' summaries, runs, subtasks, organisation names,
    # the kill check, the user's organisation: none of them once per run.
    with django_assert_num_queries(10):
        assert client.get(f"/portal/tasks/{task.pk}/").status_code == 200


# --- kill -------------------------------------------------------------------------------------


def test_owner_kills_a_task_from_its_page(browser_for, owner, task):
    client = browser_for(owner)
    assert client.get(f"/portal/tasks/{task.pk}/").context["may_kill"] is True
    response = client.post(f"/portal/tasks/{task.pk}/kill/", {"csrfmiddlewaretoken": csrf_token(client)})
    assert response.status_code == 302 and response["Location"] == f"/portal/tasks/{task.pk}/"
    assert set(task.runs.values_list("status", flat=True)) == {Run.Status.KILLED}
    assert AuditEvent.objects.filter(verb="task.killed", target_id=str(task.pk), actor_id=owner.pk).exists()
    page = client.get(response["Location"])
    assert b"Kill requested: 2 open run(s)" in page.content and page.context["may_kill"] is False


def test_killing_a_finished_task_changes_nothing_and_says_so(browser_for, owner, task):
    client = browser_for(owner)
    client.post(f"/portal/tasks/{task.pk}/kill/", {"csrfmiddlewaretoken": csrf_token(client)})
    client.get(f"/portal/tasks/{task.pk}/")  # read the first message
    client.post(f"/portal/tasks/{task.pk}/kill/", {"csrfmiddlewaretoken": csrf_token(client)})
    assert b"Nothing to kill" in client.get(f"/portal/tasks/{task.pk}/").content


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_kill_is_403_for_a_user_whose_roles_do_not_allow_it(browser_for, request, task, persona):
    client = browser_for(request.getfixturevalue(persona))
    response = client.post(f"/portal/tasks/{task.pk}/kill/", {"csrfmiddlewaretoken": csrf_token(client)})
    assert response.status_code == 403
    assert b"Your roles do not allow edit on this task." in response.content
    assert set(task.runs.values_list("status", flat=True)) == {Run.Status.PENDING}


def test_kill_is_404_for_an_outsider(browser_for, outsider, task):
    client = browser_for(outsider)
    assert client.post(f"/portal/tasks/{task.pk}/kill/", {"csrfmiddlewaretoken": csrf_token(client)}).status_code == 404
    assert set(task.runs.values_list("status", flat=True)) == {Run.Status.PENDING}


def test_kill_needs_post_and_the_csrf_token(browser_for, owner, task):
    client = browser_for(owner)
    assert client.get(f"/portal/tasks/{task.pk}/kill/").status_code == 405
    assert client.post(f"/portal/tasks/{task.pk}/kill/").status_code == 403
    assert set(task.runs.values_list("status", flat=True)) == {Run.Status.PENDING}


# --- new task ---------------------------------------------------------------------------------


@pytest.fixture
def task_form(collab, org_a, org_b):
    return {
        "collaboration": collab.pk, "organizations": [org_a.pk, org_b.pk], "algorithm": "",
        "image": "127.0.0.1:5000/vantage/alg-summary", "method": "summary",
        "kwargs": '{"columns": ["age", "tsize"]}', "databases": "gbsg2:csv", "name": "", "description": "",
    }


def _create(client: Client, data: dict):
    return client.post("/portal/tasks/new/", {**data, "csrfmiddlewaretoken": csrf_token(client)})


def test_new_task_form_offers_the_users_collaborations_and_their_organisations(
    browser_for, owner, collab, other_collab, org_a, org_b
):
    page = browser_for(owner).get(f"/portal/tasks/new/?collaboration={collab.pk}")
    assert page.status_code == 200
    form = page.context["form"]
    assert list(form.fields["collaboration"].queryset) == [collab]
    assert list(form.fields["organizations"].queryset) == [org_a, org_b]
    assert form["collaboration"].value() == str(collab.pk)
    assert f'data-collaborations="{collab.pk}"' in page.content.decode()


def test_researcher_creates_a_task_from_the_form(browser_for, owner, collab, org_a, org_b, task_form):
    response = _create(browser_for(owner), task_form)
    task = Task.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/portal/tasks/{task.pk}/"
    assert (task.name, task.method, task.image, task.created_by) == (
        "summary", "summary", "127.0.0.1:5000/vantage/alg-summary", owner)
    assert task.databases == [{"label": "gbsg2", "type": "csv"}]
    inputs = {run.organization_id: json.loads(bytes(run.input)) for run in task.runs.all()}
    expected = {"method": "summary", "args": [], "kwargs": {"columns": ["age", "tsize"]}}
    assert inputs == {org_a.pk: expected, org_b.pk: expected}
    assert AuditEvent.objects.filter(verb="task.created", target_id=str(task.pk)).exists()


def test_a_task_from_an_approved_catalogue_algorithm_runs_its_pinned_image(browser_for, owner, root, task_form):
    algorithm = algorithm_submit(actor=owner, name="summary", image="127.0.0.1:5000/vantage/alg-summary",
                                 digest=DIGEST)
    factories.approved_algorithm(algorithm, root)
    response = _create(browser_for(owner), {**task_form, "image": "", "algorithm": algorithm.pk})
    assert response.status_code == 302
    task = Task.objects.get()
    assert (task.algorithm, task.image, task.digest) == (algorithm, algorithm.image, DIGEST)


@pytest.mark.parametrize("change, field, message", [
    ({"kwargs": "{columns: age}"}, "kwargs", "Not valid JSON: Expecting property name enclosed in double quotes"),
    ({"kwargs": "[1, 2]"}, "kwargs", "Must be a JSON object"),
    ({"organizations": []}, "organizations", "Choose at least one organisation."),
    ({"image": ""}, "image", "Give an image, or choose a catalogue algorithm."),
    ({"method": ""}, "method", "This field is required."),
    ({"databases": "GBSG2"}, "databases", "label 'GBSG2' must be lowercase letters"),
    ({"databases": "gbsg2:xls"}, "databases", "type 'xls' is not one of csv, parquet, sql, excel"),
    ({"databases": "a:csv:x"}, "databases", "write label or label:type"),
    ({"image": "127.0.0.1:5000/x@sha256:short"}, "image", "The image digest must read sha256:<64 hex digits>."),
    ({"collaboration": "999999"}, "collaboration", "Select a valid choice."),
])
def test_bad_task_input_answers_400_with_the_error_on_its_field(browser_for, owner, task_form, change, field, message):
    response = _create(browser_for(owner), {**task_form, **change})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == [field] and message in errors[field][0]
    assert escape(message.split("'")[0]).encode() in response.content
    assert not Task.objects.exists()


def test_an_organisation_outside_the_collaboration_is_refused_on_its_field(
    browser_for, root, collab, other_collab, org_c, task_form
):
    response = _create(browser_for(root), {**task_form, "organizations": [org_c.pk]})
    assert response.status_code == 400
    assert "not members of collaboration" in response.context["form"].errors["organizations"][0]
    assert not Task.objects.exists()


def test_an_image_and_an_algorithm_together_are_refused(browser_for, owner, root, task_form):
    algorithm = algorithm_submit(actor=owner, name="summary", image="127.0.0.1:5000/s", digest=DIGEST)
    factories.approved_algorithm(algorithm, root)
    response = _create(browser_for(owner), {**task_form, "algorithm": algorithm.pk})
    assert response.status_code == 400
    assert response.context["form"].errors["image"] == ["Give an image or choose a catalogue algorithm, not both."]


def test_another_collaboration_cannot_be_chosen(browser_for, outsider, task_form):
    response = _create(browser_for(outsider), task_form)
    assert response.status_code == 400
    assert response.context["form"].errors["collaboration"][0].startswith("Select a valid choice.")
    assert not Task.objects.exists()


def test_archived_and_encrypted_collaborations_take_no_tasks_from_the_portal(browser_for, owner, collab, org_a,
                                                                             task_form):
    encrypted = factories.make_collaboration([org_a], name="Encrypted study", encrypted=True)
    response = _create(browser_for(owner), {**task_form, "collaboration": encrypted.pk,
                                            "organizations": [org_a.pk]})
    assert response.status_code == 400
    assert "create its tasks with the Python client" in response.context["form"].errors["collaboration"][0]
    collaboration_archive(actor=None, collaboration=collab)
    assert _create(browser_for(owner), task_form).status_code == 400
    assert not Task.objects.exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_new_task_is_403_for_a_viewer(browser_for, viewer, task_form, method):
    client = browser_for(viewer)
    if method == "get":
        response = client.get("/portal/tasks/new/")
    else:
        response = _create(client, task_form)
    assert response.status_code == 403
    assert b"Your roles do not allow creating tasks." in response.content
    assert not Task.objects.exists()


def test_new_task_post_without_the_csrf_token_is_refused(browser_for, owner, task_form):
    assert browser_for(owner).post("/portal/tasks/new/", task_form).status_code == 403
    assert not Task.objects.exists()


# --- assets -----------------------------------------------------------------------------------


def test_the_portal_serves_its_own_script_and_stylesheet_without_a_session(client):
    page = client.get("/portal/login/").content.decode()
    assert '<script src="/portal/assets/portal.js?v=' in page and 'href="/portal/assets/portal.css?v=' in page
    script = client.get("/portal/assets/portal.js")
    assert script.status_code == 200 and script["Content-Type"].startswith("text/javascript")
    assert b"/ws/events/" in b"".join(script.streaming_content)
    assert client.get("/portal/assets/portal.css").status_code == 200
    assert client.get("/portal/assets/../views.py").status_code == 400  # refused, never read
    assert client.get("/portal/assets/missing.js").status_code == 404


def test_a_locked_until_in_the_past_no_longer_blocks(owner):
    User.objects.filter(pk=owner.pk).update(locked_until=timezone.now() - timedelta(minutes=1))
    assert _log_in(Client(enforce_csrf_checks=True), factories.PASSWORD).status_code == 302


def test_a_logged_in_user_opening_the_login_page_goes_on_to_next(browser_for, owner, collab):
    response = browser_for(owner).get(f"/portal/login/?next=/portal/collaborations/{collab.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/portal/collaborations/{collab.pk}/"


def test_pages_allow_only_the_portals_own_scripts_styles_and_connections(browser_for, client, owner, task):
    for response in (client.get("/portal/login/"), browser_for(owner).get(f"/portal/tasks/{task.pk}/"),
                     browser_for(owner).get("/portal/tasks/999999/")):
        policy = response["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy


def test_a_live_refresh_does_not_use_up_a_message_meant_for_the_next_page(browser_for, owner, task):
    client = browser_for(owner)
    client.post(f"/portal/tasks/{task.pk}/kill/", {"csrfmiddlewaretoken": csrf_token(client)})
    refresh = client.get(f"/portal/tasks/{task.pk}/", headers={"X-Requested-With": "fetch"})
    assert b"Kill requested" not in refresh.content
    assert b"Kill requested" in client.get(f"/portal/tasks/{task.pk}/").content


def test_dashboard_query_count_does_not_grow_with_tasks(browser_for, owner, collab, org_a, org_b,
                                                        django_assert_num_queries):
    for _ in range(8):
        factories.make_task(owner, collab, [org_a, org_b])
    client = browser_for(owner)
    # session, user, rules, collaborations, node counts, tasks, their runs, organisation
    # names, the user's organisation.
    with django_assert_num_queries(9):
        assert client.get("/portal/").status_code == 200


def test_new_task_form_suggests_the_images_and_methods_of_recent_jobs(browser_for, member, task):
    page = browser_for(member).get("/portal/tasks/new/")
    body = page.content.decode()
    assert 'list="image-suggestions"' in body and '<option value="127.0.0.1:5000/algo:1">' in body
    assert 'list="method-suggestions"' in body and '<option value="summary">' in body


@pytest.mark.parametrize("depth", [101, 900, 100_000])  # past the preview's limit; near and past Python's
def test_a_result_nested_too_deeply_is_offered_for_download(browser_for, owner, task, org_a, node_a, finish_run,
                                                            depth):
    finish_run(task, org_a, node_a, b"[" * depth + b"]" * depth)
    page = browser_for(owner).get(f"/portal/tasks/{task.pk}/")
    assert page.status_code == 200 and b"Nested too deeply to show here" in page.content


def test_a_result_nested_up_to_the_limit_is_shown(browser_for, owner, task, org_a, node_a, finish_run):
    finish_run(task, org_a, node_a, b'{"a": ' * 99 + b"[1]" + b"}" * 99)
    page = browser_for(owner).get(f"/portal/tasks/{task.pk}/")
    assert page.status_code == 200 and page.context["runs"][0].preview.state == "shown"


def test_new_task_form_lists_the_catalogues_functions_and_their_arguments(browser_for, owner, root):
    functions = [
        {"name": "summary_site", "kind": "partial", "arguments": {"type": "object", "properties": {}}},
        {"name": "summary", "kind": "central", "description": "Pooled per-column statistics.",
         "arguments": {"type": "object", "required": ["columns"],
                       "properties": {"columns": {"type": "array"}, "categorical": {"type": "array",
                                                                                     "default": None},
                                      "min_rows": {"type": "integer", "default": 10}, "odd": "not a schema"}}},
    ]
    algorithm = algorithm_submit(actor=owner, name="Summary statistics", image="127.0.0.1:5000/vantage/alg-summary",
                                 digest=DIGEST, functions=functions)
    factories.approved_algorithm(algorithm, root)
    page = browser_for(owner).get("/portal/tasks/new/")
    [entry] = page.context["form"].catalogue_guide
    assert [f.name for f in entry.functions] == ["summary", "summary_site"]  # central first
    assert [(a.name, a.type, a.required, a.default) for a in entry.functions[0].arguments] == [
        ("columns", "array", True, None), ("categorical", "array", False, None),
        ("min_rows", "integer", False, 10), ("odd", "", False, None)]
    body = page.content.decode()
    assert "<code>summary</code> <span class=\"tag\">central</span> Pooled per-column statistics." in body
    assert '<code>min_rows</code> <span class="meta">integer</span> <span class="meta">= 10</span>' in body
    assert '<option value="summary">' in body and '<option value="summary_site">' in body
