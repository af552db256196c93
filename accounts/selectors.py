"""Reads for users, roles, rules and the audit log, scoped to the caller."""

from collections.abc import Callable

from django.db.models import Q, QuerySet

from accounts.models import Action, AuditEvent, Resource, Role, Rule, Scope, SigningKey, User
from accounts.permissions import user_scope

# Organisations and their collaborations are collaborations' models, and collaborations
# sits above accounts: it registers how they are read (collaborations.apps), so that
# accounts scopes users and validates a user's organisation without importing it.
_organization_reads: dict[str, Callable] = {}


def register_organization_reads(*, organization_list: Callable, partner_organization_ids: Callable) -> None:
    _organization_reads.update(organization_list=organization_list, partner_organization_ids=partner_organization_ids)


def organization_list(*, user, action: str = Action.VIEW) -> QuerySet:
    """The organisations the user may see (or act on) under their roles."""
    return _organization_reads["organization_list"](user=user, action=action)


def partner_organization_ids(organization_id: int | None):
    """Subquery: every organisation sharing a collaboration with this one (itself included)."""
    return _organization_reads["partner_organization_ids"](organization_id)


def user_list(*, user, action: str = Action.VIEW) -> QuerySet[User]:
    scope = user_scope(user, Resource.USER, action)
    qs = User.objects.select_related("organization").prefetch_related("roles")
    if scope is None:
        return qs.none()
    if scope == Scope.GLOBAL:
        return qs
    if scope == Scope.COLLABORATION:
        return qs.filter(
            Q(pk=user.pk) | Q(organization_id__in=partner_organization_ids(user.organization_id))
        )
    if scope == Scope.ORGANIZATION:
        return qs.filter(Q(pk=user.pk) | Q(organization_id=user.organization_id))
    return qs.filter(pk=user.pk)


def role_list(*, user) -> QuerySet[Role]:
    if user_scope(user, Resource.ROLE, Action.VIEW) is None:
        return Role.objects.none()
    return Role.objects.prefetch_related("rules")


def rule_list(*, user) -> QuerySet[Rule]:
    if user_scope(user, Resource.ROLE, Action.VIEW) is None:
        return Rule.objects.none()
    return Rule.objects.all()


def audit_list(*, user) -> QuerySet[AuditEvent]:
    if user_scope(user, Resource.AUDIT, Action.VIEW) != Scope.GLOBAL:
        return AuditEvent.objects.none()
    return AuditEvent.objects.all()


def user_login_state(*, username: str) -> User | None:
    """The account a login attempt names, with just its lockout fields (None if unknown)."""
    return User.objects.filter(username=username).only("pk", "locked_until", "failed_logins").first()


def signing_key_list(*, user) -> QuerySet[SigningKey]:
    """Signing keys: one's own, and those of the users one may see with user view rights."""
    if user_scope(user, Resource.USER, Action.VIEW) is None:
        return SigningKey.objects.filter(user_id=user.pk)
    return SigningKey.objects.filter(Q(user_id=user.pk) | Q(user_id__in=user_list(user=user).values("pk")))
