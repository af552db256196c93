"""Hostile input to the API: every error a 4xx in JSON with a message, never a 500 or HTML.

Ids beyond the 64-bit range of the primary-key columns (core.ids), JSON nested past
Python's recursion limit and NUL characters (core.parsers), unknown URLs and escaped
exceptions (core.api_errors). Runs on SQLite and PostgreSQL alike.
"""

import pytest
from django.http import HttpResponse
from django.urls import include, path

from accounts.models import Role
from tasks.models import Task
from tests.tasks.conftest import b64json

HUGE = "99999999999999999999"  # > 2**64


def _boom(request):
    raise RuntimeError("a bug escaping a view")


# Used by the test of escaped exceptions (pytest.mark.urls): the project's URLs plus one that fails.
urlpatterns = [
    path("api/boom/", _boom),
    path("api/plain/", lambda request: HttpResponse("<p>not json</p>", status=418)),
    path("", include("vantage.urls")),
]


def _assert_json_error(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    return response.json()


@pytest.mark.parametrize("body", [
    {"collaboration": 1e30},
    {"collaboration": 10**30},
    {"collaboration": -(10**30)},
    {"organizations": [{"id": 10**25, "input": ""}]},
])
def test_huge_ids_in_a_task_body_are_a_400_naming_the_field(api_for, owner, body):
    data = _assert_json_error(api_for(owner).post("/api/tasks/", {"name": "t", "method": "m", **body}, format="json"), 400)
    assert set(body) <= set(data)
    assert Task.objects.count() == 0


@pytest.mark.parametrize("url, body", [
    ("/api/collaborations/", {"name": "c", "organizations": [1, 10**25]}),
    ("/api/studies/", {"name": "s", "collaboration": 10**25, "organizations": []}),
    ("/api/nodes/", {"name": "n", "organization": 2**63, "collaboration": 1}),
    ("/api/users/", {"username": "u", "password": "p" * 12, "organization": -(2**64)}),
])
def test_huge_ids_in_organisation_and_other_id_lists_are_a_400(api_for, root, url, body):
    data = _assert_json_error(api_for(root).post(url, body, format="json"), 400)
    huge = next(key for key, value in body.items() if value in (10**25, 2**63, -(2**64)) or
                (isinstance(value, list) and 10**25 in value))
    assert huge in data


def test_huge_rule_ids_in_a_role_are_a_400(api_for, root):
    before = Role.objects.count()
    data = _assert_json_error(api_for(root).post("/api/roles/", {"name": "x", "rules": [10**25]}, format="json"), 400)
    assert "rules" in data
    assert Role.objects.count() == before


@pytest.mark.parametrize("method, url", [
    ("post", f"/api/runs/{HUGE}/claim/"),
    ("post", f"/api/runs/{HUGE}/start/"),
    ("post", f"/api/runs/{HUGE}/finish/"),
    ("get", f"/api/runs/{HUGE}/"),
    ("get", "/api/runs/9223372036854775808/"),  # 2**63: one past the largest id
])
def test_huge_path_ids_are_a_json_404_for_a_node(api_for, node_a, method, url):
    _assert_json_error(getattr(api_for(node_a), method)(url), 404)


@pytest.mark.parametrize("url", [
    f"/api/tasks/{HUGE}/", f"/api/organizations/{HUGE}/", f"/api/rules/{HUGE}/", f"/api/users/{HUGE}/",
    f"/api/collaborations/{HUGE}/", f"/api/nodes/{HUGE}/", f"/api/studies/{HUGE}/", f"/api/roles/{HUGE}/",
    f"/api/algorithms/{HUGE}/",
])
def test_huge_path_ids_are_a_json_404(api_for, root, url):
    _assert_json_error(api_for(root).get(url), 404)


# Every id filter of every list.
ID_FILTERS = [
    ("/api/runs/", "task"), ("/api/runs/", "organization"), ("/api/runs/", "node"),
    ("/api/tasks/", "collaboration"), ("/api/tasks/", "init_organization"), ("/api/tasks/", "parent"),
    ("/api/tasks/", "job"), ("/api/nodes/", "collaboration"), ("/api/nodes/", "organization"),
    ("/api/collaborations/", "organization"), ("/api/studies/", "collaboration"), ("/api/users/", "organization"),
]


@pytest.mark.parametrize("url, name", ID_FILTERS)
@pytest.mark.parametrize("value", ["-4e68", HUGE, "1e30", "0.5"])
def test_huge_or_fractional_id_filters_are_a_400_naming_the_parameter(api_for, root, url, name, value):
    data = _assert_json_error(api_for(root).get(url, {name: value}), 400)
    assert list(data) == [name]


@pytest.mark.parametrize("url, name", ID_FILTERS)
def test_an_id_filter_in_range_still_filters(api_for, root, url, name):
    response = api_for(root).get(url, {name: 9223372036854775807})
    assert response.status_code == 200
    assert response.json()["count"] == 0


@pytest.mark.parametrize("url", ["/api/tasks/", "/api/token/", "/api/node/token/"])
def test_json_nested_past_the_recursion_limit_is_a_400(api_for, owner, url):
    deep = "[" * 5000 + "]" * 5000
    response = api_for(owner).generic("POST", url, deep, content_type="application/json")
    assert "nested too deeply" in _assert_json_error(response, 400)["detail"]


def test_json_nested_just_below_the_limit_is_refused_by_the_serializer_not_a_500(api_for, owner):
    body = '{"name": "t", "method": "m", "databases": ' + "[" * 900 + "]" * 900 + "}"
    _assert_json_error(api_for(owner).generic("POST", "/api/tasks/", body, content_type="application/json"), 400)


@pytest.mark.parametrize("body, field", [
    ('{"config": {"labels": ["a\\u0000b"]}}', "config.labels.0"),
    ('{"config": {"k\\u0000": 1}}', "config.k\\u0000"),
])
def test_nul_characters_in_json_are_a_400_on_every_database(api_for, node_a, body, field):
    # PostgreSQL's jsonb refuses NUL; SQLite would have stored it: both answer 400 now.
    response = api_for(node_a).generic("POST", "/api/node/me/report/", body, content_type="application/json")
    assert _assert_json_error(response, 400) == {field: ["Null characters are not allowed."]}
    node_a.refresh_from_db()
    assert node_a.reported_config in ({}, None)


def test_an_escaped_backslash_before_u0000_is_not_a_nul(api_for, node_a):
    body = '{"config": {"path": "C:\\\\u0000"}}'  # the text C:\u0000, no NUL in it
    response = api_for(node_a).generic("POST", "/api/node/me/report/", body, content_type="application/json")
    assert response.status_code == 200, response.content
    node_a.refresh_from_db()
    assert node_a.reported_config == {"path": "C:\\u0000"}


@pytest.mark.parametrize("debug", [True, False])
def test_an_unknown_api_url_is_a_json_404(api_for, owner, settings, debug):
    settings.DEBUG = debug
    assert _assert_json_error(api_for(owner).get("/api/no-such-thing/"), 404)["code"] == "not_found"


@pytest.mark.urls("tests.test_api_input")
@pytest.mark.parametrize("debug", [True, False])
def test_an_exception_escaping_a_view_is_a_json_500_without_details(client, settings, debug):
    settings.DEBUG = debug
    client.raise_request_exception = False
    data = _assert_json_error(client.get("/api/boom/"), 500)
    assert data == {"detail": "Internal server error.", "code": "server_error"}


@pytest.mark.urls("tests.test_api_input")
def test_an_html_error_body_under_api_becomes_json(client):
    assert _assert_json_error(client.get("/api/plain/"), 418)["detail"] == "I'm a Teapot."


def test_pages_outside_the_api_keep_their_html_errors(client):
    response = client.get("/portal/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_task_description_beyond_the_bound_is_a_400(api_for, owner, collab, org_a):
    body = {"collaboration": collab.pk, "name": "t", "method": "m", "image": "127.0.0.1:5000/algo:1",
            "description": "x" * 10_001, "organizations": [{"id": org_a.pk, "input": b64json({"method": "m"})}]}
    data = _assert_json_error(api_for(owner).post("/api/tasks/", body, format="json"), 400)
    assert list(data) == ["description"]
    body["description"] = "x" * 10_000
    assert api_for(owner).post("/api/tasks/", body, format="json").status_code == 201
