"""The catalogue's four eyes: approval by reviewers other than the submitter, with their
signatures recorded; what nodes read about a digest; the digest each run executed."""

import pytest

from accounts.models import AuditEvent
from tasks.models import Algorithm, AlgorithmApproval, Run
from tasks.services import algorithm_review, algorithm_submit, run_claim
from tests import factories

DIGEST = "sha256:" + "b" * 64
SIGNED = {"signature_digest": "sha256:" + "c" * 64, "key_fingerprint": "d" * 64}


@pytest.fixture
def second_root(org_b):
    return factories.make_user(org_b, roles=("root",), username="second-root")


@pytest.fixture
def submitted(root):
    return algorithm_submit(actor=root, name="cox", image="127.0.0.1:5000/vantage/alg-cox:1", digest=DIGEST)


def test_the_submitter_cannot_approve_their_own_algorithm(api_for, root, submitted):
    response = api_for(root).post(f"/api/algorithms/{submitted.pk}/review/", {"status": "approved", **SIGNED},
                                  format="json")
    assert response.status_code == 400
    assert "other than the submitter" in str(response.data["status"])
    submitted.refresh_from_db()
    assert submitted.status == Algorithm.Status.SUBMITTED and not AlgorithmApproval.objects.exists()


def test_another_reviewer_approves_and_the_approval_records_their_signature(api_for, second_root, submitted):
    response = api_for(second_root).post(f"/api/algorithms/{submitted.pk}/review/",
                                         {"status": "approved", "note": "read the code", **SIGNED}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["status"] == "approved" and response.data["reviewer"] == second_root.pk
    (approval,) = response.data["approvals"]
    assert approval["reviewer"] == second_root.pk
    assert (approval["signature_digest"], approval["key_fingerprint"]) == (SIGNED["signature_digest"],
                                                                           SIGNED["key_fingerprint"])
    event = AuditEvent.objects.get(verb="algorithm.approval")
    assert event.details["key_fingerprint"] == SIGNED["key_fingerprint"]


def test_two_other_reviewers_are_needed_when_the_server_asks_for_two(settings, root, second_root, org_c, submitted):
    settings.VANTAGE_CATALOGUE_REVIEWERS = 2
    third = factories.make_user(org_c, roles=("root",), username="third-root")
    first = algorithm_review(actor=second_root, algorithm=submitted, status="approved", **SIGNED)
    assert first.status == Algorithm.Status.SUBMITTED and first.approvals_missing == 1
    with pytest.raises(Exception, match="approved this algorithm already"):
        algorithm_review(actor=second_root, algorithm=submitted, status="approved")
    second = algorithm_review(actor=third, algorithm=submitted, status="approved")
    assert second.status == Algorithm.Status.APPROVED and second.reviewer == third


@pytest.mark.parametrize("field, value", [("signature_digest", "sha256:short"), ("key_fingerprint", "xyz")])
def test_a_malformed_signature_record_names_its_field(api_for, second_root, submitted, field, value):
    response = api_for(second_root).post(f"/api/algorithms/{submitted.pk}/review/",
                                         {"status": "approved", **{**SIGNED, field: value}}, format="json")
    assert response.status_code == 400 and field in response.data


def test_a_retired_algorithm_is_retired_for_nodes_and_not_approved_again(api_for, second_root, submitted, node_a):
    algorithm_review(actor=second_root, algorithm=submitted, status="approved", **SIGNED)
    status = api_for(node_a).get("/api/algorithms/catalogue-status/",
                                 {"image": "127.0.0.1:5000/vantage/alg-cox@" + DIGEST, "digest": DIGEST})
    assert status.status_code == 200 and status.data["status"] == "approved"
    algorithm_review(actor=second_root, algorithm=submitted, status="retired")
    status = api_for(node_a).get("/api/algorithms/catalogue-status/",
                                 {"image": "127.0.0.1:5000/vantage/alg-cox:1", "digest": DIGEST})
    assert status.data["status"] == "retired"
    response = api_for(second_root).post(f"/api/algorithms/{submitted.pk}/review/", {"status": "approved"},
                                         format="json")
    assert response.status_code == 400 and "submit it anew" in str(response.data["status"])


def test_catalogue_status_knows_nothing_of_another_repository_or_digest(api_for, node_a, submitted):
    other = {"image": "127.0.0.1:5000/someone/alg-cox", "digest": DIGEST}
    assert api_for(node_a).get("/api/algorithms/catalogue-status/", other).data["status"] == "unknown"
    assert api_for(node_a).get("/api/algorithms/catalogue-status/",
                               {"image": "127.0.0.1:5000/vantage/alg-cox", "digest": DIGEST}).data["status"] == "submitted"


def test_catalogue_status_is_for_nodes_and_checks_its_input(api_for, node_a, root, anon):
    query = {"image": "127.0.0.1:5000/vantage/alg-cox", "digest": DIGEST}
    assert api_for(root).get("/api/algorithms/catalogue-status/", query).status_code == 403
    assert anon.get("/api/algorithms/catalogue-status/", query).status_code == 401
    response = api_for(node_a).get("/api/algorithms/catalogue-status/", {"image": "x", "digest": "sha256:1"})
    assert response.status_code == 400 and "digest" in response.data


def test_the_run_records_the_digest_its_node_executed(api_for, node_a, task, run_a, owner):
    assert task.digest == ""  # created by image name
    run_claim(run_id=run_a.pk, node=node_a)
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/start/", {"digest": DIGEST}, format="json")
    assert response.status_code == 200 and response.data["executed_digest"] == DIGEST
    assert Run.objects.get(pk=run_a.pk).digest == DIGEST
    assert api_for(owner).get(f"/api/runs/{run_a.pk}/").data["executed_digest"] == DIGEST
    listed = api_for(owner).get("/api/runs/", {"task": task.pk}).data["results"]
    assert {r["id"]: r["executed_digest"] for r in listed}[run_a.pk] == DIGEST


def test_a_malformed_executed_digest_is_refused_and_the_run_stays_claimed(api_for, node_a, run_a):
    run_claim(run_id=run_a.pk, node=node_a)
    response = api_for(node_a).post(f"/api/runs/{run_a.pk}/start/", {"digest": "latest"}, format="json")
    assert response.status_code == 400 and "digest" in response.data
    assert Run.objects.get(pk=run_a.pk).status == Run.Status.CLAIMED
