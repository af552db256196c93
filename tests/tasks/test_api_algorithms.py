"""REST API for the algorithm catalogue: submit, list, review."""

import pytest

from accounts.models import AuditEvent
from tasks.models import Algorithm
from tasks.services import algorithm_submit
from tests import factories

DIGEST = "sha256:" + "a" * 64


def _submit(user, name="cox", image="127.0.0.1:5000/cox", digest=DIGEST):
    return algorithm_submit(actor=user, name=name, image=image, digest=digest)


def _approved(user, root, **kwargs):
    return factories.approved_algorithm(_submit(user, **kwargs), root)


def test_researcher_submits_an_algorithm_awaiting_review(api_for, owner):
    body = {"name": "cox", "image": "127.0.0.1:5000/cox", "digest": DIGEST,
            "functions": [{"name": "partial", "kind": "partial"}]}
    response = api_for(owner).post("/api/algorithms/", body, format="json")
    assert response.status_code == 201
    assert response.data["status"] == Algorithm.Status.SUBMITTED
    assert response.data["submitted_by"] == owner.pk
    assert AuditEvent.objects.filter(verb="algorithm.submitted", target_id=str(response.data["id"])).exists()


def test_algorithm_submit_is_forbidden_to_a_viewer(api_for, viewer):
    body = {"name": "cox", "image": "127.0.0.1:5000/cox", "digest": DIGEST}
    assert api_for(viewer).post("/api/algorithms/", body, format="json").status_code == 403
    assert not Algorithm.objects.exists()


def test_algorithm_submit_refuses_anonymous_callers(anon):
    assert anon.post("/api/algorithms/", {}, format="json").status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"image": "x", "digest": DIGEST}, "name"),
    ({"name": "cox", "image": "x", "digest": "sha256:short"}, "digest"),
    ({"name": "cox", "image": "x", "digest": DIGEST, "functions": [{"kind": "partial"}]}, "functions"),
    ({"name": "cox", "image": "x", "digest": DIGEST, "functions": {"name": "f"}}, "functions"),
])
def test_algorithm_submit_names_the_bad_field(api_for, owner, body, field):
    response = api_for(owner).post("/api/algorithms/", body, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert not Algorithm.objects.exists()


def test_the_same_image_and_digest_cannot_be_submitted_twice(api_for, owner):
    _submit(owner)
    body = {"name": "again", "image": "127.0.0.1:5000/cox", "digest": DIGEST}
    response = api_for(owner).post("/api/algorithms/", body, format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.data


def test_catalogue_shows_approved_entries_and_own_submissions(api_for, owner, member, root):
    approved = _approved(member, root, name="approved", image="r/approved")
    own = _submit(owner, name="mine", image="r/mine")
    _submit(member, name="theirs", image="r/theirs")
    response = api_for(owner).get("/api/algorithms/")
    assert response.status_code == 200
    assert sorted(a["id"] for a in response.data["results"]) == sorted([approved.pk, own.pk])


def test_reviewer_sees_the_whole_catalogue_and_filters_by_status(api_for, owner, member, root):
    _approved(member, root, name="approved", image="r/approved")
    submitted = _submit(member, name="theirs", image="r/theirs")
    response = api_for(root).get("/api/algorithms/", {"status": "submitted"})
    assert [a["id"] for a in response.data["results"]] == [submitted.pk]


def test_algorithm_list_query_count_does_not_grow_with_entries(api_for, owner, root, django_assert_num_queries):
    for i in range(5):
        _approved(owner, root, name=f"algo{i}", image=f"r/a{i}")
    client = api_for(owner)
    # user, rules, page (a short first page is its own count), the page's approvals
    with django_assert_num_queries(4):
        assert len(client.get("/api/algorithms/").data["results"]) == 5


def test_algorithm_list_refuses_anonymous_callers(anon):
    assert anon.get("/api/algorithms/").status_code == 401


def test_a_submission_by_someone_else_is_absent_before_approval(api_for, owner, member):
    theirs = _submit(member)
    assert api_for(owner).get(f"/api/algorithms/{theirs.pk}/").status_code == 404


def test_global_reviewer_cannot_approve_without_a_signature_of_theirs(api_for, owner, root):
    # Approving with a real signature, and every way one can be wrong: tests/tasks/test_catalogue.py.
    algorithm = _submit(owner)
    response = api_for(root).post(f"/api/algorithms/{algorithm.pk}/review/",
                                  {"status": "approved", "note": "checked the Dockerfile"}, format="json")
    assert response.status_code == 400
    assert response.data["signature"][0].startswith("No signature: you have no signing key registered")
    algorithm.refresh_from_db()
    assert algorithm.status == Algorithm.Status.SUBMITTED
    assert not AuditEvent.objects.filter(verb="algorithm.approved", target_id=str(algorithm.pk)).exists()


def test_global_reviewer_rejects_an_algorithm_with_a_note(api_for, owner, root):
    algorithm = _submit(owner)
    response = api_for(root).post(f"/api/algorithms/{algorithm.pk}/review/",
                                  {"status": "rejected", "note": "reads the network"}, format="json")
    assert response.status_code == 200
    assert (response.data["status"], response.data["reviewer"], response.data["review_note"]) == (
        "rejected", root.pk, "reads the network")
    assert AuditEvent.objects.filter(verb="algorithm.rejected", target_id=str(algorithm.pk)).exists()


def test_review_is_forbidden_to_a_researcher(api_for, owner):
    algorithm = _submit(owner)
    response = api_for(owner).post(f"/api/algorithms/{algorithm.pk}/review/", {"status": "approved"}, format="json")
    assert response.status_code == 403
    algorithm.refresh_from_db()
    assert algorithm.status == Algorithm.Status.SUBMITTED


def test_review_is_forbidden_to_an_editor_without_global_scope(api_for, algorithm_editor, owner, root):
    algorithm = _approved(owner, root)
    response = api_for(algorithm_editor).post(f"/api/algorithms/{algorithm.pk}/review/",
                                              {"status": "retired"}, format="json")
    assert response.status_code == 403
    algorithm.refresh_from_db()
    assert algorithm.status == Algorithm.Status.APPROVED


def test_review_of_an_invisible_submission_is_not_found(api_for, algorithm_editor, member):
    theirs = _submit(member)
    response = api_for(algorithm_editor).post(f"/api/algorithms/{theirs.pk}/review/",
                                              {"status": "approved"}, format="json")
    assert response.status_code == 404


def test_review_refuses_anonymous_callers(anon, owner):
    algorithm = _submit(owner)
    assert anon.post(f"/api/algorithms/{algorithm.pk}/review/", {"status": "approved"}).status_code == 401


@pytest.mark.parametrize("body", [{"status": "submitted"}, {"status": "maybe"}, {}])
def test_review_names_a_bad_outcome(api_for, owner, root, body):
    algorithm = _submit(owner)
    response = api_for(root).post(f"/api/algorithms/{algorithm.pk}/review/", body, format="json")
    assert response.status_code == 400
    assert "status" in response.data
