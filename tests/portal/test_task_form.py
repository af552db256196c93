"""The new-task form's help: the only collaboration chosen already, the database labels
the nodes report offered, and arguments checked against the catalogue's schema."""

import pytest

from collaborations.services import node_report
from tasks.models import Task
from tasks.services import algorithm_submit
from tests import factories
from tests.portal.conftest import csrf_token

DIGEST = "sha256:" + "d" * 64
COX = [
    {"name": "cox", "kind": "central",
     "arguments": {"type": "object", "required": ["duration", "event", "covariates"], "additionalProperties": False,
                   "properties": {"duration": {"type": "string"}, "event": {"type": "string"},
                                  "covariates": {"type": "array"}, "alpha": {"type": "number"}}}},
    {"name": "cox_site_terms", "kind": "partial", "arguments": {"type": "object"}},
]


@pytest.fixture
def cox(owner, root):
    algorithm = algorithm_submit(actor=owner, name="cox", image="127.0.0.1:5000/vantage/alg-cox", digest=DIGEST,
                                 functions=COX)
    return factories.approved_algorithm(algorithm, root)


def _post(client, data):
    return client.post("/portal/tasks/new/", {**data, "csrfmiddlewaretoken": csrf_token(client)})


def test_the_only_collaboration_is_chosen_already(browser_for, owner, collab):
    form = browser_for(owner).get("/portal/tasks/new/").context["form"]
    assert form["collaboration"].value() == collab.pk


def test_with_two_collaborations_none_is_chosen_for_the_user(browser_for, owner, collab, org_a):
    from tests import factories

    factories.make_collaboration([org_a], name="Second study")
    form = browser_for(owner).get("/portal/tasks/new/").context["form"]
    assert form["collaboration"].value() is None


def test_the_form_offers_the_database_labels_the_nodes_report(browser_for, owner, collab, node_a):
    node_report(node=node_a, config={"databases": [{"label": "gbsg2", "type": "csv"},
                                                      {"label": "rossi", "type": "parquet"}]})
    page = browser_for(owner).get("/portal/tasks/new/")
    assert page.context["form"].suggestions["databases"] == ["gbsg2:csv", "rossi:parquet"]
    body = page.content.decode()
    assert 'list="databases-suggestions"' in body and '<option value="rossi:parquet">' in body
    assert "The nodes report: gbsg2:csv, rossi:parquet." in body


@pytest.mark.parametrize("method, kwargs, field, message", [
    ("cox", '{"duration": "time", "event": "cens"}', "kwargs", "Missing required argument: covariates."),
    ("cox", '{"duration": "time", "event": "cens", "covariates": ["age"], "alpha": "x"}', "kwargs",
     'alpha must be number, not "x".'),
    ("cox", '{"duration": "time", "event": "cens", "covariates": "age"}', "kwargs",
     'covariates must be array, not "age".'),
    ("cox", '{"duration": "time", "event": "cens", "covariates": ["age"], "colour": 1}', "kwargs",
     "Unknown argument: colour (known: alpha, covariates, duration, event)."),
    ("kaplan_meier", "{}", "method", "The algorithm has no method 'kaplan_meier'; it has: cox, cox_site_terms."),
])
def test_arguments_are_checked_against_the_catalogue_schema(browser_for, owner, collab, org_a, cox, method, kwargs,
                                                            field, message):
    response = _post(browser_for(owner), {"collaboration": collab.pk, "organizations": [org_a.pk],
                                          "algorithm": cox.pk, "method": method, "kwargs": kwargs})
    assert response.status_code == 400
    assert message in response.context["form"].errors[field]
    assert not Task.objects.exists()


def test_arguments_that_fit_the_schema_make_the_task(browser_for, owner, collab, org_a, cox):
    response = _post(browser_for(owner), {
        "collaboration": collab.pk, "organizations": [org_a.pk], "algorithm": cox.pk, "method": "cox",
        "kwargs": '{"duration": "time", "event": "cens", "covariates": ["age"], "alpha": 0.1}'})
    assert response.status_code == 302
    assert Task.objects.get().algorithm == cox
