"""The portal's security page: setting up a second factor, logging in with it, and
logging out everywhere."""

import re
from datetime import datetime

import pyotp
import pytest
from django.core.cache import cache
from django.test import Client

from accounts.models import AuditEvent, RecoveryCode, SecondFactor
from tests import factories
from tests.portal.conftest import csrf_token


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


def _log_in(client: Client, username: str, otp: str = ""):
    token = csrf_token(client, "/portal/login/")
    return client.post("/portal/login/", {"username": username, "password": factories.PASSWORD, "otp": otp,
                                          "csrfmiddlewaretoken": token})


def _previous_code(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(datetime.now()) - 1)


def test_setting_up_an_authenticator_with_the_qr_code(browser_for, owner):
    client = browser_for(owner)
    page = client.get("/portal/security/")
    assert b"Set up an authenticator app" in page.content
    client.post("/portal/security/", {"action": "begin", "csrfmiddlewaretoken": csrf_token(client)})
    page = client.get("/portal/security/").content.decode()
    secret = SecondFactor.objects.get(user=owner).secret
    assert '<svg' in page and secret in page  # the QR code is drawn here, not fetched from elsewhere
    assert "http" not in re.search(r"<svg.*?</svg>", page, re.S).group(0).replace("http://www.w3.org", "")
    wrong = client.post("/portal/security/", {"action": "confirm", "code": "12345",
                                              "csrfmiddlewaretoken": csrf_token(client)})
    assert wrong.status_code == 400 and b"does not match" in wrong.content
    done = client.post("/portal/security/", {"action": "confirm", "code": pyotp.TOTP(secret).now(),
                                             "csrfmiddlewaretoken": csrf_token(client)})
    assert done.status_code == 200
    codes = re.findall(r"<code>([a-z0-9-]{19})</code>", done.content.decode())
    assert len(codes) == 10 and RecoveryCode.objects.filter(user=owner).count() == 10
    assert AuditEvent.objects.filter(verb="user.second_factor_enabled", target_id=str(owner.pk)).exists()
    after = client.get("/portal/security/").content.decode()
    assert secret not in after and codes[0] not in after and "10 recovery codes left" in after


def test_login_with_the_code_of_a_set_up_authenticator(owner):
    secret = factories.enrol_second_factor(owner)
    client = Client(enforce_csrf_checks=True)
    missing = _log_in(client, "owner")
    assert missing.status_code == 401 and b"authenticator" in missing.content
    wrong = _log_in(client, "owner", otp="000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    assert wrong.status_code == 401 and b"wrong, expired or already used" in wrong.content
    assert _log_in(client, "owner", otp=pyotp.TOTP(secret).now()).status_code == 302
    assert client.get("/portal/").status_code == 200


def test_a_user_who_must_have_a_second_factor_is_sent_to_set_one_up(owner, org_a):
    org_a.require_second_factor = True
    org_a.save(update_fields=["require_second_factor"])
    client = Client(enforce_csrf_checks=True)
    assert _log_in(client, "owner").status_code == 302
    response = client.get("/portal/")
    assert response.status_code == 302 and response["Location"] == "/portal/security/"
    assert b"must use a second factor" in client.get("/portal/security/").content


def test_log_out_everywhere_ends_this_and_every_other_session_and_token(browser_for, owner, api_for):
    here, elsewhere = browser_for(owner), browser_for(owner)
    api = api_for(owner)
    response = here.post("/portal/logout/everywhere/", {"csrfmiddlewaretoken": csrf_token(here)})
    assert response.status_code == 302 and response["Location"] == "/portal/login/"
    assert here.get("/portal/").status_code == 302
    assert elsewhere.get("/portal/").status_code == 302
    assert api.get("/api/organizations/").status_code == 401
    assert factories.last_event("user.sessions_ended").details["reason"] == "logout_everywhere"


def test_log_out_everywhere_needs_the_csrf_token(browser_for, owner):
    client = browser_for(owner)
    assert client.post("/portal/logout/everywhere/").status_code == 403
    assert client.get("/portal/").status_code == 200


def test_logging_out_is_audited(browser_for, owner):
    client = browser_for(owner)
    client.post("/portal/logout/", {"csrfmiddlewaretoken": csrf_token(client)})
    assert factories.last_event("user.logged_out").target_id == str(owner.pk)
