"""Role rules: what scope a principal holds for a resource × action.

A user's rules are read once per request (one query) and cached on the user object;
selectors turn the scope into a queryset filter, permission classes turn "no scope at
all" into 403. Objects outside the scope are simply absent from querysets: 404.
"""

from rest_framework.permissions import BasePermission

from accounts.models import Action, Resource, Rule, Scope
from core.prepared import PreparedQuery

_CACHE_ATTR = "_vantage_rule_scopes"
# Read on nearly every API request: prepared once (core.prepared), not built each time.
_rules_of_user = PreparedQuery(
    lambda *, user_id: Rule.objects.filter(roles__users__id=user_id).only("resource", "action", "scope"), "user_id")


def rule_scopes(user) -> dict[tuple[str, str], int]:
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        cached = {}
        if user.is_superuser:
            cached = {(r, a): Scope.GLOBAL for r in Resource.values for a in Action.values}
        else:
            for rule in _rules_of_user.models(user_id=user.pk):
                key = (rule.resource, rule.action)
                cached[key] = max(cached.get(key, 0), rule.scope)
        setattr(user, _CACHE_ATTR, cached)
    return cached


def user_scope(user, resource: str, action: str) -> int | None:
    """The widest scope the user holds for this resource and action, or None."""
    if user is None or not getattr(user, "is_authenticated", False) or is_node(user) or is_container(user):
        return None
    return rule_scopes(user).get((resource, action))


def forget_rule_scopes(user) -> None:
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def is_node(principal) -> bool:
    return getattr(principal, "is_node", False)


def is_container(principal) -> bool:
    """An algorithm container's token (tasks.container_tokens.ContainerPrincipal)."""
    return getattr(principal, "is_container", False)


class IsUser(BasePermission):
    message = "This endpoint is for users, not nodes."

    def has_permission(self, request, view) -> bool:
        principal = request.user
        return bool(principal and principal.is_authenticated and not is_node(principal) and not is_container(principal))


class IsNode(BasePermission):
    message = "This endpoint is for node agents."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_node(request.user))


class HasRule(BasePermission):
    """Allows a user holding the view's rule for the current action at any scope.

    Views declare `rules = {"list": (Resource.TASK, Action.VIEW), ...}`; an action
    missing from the map is refused, so a new action cannot be left open by accident.
    """

    message = "Your roles do not allow this."

    def has_permission(self, request, view) -> bool:
        if not IsUser().has_permission(request, view):
            return False
        needed = getattr(view, "rules", {}).get(getattr(view, "action", None) or request.method.lower())
        if needed is None:
            return False
        resource, action = needed
        return user_scope(request.user, resource, action) is not None


class IsContainer(BasePermission):
    """Allows an algorithm container for the actions named in the view's `container_actions`.

    An action missing from that set is refused, as HasRule refuses actions missing from
    `rules`: a container reaches only what a view lists for it.
    """

    message = "Container tokens are not accepted for this action."

    def has_permission(self, request, view) -> bool:
        if not is_container(request.user):
            return False
        return (getattr(view, "action", None) or request.method.lower()) in getattr(view, "container_actions", ())
