"""Writes for users and roles; each audited in its own transaction."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode

from accounts.audit import audit_record
from accounts.jobs import send_lockout_notice, send_password_reset_email
from accounts.models import Action, Resource, Role, Rule, Scope, User
from accounts.permissions import forget_rule_scopes, rule_scopes, user_scope
from vantage.errors import DomainError, NotAllowed


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
    actor those rights, as granting the user's roles would (see _resolve_roles).
    """
    if actor is None or actor.is_superuser or actor.pk == user.pk:
        return
    if user.is_superuser:
        raise NotAllowed("Only a superuser can change or delete a superuser.")
    if changes & {"password", "email"}:
        held = rule_scopes(actor)
        if any(held.get(key, 0) < scope for key, scope in rule_scopes(user).items()):
            raise NotAllowed("You cannot set the password or email of a user who holds rights you do not hold.")


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
    _require_user_scope(actor, Action.EDIT, user.organization_id)
    _require_may_manage(actor, user, set(changes))
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
    if roles is not None:
        resolved = _resolve_roles(actor, roles)
        user.roles.set(resolved)
        forget_rule_scopes(user)
        details["roles"] = [r.name for r in resolved]
    audit_record(actor=actor, verb="user.updated", target=user, details=details)
    return user


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


def login_failed(*, user_id: int) -> User:
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
        audit_record(actor=None, verb="user.locked", target=user,
                     details={"until": user.locked_until.isoformat(), "failures": settings.VANTAGE_LOCKOUT_THRESHOLD})
        if user.email:
            send_lockout_notice.delay_on_commit(user.pk)
    return user


def login_succeeded(*, user: User) -> None:
    """Forget earlier failures after a successful login."""
    if user.failed_logins:
        User.objects.filter(pk=user.pk).update(failed_logins=0)


@transaction.atomic
def password_reset_request(*, email: str) -> int:
    """Email a reset link to every active account with this address; the caller learns nothing.

    Returns how many emails were queued (for tests and logs, never for the HTTP answer).
    """
    users = list(User.objects.filter(email__iexact=email.strip(), is_active=True).values_list("pk", flat=True))
    for user_id in users:
        send_password_reset_email.delay_on_commit(user_id)
    return len(users)


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
    return user
