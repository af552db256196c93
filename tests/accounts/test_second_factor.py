"""The second factor (TOTP, RFC 6238) through the API, the admin and its services, and one
lockout for the API, the portal and the admin (issue 13.2 and "Second factor")."""

from datetime import datetime

import pyotp
import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import AuditEvent, RecoveryCode, SecondFactor, User
from accounts.services import second_factor_begin, second_factor_confirm
from tests import factories


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


def _code(secret: str, *, steps_from_now: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(datetime.now()) + steps_from_now)


def _api_login(username, password=factories.PASSWORD, otp=None):
    body = {"username": username, "password": password}
    if otp is not None:
        body["otp"] = otp
    return APIClient().post("/api/token/", body, format="json")


@pytest.fixture
def enrolled(owner):
    owner.totp_secret = factories.enrol_second_factor(owner)
    return owner


# --- API ------------------------------------------------------------------------------


def test_api_login_needs_the_current_code_once_set_up(enrolled):
    missing = _api_login("owner")
    assert (missing.status_code, missing.data["code"]) == (401, "otp_required")
    assert missing["WWW-Authenticate"]
    ok = _api_login("owner", otp=_code(enrolled.totp_secret))
    assert ok.status_code == 200 and set(ok.data) == {"access", "refresh"}


def test_a_wrong_code_is_refused_and_counts_towards_the_lockout(enrolled):
    wrong = _api_login("owner", otp="000000" if _code(enrolled.totp_secret) != "000000" else "111111")
    assert (wrong.status_code, wrong.data["code"]) == (401, "otp_invalid")
    assert User.objects.get(pk=enrolled.pk).failed_logins == 1


def test_a_code_is_accepted_once(enrolled):
    code = _code(enrolled.totp_secret)
    assert _api_login("owner", otp=code).status_code == 200
    reused = _api_login("owner", otp=code)
    assert (reused.status_code, reused.data["code"]) == (401, "otp_invalid")


def test_an_older_code_than_the_last_accepted_one_is_refused(enrolled):
    assert _api_login("owner", otp=_code(enrolled.totp_secret)).status_code == 200
    assert _api_login("owner", otp=_code(enrolled.totp_secret, steps_from_now=-1)).data["code"] == "otp_invalid"


def test_an_expired_code_is_refused(enrolled):
    # Three steps (90 s) old: outside the one step of drift allowed either way.
    expired = _api_login("owner", otp=_code(enrolled.totp_secret, steps_from_now=-3))
    assert (expired.status_code, expired.data["code"]) == (401, "otp_invalid")


def test_otp_failures_lock_the_account(enrolled, settings):
    settings.VANTAGE_LOCKOUT_THRESHOLD = 2
    good = _code(enrolled.totp_secret)
    bad = "123456" if good != "123456" else "654321"
    assert _api_login("owner", otp=bad).data["code"] == "otp_invalid"
    assert _api_login("owner", otp=bad).data["code"] == "otp_invalid"
    assert _api_login("owner", otp=good).data["code"] == "account_locked"


def test_a_recovery_code_works_once(owner):
    factor = second_factor_begin(user=owner)
    codes = second_factor_confirm(user=owner, code=_code(factor.secret))
    assert len(codes) == 10 and len(set(codes)) == 10
    assert _api_login("owner", otp=codes[0].upper()).status_code == 200
    assert _api_login("owner", otp=codes[0]).data["code"] == "otp_invalid"
    assert factories.last_event("user.recovery_code_used").details == {"left": 9}


def test_recovery_codes_and_the_secret_are_kept_out_of_reach(owner):
    factor = second_factor_begin(user=owner)
    codes = second_factor_confirm(user=owner, code=_code(factor.secret))
    stored = list(RecoveryCode.objects.filter(user=owner).values_list("code_hash", flat=True))
    assert not set(codes) & set(stored) and all(len(h) == 64 for h in stored)
    events = list(AuditEvent.objects.filter(target_id=str(owner.pk)).values_list("details", flat=True))
    assert factor.secret not in str(events) and codes[0] not in str(events)


def test_no_api_output_shows_the_secret(enrolled, api_for):
    body = api_for(enrolled).get(f"/api/users/{enrolled.pk}/").content.decode()
    assert enrolled.totp_secret not in body and "second_factor" not in body


def test_confirming_needs_the_right_code(owner):
    second_factor_begin(user=owner)
    from core.errors import DomainError

    with pytest.raises(DomainError):
        second_factor_confirm(user=owner, code="12345")
    assert SecondFactor.objects.get(user=owner).confirmed_at is None


def test_staff_without_a_second_factor_cannot_log_in_to_the_api(org_a):
    user = factories.make_user(org_a, username="helpdesk", is_staff=True)
    response = _api_login(user.username)
    assert (response.status_code, response.data["code"]) == (401, "otp_enrolment_required")


def test_an_organisation_can_require_a_second_factor_of_its_members(owner, org_a, api_for, root):
    assert _api_login("owner").status_code == 200
    response = api_for(root).patch(f"/api/organizations/{org_a.pk}/", {"require_second_factor": True}, format="json")
    assert (response.status_code, response.data["require_second_factor"]) == (200, True)
    assert factories.last_event("organization.updated").details["require_second_factor"] is True
    assert _api_login("owner").data["code"] == "otp_enrolment_required"


def test_only_who_may_edit_the_organisation_may_change_the_requirement(owner, org_a, api_for):
    response = api_for(owner).patch(f"/api/organizations/{org_a.pk}/", {"require_second_factor": True}, format="json")
    assert response.status_code in (403, 404)
    org_a.refresh_from_db()
    assert org_a.require_second_factor is False


def test_the_requirement_must_be_a_boolean(org_a, api_for, root):
    response = api_for(root).patch(f"/api/organizations/{org_a.pk}/", {"require_second_factor": "often"},
                                   format="json")
    assert response.status_code == 400 and "require_second_factor" in response.data


# --- Admin ----------------------------------------------------------------------------


def _admin_login(client, username, password=factories.PASSWORD, otp=""):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password, "otp": otp})


def test_admin_login_asks_for_the_code(root):
    client = Client()
    page = client.get("/admin/login/")
    assert b'name="otp"' in page.content
    missing = _admin_login(client, "root")
    assert missing.status_code == 200 and b"authenticator" in missing.content
    assert client.get("/admin/").status_code == 302
    ok = _admin_login(client, "root", otp=_code(root.totp_secret))
    assert ok.status_code == 302 and ok["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_admin_login_counts_failures_and_refuses_a_locked_account(root, settings):
    """Issue 13.2: failures at /admin/login/ were not counted; a locked account still got in."""
    settings.VANTAGE_LOCKOUT_THRESHOLD = 2
    client = Client()
    _admin_login(client, "root", password="wrong-1")
    assert User.objects.get(pk=root.pk).failed_logins == 1
    _admin_login(client, "root", password="wrong-2")
    assert User.objects.get(pk=root.pk).locked_until is not None
    locked = _admin_login(client, "root", otp=_code(root.totp_secret))
    assert locked.status_code == 200 and b"locked until" in locked.content
    assert client.get("/admin/").status_code == 302


def test_an_account_locked_through_the_api_is_locked_in_the_portal_and_the_admin(root, settings):
    settings.VANTAGE_LOCKOUT_THRESHOLD = 2
    for _ in range(2):
        _api_login("root", password="wrong")
    assert b"locked until" in _admin_login(Client(), "root", otp=_code(root.totp_secret)).content
    portal = Client()
    response = portal.post("/portal/login/", {"username": "root", "password": factories.PASSWORD,
                                              "otp": _code(root.totp_secret)})
    assert response.status_code == 401 and b"locked until" in response.content


def test_admin_wrong_codes_count_towards_the_lockout(root):
    bad = "000000" if _code(root.totp_secret) != "000000" else "111111"
    response = _admin_login(Client(), "root", otp=bad)
    assert b"wrong, expired or already used" in response.content
    assert User.objects.get(pk=root.pk).failed_logins == 1


def test_admin_resets_a_users_second_factor_with_an_audited_action(staff, enrolled, root):
    session_client = Client()
    session_client.force_login(enrolled)
    response = staff.post("/admin/accounts/user/", {
        "action": "reset_second_factor", "_selected_action": [enrolled.pk]}, follow=True)
    assert b"Second factor reset for 1 user" in response.content
    assert not SecondFactor.objects.filter(user=enrolled).exists()
    assert not RecoveryCode.objects.filter(user=enrolled).exists()
    event = factories.last_event("user.second_factor_reset")
    assert (event.actor_id, event.target_id, event.details) == (root.pk, str(enrolled.pk), {"had_second_factor": True})
    assert factories.last_event("user.sessions_ended").details["reason"] == "second_factor_reset"
    assert session_client.get("/portal/").status_code == 302  # their sessions ended
    assert _api_login("owner").status_code == 200  # a password alone again, until they set up a new one


def test_admin_edits_the_organisation_requirement_and_it_is_audited(staff, org_a):
    page = staff.get(f"/admin/collaborations/organization/{org_a.pk}/change/")
    assert b"require_second_factor" in page.content
    response = staff.post(f"/admin/collaborations/organization/{org_a.pk}/change/", {
        "name": org_a.name, "country": org_a.country, "domain": org_a.domain, "public_key": "",
        "require_second_factor": "on"})
    assert response.status_code == 302
    org_a.refresh_from_db()
    assert org_a.require_second_factor is True
    assert factories.last_event("organization.updated").details["require_second_factor"] is True


def test_the_command_line_sets_up_a_second_factor_for_the_first_administrator(db, capsys):
    from django.core.management import call_command

    admin = User.objects.create_superuser("first-admin", "a@example.org", factories.PASSWORD)
    call_command("second_factor_setup", "first-admin")
    uri = capsys.readouterr().out.strip()
    assert uri.startswith("otpauth://totp/") and "first-admin" in uri
    totp = pyotp.parse_uri(uri)
    call_command("second_factor_setup", "first-admin", "--code", totp.at(datetime.now().timestamp() - 30))
    assert "Recovery codes" in capsys.readouterr().out
    answer = APIClient().post("/api/token/", {"username": "first-admin", "password": factories.PASSWORD,
                                              "otp": totp.now()}, format="json")
    assert answer.status_code == 200, answer.content
    assert SecondFactor.objects.get(user=admin).confirmed_at is not None


def test_the_command_line_refuses_an_unknown_user_and_a_wrong_code(db):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("second_factor_setup", "nobody")
    User.objects.create_superuser("first-admin", "a@example.org", factories.PASSWORD)
    call_command("second_factor_setup", "first-admin")
    with pytest.raises(CommandError, match="does not match"):
        call_command("second_factor_setup", "first-admin", "--code", "000000x")
