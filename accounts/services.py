"""Writes for users and roles, logins, sessions and second factors; each audited in its
own transaction."""

import hashlib
import hmac
import secrets
from datetime import timedelta

import pyotp
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.tokens import default_token_generator
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import jobs
from accounts.audit import audit_record
from accounts.models import (
    Action, ApiLogin, RecoveryCode, Resource, Role, Rule, Scope, SecondFactor, SigningKey, User,
)
from accounts.permissions import forget_rule_scopes, rule_scopes, user_scope
from accounts.selectors import user_login_state
from core.errors import DomainError, NotAllowed
from vantage_client import signing

# The claim that ties a refresh token and its access tokens to their ApiLogin row.
LOGIN_CLAIM = "login"
WRONG_CREDENTIALS = "Wrong username or password, or the account is disabled."
TOTP_INTERVAL = 30
# Codes of the previous and the next 30 s step are accepted too (clock drift, typing time).
TOTP_DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10


def _require_user_scope(actor, action: str, organization_id: int | None) -> None:
    if actor is None:
        return
    scope = user_scope(actor, Resource.USER, action)
    if scope is None:
        raise NotAllowed(f"Your roles do not allow {action} on users.")
    if scope == Scope.GLOBAL:
        return
    if scope >= Scope.ORGANIZATION and organization_id == actor.organization_id:
        return
    raise NotAllowed(f"Your roles allow {action} on users only in your own organisation.")


def _require_may_manage(actor, user: User, changes: set[str]) -> None:
    """Refuse what would let the actor act as a stronger user.

    Only superusers touch superusers. Setting the password or email (the way in, and the
    way to reset the password) of a user holding rights the actor lacks would hand the
    actor those rights, as granting the user's roles would (see _resolve_roles); so would
    their signing keys (signatures that count as the user's in catalogue approvals).
    """
    if actor is None or actor.is_superuser or actor.pk == user.pk:
        return
    if user.is_superuser:
        raise NotAllowed("Only a superuser can change or delete a superuser.")
    sensitive = changes & {"password", "email", "signing_keys"}
    if sensitive:
        held = rule_scopes(actor)
        if any(held.get(key, 0) < scope for key, scope in rule_scopes(user).items()):
            what = "signing keys" if sensitive == {"signing_keys"} else "password or email"
            raise NotAllowed(f"You cannot set the {what} of a user who holds rights you do not hold.")


def _require_may_edit(actor, user: User, changes: set[str]) -> None:
    """The right to edit users of `user`'s organisation, and nothing that would let the
    actor act as a stronger user (_require_may_manage)."""
    _require_user_scope(actor, Action.EDIT, user.organization_id)
    _require_may_manage(actor, user, changes)


def _resolve_roles(actor, roles: list) -> list[Role]:
    names = [r for r in roles if isinstance(r, str)]
    found = {role.name: role for role in Role.objects.filter(name__in=names)}
    missing = sorted(set(names) - set(found))
    if missing:
        raise DomainError(f"Unknown roles: {', '.join(missing)}.", field="roles")
    resolved = [found[r] if isinstance(r, str) else r for r in roles]
    if actor is not None and not actor.is_superuser:
        # Nobody hands out rules they do not hold themselves, at a scope they do not hold.
        held = rule_scopes(actor)
        for role in resolved:
            for rule in role.rules.all():
                if held.get((rule.resource, rule.action), 0) < rule.scope:
                    raise NotAllowed(f"You cannot grant role {role.name}: it holds {rule} which you do not.")
    return resolved


def _validate_password(password: str, user: User) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages})


@transaction.atomic
def user_create(
    *, actor, username: str, password: str, organization, email: str = "",
    first_name: str = "", last_name: str = "", roles: list | None = None, is_staff: bool = False,
    is_superuser: bool = False,
) -> User:
    """Create a user of an organisation with the given roles (names or Role objects)."""
    _require_user_scope(actor, Action.CREATE, organization.pk if organization else None)
    if (is_staff or is_superuser) and actor is not None and not actor.is_superuser:
        raise NotAllowed("Only a superuser can create staff users or superusers.")
    user = User(
        username=username, email=email, first_name=first_name, last_name=last_name,
        organization=organization, is_staff=is_staff, is_superuser=is_superuser,
    )
    _validate_password(password, user)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    resolved = _resolve_roles(actor, roles or [])
    user.roles.set(resolved)
    audit_record(actor=actor, verb="user.created", target=user, details={
        "roles": [r.name for r in resolved], "is_staff": is_staff, "is_superuser": is_superuser,
    })
    return user


@transaction.atomic
def user_update(*, actor, user: User, **changes) -> User:
    """Change a user's profile, password, active, staff or superuser flag, or roles."""
    _require_may_edit(actor, user, set(changes))
    allowed = {"email", "first_name", "last_name", "password", "is_active", "is_staff", "is_superuser", "roles"}
    unknown = set(changes) - allowed
    if unknown:
        raise DomainError(f"Cannot change {', '.join(sorted(unknown))}.")
    if {"is_staff", "is_superuser"} & set(changes) and actor is not None and not actor.is_superuser:
        raise NotAllowed("Only a superuser can change staff or superuser rights.")
    roles = changes.pop("roles", None)
    password = changes.pop("password", None)
    for field, value in changes.items():
        setattr(user, field, value)
    if password is not None:
        _validate_password(password, user)
        user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    details = {"fields": sorted(changes) + (["password"] if password is not None else [])}
    removed_roles = False
    if roles is not None:
        resolved = _resolve_roles(actor, roles)
        before = set(user.roles.values_list("pk", flat=True))
        removed_roles = bool(before - {role.pk for role in resolved})
        user.roles.set(resolved)
        forget_rule_scopes(user)
        details["roles"] = [r.name for r in resolved]
    audit_record(actor=actor, verb="user.updated", target=user, details=details)
    # Whatever a token or session was granted under the old password, flag or roles ends now.
    reason = _session_ending_reason(password_changed=password is not None, changes=changes,
                                    removed_roles=removed_roles)
    if reason is not None:
        user_end_sessions(actor=actor, user=user, reason=reason)
    return user


def _session_ending_reason(*, password_changed: bool, changes: dict, removed_roles: bool) -> str | None:
    """Why this change ends every session and token of the user, or None if it does not."""
    if password_changed:
        return "password_changed"
    if changes.get("is_active") is False:
        return "deactivated"
    if removed_roles or changes.get("is_staff") is False or changes.get("is_superuser") is False:
        return "role_removed"
    return None


@transaction.atomic
def user_delete(*, actor, user: User) -> None:
    """Delete a user; tasks they created keep existing without a creator."""
    _require_user_scope(actor, Action.DELETE, user.organization_id)
    _require_may_manage(actor, user, set())
    if actor is not None and actor.pk == user.pk:
        raise DomainError("You cannot delete yourself.")
    audit_record(actor=actor, verb="user.deleted", target=user)
    user.delete()


@transaction.atomic
def role_create(*, actor, name: str, description: str = "", rules: list[Rule]) -> Role:
    """Create a custom role from existing rules."""
    if actor is not None and user_scope(actor, Resource.ROLE, Action.CREATE) != Scope.GLOBAL:
        raise NotAllowed("Only administrators with global role rights can create roles.")
    role = Role(name=name, description=description)
    role.full_clean()
    role.save()
    role.rules.set(rules)
    audit_record(actor=actor, verb="role.created", target=role, details={"rules": [str(r) for r in rules]})
    return role


def login_failed(*, user_id: int, address: str = "") -> User:
    """Count a failed login; at VANTAGE_LOCKOUT_THRESHOLD failures in a row, lock the account.

    The counter is incremented in the database (F expression), so parallel guesses
    cannot race past the threshold.
    """
    now = timezone.now()
    with transaction.atomic():
        User.objects.filter(pk=user_id).update(failed_logins=F("failed_logins") + 1)
        user = User.objects.select_for_update().get(pk=user_id)
        if user.failed_logins < settings.VANTAGE_LOCKOUT_THRESHOLD:
            return user
        user.locked_until = now + timedelta(minutes=settings.VANTAGE_LOCKOUT_MINUTES)
        user.failed_logins = 0
        user.save(update_fields=["locked_until", "failed_logins"])
        audit_record(actor=None, verb="user.locked", target=user, details={
            "until": user.locked_until.isoformat(), "failures": settings.VANTAGE_LOCKOUT_THRESHOLD,
            "address": address,
        })
        if user.email:
            jobs.after_response(jobs.send_lockout_notice, user.pk)
    return user


def login_succeeded(*, user: User) -> None:
    """Forget earlier failures after a successful login."""
    if user.failed_logins:
        User.objects.filter(pk=user.pk).update(failed_logins=0)


def password_reset_request(*, email: str) -> None:
    """Email a reset link to every active account with this address; the caller learns nothing.

    Even the lookup happens after the response (accounts.jobs.send_password_reset), so a
    known and an unknown address take the same path, and the same time, in the request.
    """
    jobs.after_response(jobs.send_password_reset, email.strip())


@transaction.atomic
def password_reset_confirm(*, uid: str, token: str, password: str) -> User:
    """Set a new password from an emailed token; unlocks the account. The token works once."""
    try:
        user = User.objects.select_for_update().get(pk=int(force_str(urlsafe_base64_decode(uid))), is_active=True)
    except (ValueError, TypeError, OverflowError, User.DoesNotExist):
        user = None
    # The token hashes the current password, so it stops working once the password changes.
    if user is None or not default_token_generator.check_token(user, token):
        raise DomainError("This reset link is invalid or has expired.", field="token")
    _validate_password(password, user)
    user.set_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.save(update_fields=["password", "failed_logins", "locked_until"])
    audit_record(actor=user, verb="user.password_reset", target=user)
    user_end_sessions(actor=user, user=user, reason="password_reset")
    return user


# --- Logins, sessions and tokens ------------------------------------------------------


class LoginRefused(DomainError):
    """A login attempt refused; `code` says why (account_locked, no_active_account,
    otp_required, otp_invalid, otp_enrolment_required)."""

    status_code = 401
    default_code = "login_refused"


def _locked_message(until) -> str:
    return f"Too many failed logins: this account is locked until {until:%Y-%m-%d %H:%M} UTC."


def _unknown_username_key(username: str) -> str:
    return "vantage:login-unknown:" + hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()


def _unknown_username_failed(username: str) -> None:
    """Unknown usernames lock like accounts do, so the lockout answer does not tell
    whether an account exists. Their count lives in the cache: there is no row to keep it."""
    key = _unknown_username_key(username)
    state = cache.get(key) or {"failures": 0, "until": None}
    state["failures"] += 1
    if state["failures"] >= settings.VANTAGE_LOCKOUT_THRESHOLD:
        state = {"failures": 0, "until": timezone.now() + timedelta(minutes=settings.VANTAGE_LOCKOUT_MINUTES)}
    cache.set(key, state, timeout=settings.VANTAGE_LOCKOUT_MINUTES * 60 * 2)


def second_factor_required(user: User) -> bool:
    """Staff, and members of organisations that require it, log in with a TOTP code too."""
    if user.is_staff or user.is_superuser:
        return True
    organization = user.organization
    return bool(organization is not None and organization.require_second_factor)


def confirmed_second_factor(user: User) -> SecondFactor | None:
    return SecondFactor.objects.filter(user=user, confirmed_at__isnull=False).first()


def _recovery_hash(code: str) -> str:
    # The codes carry 80 random bits: a plain SHA-256 cannot be reversed by guessing.
    return hashlib.sha256("".join(code.lower().split("-")).encode()).hexdigest()


def _totp_step_matching(factor: SecondFactor, code: str, now) -> int | None:
    totp = pyotp.TOTP(factor.secret, interval=TOTP_INTERVAL)
    current = totp.timecode(now)
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _second_factor_accepts(user: User, factor: SecondFactor, code: str) -> bool:
    """A current TOTP code not used before, or an unused recovery code (used up here)."""
    code = code.strip().replace(" ", "")
    if code.isdigit():
        step = _totp_step_matching(factor, code, timezone.now())
        # Compare-and-swap on the last accepted step: a code (or an older one) is never
        # accepted twice, even by two parallel logins.
        return step is not None and SecondFactor.objects.filter(pk=factor.pk, last_step__lt=step).update(
            last_step=step) == 1
    used = RecoveryCode.objects.filter(user=user, code_hash=_recovery_hash(code), used_at__isnull=True).update(
        used_at=timezone.now())
    if used:
        audit_record(actor=user, verb="user.recovery_code_used", target=user, details={
            "left": RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()})
    return used == 1


def login_authenticate(*, request, username: str, password: str, otp: str | None = None,
                       allow_enrolment: bool = False) -> User:
    """Check a login under one set of rules for the API, the portal and the admin.

    A locked account (or an unknown name that failed as often) is refused with the same
    message, even with the right password; a wrong password or a wrong second-factor code
    counts towards the lockout; a success clears the count. `allow_enrolment`: the
    portal lets a user who must have a second factor but has none in, to set one up.
    """
    address = client_address(request)
    known = user_login_state(username=username)
    now = timezone.now()
    if known is not None and known.is_locked(now):
        raise LoginRefused(_locked_message(known.locked_until), code="account_locked")
    if known is None:
        state = cache.get(_unknown_username_key(username))
        if state and state["until"] is not None and state["until"] > now:
            raise LoginRefused(_locked_message(state["until"]), code="account_locked")
    # ModelBackend answers None for inactive accounts too, and hashes the password of an
    # unknown name as well, so both take the time of a real check.
    user = authenticate(request, username=username, password=password)
    if user is None:
        if known is not None:
            login_failed(user_id=known.pk, address=address)
        else:
            _unknown_username_failed(username)
        raise LoginRefused(WRONG_CREDENTIALS, code="no_active_account")
    factor = confirmed_second_factor(user)
    if factor is not None:
        if not otp:
            raise LoginRefused("This account needs the code from its authenticator app: send it as `otp`.",
                               code="otp_required")
        with transaction.atomic():
            accepted = _second_factor_accepts(user, factor, otp)
        if not accepted:
            login_failed(user_id=user.pk, address=address)
            raise LoginRefused("The authenticator code is wrong, expired or already used.", code="otp_invalid")
    elif second_factor_required(user) and not allow_enrolment:
        raise LoginRefused(
            "This account must log in with a second factor: set one up in the portal "
            f"({settings.VANTAGE_PUBLIC_URL}/portal/security/) first.", code="otp_enrolment_required")
    login_succeeded(user=user)
    return user


@transaction.atomic
def api_login_create(*, user: User) -> RefreshToken:
    """Start an API login: a refresh token (and its access token) tied to a new ApiLogin."""
    now = timezone.now()
    ApiLogin.objects.filter(user=user, expires_at__lte=now).delete()  # the user's own expired logins
    refresh = RefreshToken.for_user(user)
    login = ApiLogin.objects.create(
        user=user, key=secrets.token_urlsafe(24), created_at=now,
        expires_at=now + settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"],
    )
    refresh[LOGIN_CLAIM] = login.key
    return refresh


def api_login_is_live(*, user_id, key) -> bool:
    return bool(key) and ApiLogin.objects.filter(
        key=key, user_id=user_id, user__is_active=True, expires_at__gt=timezone.now()).exists()


@transaction.atomic
def user_logout(*, user: User, login_key: str | None, request=None) -> None:
    """End one API login (its refresh token and every access token minted from it)."""
    deleted = ApiLogin.objects.filter(user=user, key=login_key).delete()[0] if login_key else 0
    audit_record(actor=user, verb="user.logged_out", target=user, details={
        "api_login": bool(deleted), "address": client_address(request) if request is not None else ""})


@transaction.atomic
def user_end_sessions(*, actor, user: User, reason: str, request=None) -> int:
    """End every API login, access token, refresh token, browser session and websocket of
    the user at once. Returns how many API logins ended."""
    from accounts.consumers import close_user_sockets

    ended = ApiLogin.objects.filter(user=user).delete()[0]
    # Part of the session hash (User.get_session_auth_hash): every session stops matching.
    User.objects.filter(pk=user.pk).update(session_epoch=F("session_epoch") + 1)
    user.session_epoch = User.objects.values_list("session_epoch", flat=True).get(pk=user.pk)
    audit_record(actor=actor, verb="user.sessions_ended", target=user, details={
        "reason": reason, "api_logins": ended,
        "address": client_address(request) if request is not None else "",
    })
    user_id = user.pk
    transaction.on_commit(lambda: close_user_sockets(user_id))
    return ended


# --- Second factor ---------------------------------------------------------------------


@transaction.atomic
def second_factor_begin(*, user: User) -> SecondFactor:
    """A new, unconfirmed authenticator secret for the user to scan (replaces an unconfirmed one)."""
    if confirmed_second_factor(user) is not None:
        raise DomainError("A second factor is already set up; an administrator can reset it.")
    SecondFactor.objects.filter(user=user).delete()
    return SecondFactor.objects.create(user=user, secret=pyotp.random_base32(), created_at=timezone.now())


@transaction.atomic
def second_factor_confirm(*, user: User, code: str) -> list[str]:
    """Confirm the authenticator with its first code; returns new recovery codes (shown once)."""
    factor = SecondFactor.objects.select_for_update().filter(user=user, confirmed_at__isnull=True).first()
    if factor is None:
        raise DomainError("Start the set-up first.", field="code")
    step = _totp_step_matching(factor, code.strip().replace(" ", ""), timezone.now())
    if step is None:
        raise DomainError("This code does not match: check the app's clock and enter the current code.",
                          field="code")
    factor.confirmed_at = timezone.now()
    factor.last_step = step
    factor.save(update_fields=["confirmed_at", "last_step"])
    codes = _new_recovery_codes(user)
    audit_record(actor=user, verb="user.second_factor_enabled", target=user,
                 details={"recovery_codes": len(codes)})
    return codes


def _new_recovery_codes(user: User) -> list[str]:
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 letters and digits, no 0/o, 1/l
    codes = ["-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))
             for _ in range(RECOVERY_CODE_COUNT)]
    RecoveryCode.objects.filter(user=user).delete()
    RecoveryCode.objects.bulk_create([RecoveryCode(user=user, code_hash=_recovery_hash(c)) for c in codes])
    return codes


@transaction.atomic
def second_factor_reset(*, actor, user: User, request=None) -> None:
    """Remove a user's authenticator and recovery codes (lost phone): an administrator's
    action. Their sessions end; they log in with the password and set up a new one."""
    if actor is not None and not actor.is_superuser:
        _require_may_edit(actor, user, {"password"})
    had = SecondFactor.objects.filter(user=user).delete()[0]
    RecoveryCode.objects.filter(user=user).delete()
    audit_record(actor=actor, verb="user.second_factor_reset", target=user, details={"had_second_factor": bool(had)})
    user_end_sessions(actor=actor, user=user, reason="second_factor_reset", request=request)


def client_address(request) -> str:
    """The client's address: the socket's, or with VANTAGE_TRUSTED_PROXIES = n > 0, the
    address the outermost of those n proxies saw (the n-th entry of X-Forwarded-For from
    the right). A header sent by the client itself is never believed beyond that."""
    if request is None:
        return ""
    meta = request.META
    remote = meta.get("REMOTE_ADDR", "") or ""
    trusted = settings.VANTAGE_TRUSTED_PROXIES
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    if trusted == 0 or not forwarded:
        return remote
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if not hops:
        return remote
    return hops[-min(trusted, len(hops))]


# --- Signing keys ------------------------------------------------------------------------

MAX_PUBLIC_KEY_CHARS = 4096  # a P-256 PKIX PEM is ~180 characters


@transaction.atomic
def signing_key_add(*, actor, user: User, name: str, public_key: str) -> SigningKey:
    """Register a public key whose image signatures count as `user`'s (catalogue approvals).

    Anyone registers their own keys; registering one on another account takes the right
    to edit that user and every right the user holds (as setting their password does):
    the key would let its holder's signatures pass as that user's."""
    if actor is not None and actor.pk != user.pk:
        _require_may_edit(actor, user, {"signing_keys"})
    text = (public_key or "").strip()
    if len(text) > MAX_PUBLIC_KEY_CHARS:
        raise DomainError(f"A public key has at most {MAX_PUBLIC_KEY_CHARS} characters.", field="public_key")
    try:
        key = signing.load_public_key(text.encode())
    except signing.SigningError as exc:
        raise DomainError(f"{exc}.", field="public_key") from None
    fingerprint = signing.fingerprint(key)
    holder = SigningKey.objects.filter(fingerprint=fingerprint).values_list("user_id", flat=True).first()
    if holder is not None:
        whose = "this account" if holder == user.pk else "another account"
        raise DomainError(f"This key (fingerprint {fingerprint}) is registered to {whose} already.",
                          field="public_key")
    if not (name or "").strip():
        raise DomainError("Name the key (what it is, for its owner).", field="name")
    signing_key = SigningKey(user=user, name=name.strip(), public_key=signing.public_key_pem(key).decode(),
                             fingerprint=fingerprint, created_at=timezone.now())
    signing_key.full_clean()
    signing_key.save()
    audit_record(actor=actor, verb="signing_key.added", target=user,
                 details={"key": signing_key.pk, "name": signing_key.name, "fingerprint": fingerprint})
    return signing_key


@transaction.atomic
def signing_key_remove(*, actor, key: SigningKey) -> None:
    """Remove a key: approvals made with it stay recorded; new ones need another key."""
    user = key.user
    if actor is not None and actor.pk != user.pk:
        _require_may_edit(actor, user, {"signing_keys"})
    details = {"key": key.pk, "name": key.name, "fingerprint": key.fingerprint}
    key.delete()
    audit_record(actor=actor, verb="signing_key.removed", target=user, details=details)
