"""Writes for users and roles; each audited in its own transaction."""

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.audit import audit_record
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
