"""The API's content negotiation: its shortcut answers exactly as DRF's full rules do."""

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from core.negotiation import ContentNegotiation


def _request(accept: str | None, query: str = ""):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    return Request(APIRequestFactory().get(f"/api/organizations/{query}", **headers))


def _choice(negotiation, request, renderers):
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except Exception as exc:  # noqa: BLE001 - the answer compared is the exception's type
        return type(exc).__name__
    return type(renderer).__name__, media_type


@pytest.mark.parametrize("accept, query", [
    (None, ""), ("*/*", ""), ("application/json", ""), ("application/json; indent=2", ""), ("text/html", ""),
    ("text/html, application/json;q=0.9", ""), ("application/*", ""), ("application/xml", ""), ("*/*", "?format=json"),
    ("*/*", "?format=xml"), ("application/json", "?page=2"),
])
@pytest.mark.parametrize("renderers", [[JSONRenderer()], [JSONRenderer(), BrowsableAPIRenderer()]],
                         ids=["json", "json+browsable"])
def test_the_shortcut_picks_what_drf_picks(accept, query, renderers):
    assert _choice(ContentNegotiation(), _request(accept, query), renderers) == _choice(
        DefaultContentNegotiation(), _request(accept, query), renderers)


def test_the_api_answers_json_or_406(api_for, owner):
    client = api_for(owner)
    assert client.get("/api/organizations/", HTTP_ACCEPT="*/*")["Content-Type"] == "application/json"
    assert client.get("/api/organizations/", HTTP_ACCEPT="application/json").json()["results"]
    assert client.get("/api/organizations/", HTTP_ACCEPT="text/csv").status_code == 406
    assert client.get("/api/organizations/?format=json").status_code == 200
    assert client.get("/api/organizations/?format=yaml").status_code == 404
