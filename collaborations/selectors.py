"""Reads for organisations, collaborations, studies and nodes, scoped to the caller.

Each `<entity>_list` returns only what the user's roles let them see for the given
action; anything else is absent, so views answer 404 for it.
"""

from django.db.models import Prefetch, Q, QuerySet

from accounts.models import Action, Resource, Scope
from accounts.permissions import user_scope
from collaborations.models import Collaboration, Node, Organization, Study
from core.pagination import stable_order
from core.prepared import PreparedQuery

Membership = Collaboration.organizations.through


def member_collaboration_ids(organization_id: int | None):
    """Subquery: the collaborations an organisation belongs to."""
    return Membership.objects.filter(organization_id=organization_id).values("collaboration_id")


def partner_organization_ids(organization_id: int | None):
    """Subquery: every organisation sharing a collaboration with this one (itself included)."""
    return Membership.objects.filter(
        collaboration_id__in=member_collaboration_ids(organization_id)
    ).values("organization_id")


def organization_list(*, user, action: str = Action.VIEW) -> QuerySet[Organization]:
    scope = user_scope(user, Resource.ORGANIZATION, action)
    if scope is None:
        return Organization.objects.none()
    return _organizations_in_scope(scope, user.organization_id)


def container_organization_list(*, container, collaboration: str | None = None) -> QuerySet[Organization]:
    """The member organisations of a container's collaboration (public keys included).

    `collaboration` is the `?collaboration=` the vantage6 client sends: naming any other
    collaboration finds nothing.
    """
    qs = Organization.objects.filter(collaborations=container.collaboration_id)
    if collaboration is not None and collaboration.strip() != str(container.collaboration_id):
        return qs.none()
    return qs


def _organizations_in_scope(scope: int, organization_id) -> QuerySet[Organization]:
    qs = Organization.objects.all()
    if scope == Scope.GLOBAL:
        return qs
    if scope == Scope.COLLABORATION:
        return qs.filter(Q(pk=organization_id) | Q(pk__in=partner_organization_ids(organization_id)))
    return qs.filter(pk=organization_id)


def organization_first_rows(*, user, columns: tuple[str, ...], limit: int) -> list[dict] | None:
    """The first `limit` organisations of organization_list(user) as {column: value}, in the
    list's order; None where only the queryset can answer (a user without an organisation)."""
    scope = user_scope(user, Resource.ORGANIZATION, Action.VIEW)
    if scope is None:
        return []
    if scope == Scope.GLOBAL:
        found = _all_organizations_page.models(columns, limit, scope)
    elif user.organization_id is None:
        return None
    else:
        found = _scoped_organizations_page.models(columns, limit, scope, organization_id=user.organization_id)
    return [{column: getattr(organization, column) for column in columns} for organization in found]


def _organizations_page(columns, limit, scope, organization_id=None):
    return stable_order(_organizations_in_scope(scope, organization_id).only(*columns))[:limit]


# The organisation list is among the most frequent requests: its first page is prepared.
_all_organizations_page = PreparedQuery(_organizations_page)
_scoped_organizations_page = PreparedQuery(_organizations_page, "organization_id")


def collaboration_list(*, user, action: str = Action.VIEW) -> QuerySet[Collaboration]:
    scope = user_scope(user, Resource.COLLABORATION, action)
    if scope is None:
        return Collaboration.objects.none()
    return _collaborations_in_scope(scope, user.organization_id)


def _collaborations_in_scope(scope: int, organization_id) -> QuerySet[Collaboration]:
    qs = Collaboration.objects.all()
    if scope == Scope.GLOBAL:
        return qs
    return qs.filter(pk__in=member_collaboration_ids(organization_id))


def collaboration_visible(*, user, pk: int) -> Collaboration | None:
    """collaboration_list(user).filter(pk=pk).first(), as one prepared query (every task creation asks)."""
    scope = user_scope(user, Resource.COLLABORATION, Action.VIEW)
    if scope is None or (scope != Scope.GLOBAL and user.organization_id is None):
        return None
    if scope == Scope.GLOBAL:
        return _any_collaboration.first(pk=pk)
    return _member_collaboration.first(scope, pk=pk, organization_id=user.organization_id)


_any_collaboration = PreparedQuery(lambda *, pk: Collaboration.objects.filter(pk=pk)[:1], "pk")
_member_collaboration = PreparedQuery(
    lambda scope, *, pk, organization_id: _collaborations_in_scope(scope, organization_id).filter(pk=pk)[:1],
    "pk", "organization_id",
)


def study_list(*, user, action: str = Action.VIEW) -> QuerySet[Study]:
    scope = user_scope(user, Resource.STUDY, action)
    qs = Study.objects.select_related("collaboration")
    if scope is None:
        return qs.none()
    if scope == Scope.GLOBAL:
        return qs
    if scope == Scope.COLLABORATION:
        return qs.filter(collaboration_id__in=member_collaboration_ids(user.organization_id))
    return qs.filter(organizations=user.organization_id)


def node_list(*, user, action: str = Action.VIEW) -> QuerySet[Node]:
    scope = user_scope(user, Resource.NODE, action)
    qs = Node.objects.select_related("organization", "collaboration")
    if scope is None:
        return qs.none()
    if scope == Scope.GLOBAL:
        return qs
    if scope == Scope.COLLABORATION:
        return qs.filter(collaboration_id__in=member_collaboration_ids(user.organization_id))
    return qs.filter(organization_id=user.organization_id)


def _member_ids_prefetch() -> Prefetch:
    return Prefetch("organizations", queryset=Organization.objects.only("pk").order_by("pk"))


def collaboration_list_with_members(*, user, action: str = Action.VIEW) -> QuerySet[Collaboration]:
    """collaboration_list with member organisation ids prefetched (one query per page), for rendering."""
    return collaboration_list(user=user, action=action).prefetch_related(_member_ids_prefetch())


def study_list_with_members(*, user, action: str = Action.VIEW) -> QuerySet[Study]:
    """study_list with the study's organisation ids prefetched (one query per page), for rendering."""
    return study_list(user=user, action=action).prefetch_related(_member_ids_prefetch())


def collaboration_member_ids(*, collaboration: Collaboration) -> set[int]:
    """The ids of every member organisation of the collaboration (one query)."""
    return {member.organization_id for member in _members.models(collaboration_id=collaboration.pk)}


# A collaboration has tens of members at most: reading them all lets one prepared query
# serve any list of candidates.
_members = PreparedQuery(
    lambda *, collaboration_id: Membership.objects.only("organization_id").filter(collaboration_id=collaboration_id),
    "collaboration_id",
)


def collaboration_non_members(*, collaboration: Collaboration, organization_ids) -> set[int]:
    """The given organisation ids that are NOT members of the collaboration."""
    return set(organization_ids) - collaboration_member_ids(collaboration=collaboration)


def organization_public_keys(*, organization_ids) -> dict[int, str]:
    """Each given organisation's public key (PEM, or '' when it has none), by id."""
    return dict(Organization.objects.filter(pk__in=list(organization_ids)).values_list("pk", "public_key"))


def study_organization_ids(*, study: Study) -> set[int]:
    """The ids of the organisations taking part in a study."""
    return set(study.organizations.values_list("pk", flat=True))
