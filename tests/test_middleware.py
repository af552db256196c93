"""Browser middleware (sessions, CSRF, session user, messages) and bearer-token API requests."""

from django.core import checks
from django.test import Client

from core.middleware import is_token_api_request
from tests import factories


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return sorted(item["id"] for item in response.json()["results"])


def test_a_token_request_works_without_session_or_csrf_cookies(api_for, owner):
    response = api_for(owner).post("/api/organizations/", {"name": "x"}, format="json")
    assert response.status_code in (400, 403)  # judged by the API, not refused for a missing CSRF token
    listed = api_for(owner).get("/api/organizations/")
    assert listed.status_code == 200
    assert not listed.cookies  # no session, no CSRF cookie


def test_a_session_request_to_the_api_still_needs_its_csrf_token(owner):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    assert browser.get("/api/organizations/").status_code == 200
    refused = browser.post("/api/organizations/", {"name": "x"}, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]


def test_a_request_with_both_cookie_and_token_is_the_token_holder(api_for, owner, outsider):
    both = Client()
    both.force_login(owner)
    as_outsider = both.get("/api/organizations/", HTTP_AUTHORIZATION=f"Bearer {factories.access_token(outsider)}")
    assert _ids(as_outsider) == _ids(api_for(outsider).get("/api/organizations/"))
    assert _ids(as_outsider) != _ids(both.get("/api/organizations/"))


def test_a_bad_token_is_refused_even_with_a_valid_session(owner):
    both = Client()
    both.force_login(owner)
    assert both.get("/api/organizations/", HTTP_AUTHORIZATION="Bearer not-a-token").status_code == 401


def test_pages_outside_the_api_keep_their_session_with_a_bearer_header(staff):
    # The admin reads its session whatever else the request carries.
    assert staff.get("/admin/", HTTP_AUTHORIZATION="Bearer not-a-token").status_code == 200


def test_which_requests_skip_the_browser_middleware(rf):
    def request(path, authorization=None):
        return rf.get(path, **({"HTTP_AUTHORIZATION": authorization} if authorization else {}))

    assert is_token_api_request(request("/api/runs/", "Bearer abc"))
    assert is_token_api_request(request("/api/runs/", "bearer abc"))
    assert not is_token_api_request(request("/api/runs/"))
    assert not is_token_api_request(request("/api/runs/", "Basic abc"))
    assert not is_token_api_request(request("/admin/", "Bearer abc"))
    assert not is_token_api_request(request("/portal/", "Bearer abc"))


def test_the_admin_finds_its_middleware():
    errors = [e for e in checks.run_checks(tags=[checks.Tags.admin]) if e.level >= checks.ERROR]
    assert errors == []
