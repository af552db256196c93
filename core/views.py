"""The bases of the API's viewsets.

A viewset is authorised twice: a permission for the action, and a queryset scoped to the
caller. The permission is the project's default (REST_FRAMEWORK's
DEFAULT_PERMISSION_CLASSES: accounts.permissions.HasRule), which refuses an action that
the view's `rules` map does not name, so a new action cannot be left open by accident;
a view that also admits nodes or containers lists its permissions itself.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, mixins, viewsets

from core.authentication import BearerTokenAuthentication


def rules_for(resource: str, **actions: str) -> dict[str, tuple[str, str]]:
    """HasRule's map for a view: `rules_for(Resource.X, list=Action.VIEW, ...)`."""
    return {name: (resource, needed) for name, needed in actions.items()}


class GuardedViewSet(viewsets.GenericViewSet):
    """A viewset behind the default permission whose writes parse their input with `_input`."""

    def initial(self, request, *args, **kwargs):
        # The permission refuses actions missing from `rules`; an unsupported method should
        # still read as 405 (PUT where only PATCH exists), not as a missing role.
        if not hasattr(self, request.method.lower()):
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)

    def _input(self, serializer_class, *, partial: bool = False) -> dict:
        serializer = serializer_class(data=self.request.data, partial=partial, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class ScopedViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GuardedViewSet):
    """List and retrieve through the caller's scoped selector (`get_queryset`)."""


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Documents the one bearer scheme that users, node agents and containers share."""

    target_class = BearerTokenAuthentication
    match_subclasses = True
    name = "bearerAuth"

    def get_security_requirement(self, auto_schema):
        # Documented once, by the first kind the view lists: the kinds share one header and
        # one scheme, and drf-spectacular names a component after one class only.
        first = next(a for a in auto_schema.view.get_authenticators() if isinstance(a, BearerTokenAuthentication))
        if type(first) is not type(self.target):
            self.name = []
            return []
        return {self.name: []}

    def get_security_definition(self, auto_schema):
        if not isinstance(self.name, str):
            return []
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A user token from /api/token/ or a node token from /api/node/token/.",
        }
