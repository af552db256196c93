"""Algorithms, tasks and runs in the admin: review, kill and delete through services; runs read-only."""

import hashlib

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from accounts.services import signing_key_add
from tasks.models import Algorithm, Run, Task
from tasks.services import algorithm_submit, run_claim, run_finish, run_start
from tests import factories
from tests.factories import last_event
from tests.nodeagent import images
from vantage_client import signing

DIGEST = "sha256:" + "c" * 64




@pytest.fixture
def algorithm(owner):
    return algorithm_submit(actor=owner, name="cox", image="127.0.0.1:5000/cox", digest=DIGEST)



def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- Algorithms ------------------------------------------------------------------------------


def test_submitting_an_algorithm_goes_through_algorithm_submit(staff, root):
    response = staff.post(reverse("admin:tasks_algorithm_add"), {
        "name": "km", "image": "127.0.0.1:5000/km", "digest": DIGEST, "description": "Kaplan-Meier",
        "functions": '[{"name": "partial_km", "kind": "partial"}]',
    })
    assert response.status_code == 302
    algorithm = Algorithm.objects.get(name="km")
    assert (algorithm.status, algorithm.submitted_by) == ("submitted", root)
    assert algorithm.functions == [{"name": "partial_km", "kind": "partial"}]
    assert last_event("algorithm.submitted").actor_id == root.pk


def test_the_functions_help_text_shows_its_example_whole(staff):
    import html
    import json

    from tasks.admin import FUNCTIONS_EXAMPLE

    body = staff.get(reverse("admin:tasks_algorithm_add")).content.decode()
    start = body.index("For example:<pre>") + len("For example:<pre>")
    shown = html.unescape(body[start:body.index("</pre>", start)])
    assert shown == FUNCTIONS_EXAMPLE
    assert json.loads(shown)[0]["arguments"]["required"] == ["duration", "event", "covariates"]


@pytest.mark.parametrize("field, value, message", [
    ("digest", "latest", "sha256:<64 hex digits>"),
    ("functions", '[{"kind": "partial"}]', "needs a 'name'"),
])
def test_bad_algorithm_input_is_a_form_error(staff, field, value, message):
    data = {"name": "km", "image": "127.0.0.1:5000/km", "digest": DIGEST, "functions": "[]", field: value}
    response = staff.post(reverse("admin:tasks_algorithm_add"), data)
    assert response.status_code == 200
    assert message in response.context["adminform"].form.errors[field][0]
    assert not Algorithm.objects.filter(name="km").exists()


def test_review_action_first_asks_for_a_note(staff, algorithm):
    response = staff.post(reverse("admin:tasks_algorithm_changelist"),
                          {"action": "approve", "_selected_action": [algorithm.pk]})
    assert response.status_code == 200
    assert 'name="note"' in response.content.decode()
    algorithm.refresh_from_db()
    assert algorithm.status == "submitted"


@pytest.mark.parametrize("action, status", [("reject", "rejected"), ("retire", "retired")])
def test_review_action_reviews_through_the_service_with_the_admin_as_reviewer(staff, root, algorithm, action,
                                                                              status):
    response = staff.post(reverse("admin:tasks_algorithm_changelist"), {
        "action": action, "_selected_action": [algorithm.pk], "confirm": "yes", "note": "Checked the image.",
    }, follow=True)
    assert messages_of(response) == [f"1 algorithm(s) {status}."]
    algorithm.refresh_from_db()
    assert (algorithm.status, algorithm.reviewer, algorithm.review_note) == (status, root, "Checked the image.")
    assert algorithm.reviewed_at is not None
    event = last_event(f"algorithm.{status}")
    assert (event.actor_id, event.details) == (root.pk, {"note": "Checked the image."})


def test_admin_approval_checks_the_reviewers_signature_and_refuses_the_submitters_own(staff, root, owner, settings,
                                                                                      tmp_path):
    """Through the admin's approve action, against the real loopback registry."""
    loopback = images.registry()
    settings.VANTAGE_REGISTRIES_FILE = str(images.registries_file(loopback, tmp_path))
    reg = signing.Registry(loopback.host, loopback.username, loopback.password)
    image, digest = images.push_unsigned(reg, "vantage-test/catalogue").split("@")
    algorithm = algorithm_submit(actor=owner, name="cox", image=image, digest=digest)
    page = staff.post(reverse("admin:tasks_algorithm_changelist"),
                      {"action": "approve", "_selected_action": [algorithm.pk]}).content.decode()
    assert 'name="signature_digest"' in page and "vantage-client sign" in page
    key = signing.generate_key()
    signing_key_add(actor=root, user=root, name="admin key", public_key=signing.public_key_pem(key.public_key()).decode())
    approve = {"action": "approve", "_selected_action": [algorithm.pk], "confirm": "yes"}
    response = staff.post(reverse("admin:tasks_algorithm_changelist"), approve, follow=True)
    (message,) = messages_of(response)
    assert message.startswith(f"{algorithm}: signature: No signature: "), message
    signed = signing.sign_image(reg, image, key)
    response = staff.post(reverse("admin:tasks_algorithm_changelist"), approve, follow=True)
    assert messages_of(response) == ["1 algorithm(s) approved."]
    approval = algorithm.approvals.get()
    assert (approval.reviewer, approval.signature_digest, approval.key_fingerprint) == (
        root, signed.payload_digest, signed.fingerprint)
    own = algorithm_submit(actor=root, name="mine", image="127.0.0.1:5000/mine", digest=DIGEST)
    response = staff.post(reverse("admin:tasks_algorithm_changelist"), {
        "action": "approve", "_selected_action": [own.pk], "confirm": "yes"}, follow=True)
    assert messages_of(response) == [f"{own}: status: You submitted this algorithm: a reviewer other than the submitter "
                                     "must approve it."]
    own.refresh_from_db()
    assert own.status == Algorithm.Status.SUBMITTED


def test_algorithms_are_immutable_and_never_deleted(staff, algorithm):
    url = reverse("admin:tasks_algorithm_change", args=[algorithm.pk])
    assert staff.post(url, {"name": "renamed", "image": "x", "digest": DIGEST}).status_code == 403
    assert staff.get(reverse("admin:tasks_algorithm_delete", args=[algorithm.pk])).status_code == 403


# --- Tasks and runs ----------------------------------------------------------------------------


@pytest.fixture
def task(owner, collab, org_a, org_b):
    return factories.make_task(owner, collab, [org_a, org_b], name="survival")


def test_task_changelist_shows_the_status_derived_from_runs(staff, task, node_a):
    run_claim(run_id=task.runs.get(organization=node_a.organization).pk, node=node_a)
    response = staff.get(reverse("admin:tasks_task_changelist"))
    [row] = response.context["cl"].result_list
    assert row.status == Task.Status.ACTIVE
    assert '<td class="field-derived_status">active</td>' in response.content.decode()


def test_task_changelist_filters_on_derived_status(staff, owner, collab, org_a, task):
    killed = factories.make_task(owner, collab, [org_a], name="stopped")
    staff.post(reverse("admin:tasks_task_changelist"), {"action": "kill", "_selected_action": [killed.pk]})
    response = staff.get(reverse("admin:tasks_task_changelist"), {"status": "killed"})
    assert [t.pk for t in response.context["cl"].result_list] == [killed.pk]


def test_kill_action_kills_through_the_service(staff, root, task, node_a):
    run_a = task.runs.get(organization=node_a.organization)
    run_claim(run_id=run_a.pk, node=node_a)
    response = staff.post(reverse("admin:tasks_task_changelist"),
                          {"action": "kill", "_selected_action": [task.pk]}, follow=True)
    assert messages_of(response) == ["1 task(s) killed."]
    statuses = dict(task.runs.values_list("organization_id", "status"))
    assert statuses == {run_a.organization_id: Run.Status.CLAIMED,
                        task.runs.exclude(pk=run_a.pk).get().organization_id: Run.Status.KILLED}
    run_a.refresh_from_db()
    assert run_a.kill_requested_at is not None
    assert last_event("task.killed").actor_id == root.pk


def test_tasks_are_not_added_or_edited_in_the_admin(staff, task):
    assert staff.get(reverse("admin:tasks_task_add")).status_code == 403
    assert staff.post(reverse("admin:tasks_task_change", args=[task.pk]), {"name": "x"}).status_code == 403


def test_deleting_a_task_with_open_runs_is_refused_with_a_message(staff, task):
    response = staff.post(reverse("admin:tasks_task_delete", args=[task.pk]), {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == ["The task still has open runs: kill it first."]
    assert Task.objects.filter(pk=task.pk).exists()


def test_deleting_a_finished_task_removes_it_with_its_runs(staff, root, task):
    staff.post(reverse("admin:tasks_task_changelist"), {"action": "kill", "_selected_action": [task.pk]})
    confirmation = staff.get(reverse("admin:tasks_task_delete", args=[task.pk]))
    assert confirmation.status_code == 200
    assert not confirmation.context["perms_lacking"]
    response = staff.post(reverse("admin:tasks_task_delete", args=[task.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Task.objects.filter(pk=task.pk).exists()
    assert not Run.objects.filter(task_id=task.pk).exists()
    assert last_event("task.deleted").actor_id == root.pk


def test_run_page_is_read_only_and_shows_result_size_and_hash(staff, settings, tmp_path, task, node_a):
    settings.MEDIA_ROOT = tmp_path
    run = task.runs.get(organization=node_a.organization)
    run_claim(run_id=run.pk, node=node_a)
    run_start(run_id=run.pk, node=node_a)
    payload = b'{"coef": [0.1, -0.2]}'
    run_finish(run_id=run.pk, node=node_a, status=Run.Status.COMPLETED, exit_code=0,
               result=ContentFile(payload, name="output"), log="fitted\n")
    url = reverse("admin:tasks_run_change", args=[run.pk])
    response = staff.get(url)
    page = response.content.decode()
    assert not response.context["adminform"].form.fields
    assert hashlib.sha256(payload).hexdigest() in page
    assert str(len(payload)) in page
    assert "fitted" in page
    assert staff.post(url, {"status": "failed"}).status_code == 403
    assert staff.get(reverse("admin:tasks_run_delete", args=[run.pk])).status_code == 403
