"""Health and version endpoints: open to anyone, no token needed."""

from django.db import OperationalError
from rest_framework.test import APIClient


def test_health_is_ok_when_the_database_answers(db):
    response = APIClient().get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_health_ignores_a_stale_token(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer garbage")
    assert client.get("/api/health/").status_code == 200


class _BrokenConnection:
    def cursor(self):
        raise OperationalError("connection refused")


def test_health_is_503_when_the_database_fails(db, monkeypatch):
    # Stopping the test database server is not possible from inside the test run, so the
    # connection the view uses is replaced by one that fails the way a dead server does.
    monkeypatch.setattr("vantage.views.connection", _BrokenConnection())
    response = APIClient().get("/api/health/")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unavailable"}


def test_version_reports_server_and_api_versions(settings):
    response = APIClient().get("/api/version/")
    assert response.status_code == 200
    assert response.json() == {"version": settings.SPECTACULAR_SETTINGS["VERSION"], "api_version": "1"}


def test_the_bare_address_leads_to_the_portal_and_the_api_documentation_stays(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/portal/"
    assert client.get("/api/docs/").status_code == 200


def test_the_api_root_answers_an_index_of_its_endpoints(db):
    response = APIClient().get("/api/")
    assert response.status_code == 200
    body = response.json()
    assert body["api_version"] == "1"
    assert body["endpoints"]["algorithms"] == "http://testserver/api/algorithms/"
    assert body["endpoints"]["docs"] == "http://testserver/api/docs/"
    # Every address in it answers (a list needs a login: 401, never 404).
    for url in body["endpoints"].values():
        path = url.removeprefix("http://testserver")
        assert APIClient().get(path).status_code in (200, 401, 405), path
