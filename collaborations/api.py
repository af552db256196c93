"""REST views for organisations, collaborations, studies and nodes, and the node's own endpoints.

Authorised twice: HasRule refuses a user whose roles lack the action at any scope (403,
and every node), and each queryset comes from a selector scoped to the caller, so an
object outside their scope is absent (404). Whether the caller's scope covers a write
on a visible object is the service's decision (403).
"""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Action, Resource
from accounts.permissions import HasRule, IsContainer, IsNode, is_container
from collaborations import selectors, services
from collaborations.authentication import NodeTokenAuthentication, node_access_token
from collaborations.filters import CollaborationFilter, NodeFilter, OrganizationFilter, StudyFilter
from collaborations.serializers import (
    CollaborationInputSerializer,
    CollaborationSerializer,
    NodeCreateSerializer,
    NodeMeSerializer,
    NodeReportSerializer,
    NodeSerializer,
    NodeTokenRequestSerializer,
    NodeTokenSerializer,
    NodeWithKeySerializer,
    ORGANIZATION,
    OrganizationInputSerializer,
    StudyCreateSerializer,
    StudySerializer,
    StudyUpdateSerializer,
)
from core.views import ScopedViewSet, rules_for


class OrganizationViewSet(ScopedViewSet):
    serializer_class = OrganizationInputSerializer  # the browsable API's form (DEBUG); answers are ORGANIZATION
    filterset_class = OrganizationFilter
    # An algorithm container may read its collaboration's members (their public keys, to
    # encrypt subtask inputs): tasks.container_tokens.
    permission_classes = [HasRule | IsContainer]
    rules = rules_for(Resource.ORGANIZATION, list=Action.VIEW, retrieve=Action.VIEW,
                      create=Action.CREATE, partial_update=Action.EDIT)
    container_actions = {"list", "retrieve"}

    def get_queryset(self):
        if is_container(self.request.user):
            return selectors.container_organization_list(
                container=self.request.user, collaboration=self.request.query_params.get("collaboration")
            )
        return selectors.organization_list(user=self.request.user)

    @extend_schema(responses=ORGANIZATION.schema(many=True))
    def list(self, request):
        page_size = self.paginator.plain_first_page_size(request)
        if page_size is not None and not is_container(request.user):
            rows = selectors.organization_first_rows(user=request.user, columns=ORGANIZATION.columns, limit=page_size)
            if rows is not None:
                return self.paginator.first_page_response(
                    request, [ORGANIZATION.row(row) for row in rows], page_size, lambda: self.get_queryset().count()
                )
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()).values(*ORGANIZATION.columns))
        return self.get_paginated_response([ORGANIZATION.row(row) for row in page])

    @extend_schema(responses=ORGANIZATION.schema())
    def retrieve(self, request, pk=None):
        return Response(ORGANIZATION.of(self.get_object()))

    @extend_schema(request=OrganizationInputSerializer, responses={201: ORGANIZATION.schema()})
    def create(self, request):
        organization = services.organization_create(actor=request.user, **self._input(OrganizationInputSerializer))
        return Response(ORGANIZATION.of(organization), status=status.HTTP_201_CREATED)

    @extend_schema(request=OrganizationInputSerializer, responses=ORGANIZATION.schema())
    def partial_update(self, request, pk=None):
        organization = self.get_object()
        changes = self._input(OrganizationInputSerializer, partial=True)
        organization = services.organization_update(actor=request.user, organization=organization, **changes)
        return Response(ORGANIZATION.of(organization))


class CollaborationViewSet(ScopedViewSet):
    serializer_class = CollaborationSerializer
    filterset_class = CollaborationFilter
    rules = rules_for(Resource.COLLABORATION, list=Action.VIEW, retrieve=Action.VIEW,
                      create=Action.CREATE, partial_update=Action.EDIT, archive=Action.EDIT)

    def get_queryset(self):
        return selectors.collaboration_list_with_members(user=self.request.user)

    @extend_schema(request=CollaborationInputSerializer, responses={201: CollaborationSerializer})
    def create(self, request):
        collaboration = services.collaboration_create(actor=request.user, **self._input(CollaborationInputSerializer))
        return Response(CollaborationSerializer(collaboration).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CollaborationInputSerializer, responses=CollaborationSerializer)
    def partial_update(self, request, pk=None):
        collaboration = self.get_object()
        changes = self._input(CollaborationInputSerializer, partial=True)
        collaboration = services.collaboration_update(actor=request.user, collaboration=collaboration, **changes)
        return Response(CollaborationSerializer(collaboration).data)

    @extend_schema(request=None, responses=CollaborationSerializer)
    @action(detail=True, methods=["post"])
    def archive(self, request, pk=None):
        """Archive the collaboration: it keeps its history but accepts no new tasks."""
        collaboration = services.collaboration_archive(actor=request.user, collaboration=self.get_object())
        return Response(CollaborationSerializer(collaboration).data)


class StudyViewSet(ScopedViewSet):
    serializer_class = StudySerializer
    filterset_class = StudyFilter
    rules = rules_for(Resource.STUDY, list=Action.VIEW, retrieve=Action.VIEW, create=Action.CREATE,
                      partial_update=Action.EDIT, destroy=Action.DELETE)

    def get_queryset(self):
        return selectors.study_list_with_members(user=self.request.user)

    @extend_schema(request=StudyCreateSerializer, responses={201: StudySerializer})
    def create(self, request):
        study = services.study_create(actor=request.user, **self._input(StudyCreateSerializer))
        return Response(StudySerializer(study).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=StudyUpdateSerializer, responses=StudySerializer)
    def partial_update(self, request, pk=None):
        study = self.get_object()
        study = services.study_update(actor=request.user, study=study, **self._input(StudyUpdateSerializer))
        return Response(StudySerializer(study).data)

    def destroy(self, request, pk=None):
        services.study_delete(actor=request.user, study=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class NodeViewSet(ScopedViewSet):
    serializer_class = NodeSerializer
    filterset_class = NodeFilter
    rules = rules_for(Resource.NODE, list=Action.VIEW, retrieve=Action.VIEW, create=Action.CREATE,
                      rotate_key=Action.EDIT, destroy=Action.DELETE)

    def get_queryset(self):
        return selectors.node_list(user=self.request.user)

    @extend_schema(request=NodeCreateSerializer, responses={201: NodeWithKeySerializer})
    def create(self, request):
        """Register a node. The answer holds its API key: the only time it is shown."""
        node, api_key = services.node_create(actor=request.user, **self._input(NodeCreateSerializer))
        body = NodeWithKeySerializer(node, context={"api_key": api_key}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=NodeWithKeySerializer)
    @action(detail=True, methods=["post"], url_path="rotate-key")
    def rotate_key(self, request, pk=None):
        """Give the node a new API key (shown once); the old key and its tokens stop working."""
        node = self.get_object()
        api_key = services.node_rotate_key(actor=request.user, node=node)
        return Response(NodeWithKeySerializer(node, context={"api_key": api_key}).data)

    def destroy(self, request, pk=None):
        services.node_delete(actor=request.user, node=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class NodeTokenView(APIView):
    """Exchange a node's API key for a short-lived node access token."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request) -> str:
        # Without an authenticator DRF would turn the 401 for a bad key into a 403.
        return NodeTokenAuthentication().authenticate_header(request)

    @extend_schema(request=NodeTokenRequestSerializer, responses=NodeTokenSerializer, auth=[])
    def post(self, request):
        serializer = NodeTokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        node = services.node_authenticate(api_key=serializer.validated_data["api_key"])
        if node is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        token = node_access_token(node)
        lifetime = int(settings.VANTAGE_NODE_TOKEN_LIFETIME.total_seconds())
        return Response(NodeTokenSerializer({"access": str(token), "expires_in": lifetime}).data)


class NodeMeView(APIView):
    """The calling node's own record."""

    permission_classes = [IsNode]

    @extend_schema(responses=NodeMeSerializer)
    def get(self, request):
        return Response(NodeMeSerializer(request.user).data)


class NodeReportView(APIView):
    """The calling node reports its configuration; it is then marked online."""

    permission_classes = [IsNode]

    @extend_schema(request=NodeReportSerializer, responses=NodeSerializer)
    def post(self, request):
        serializer = NodeReportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        node = services.node_report(node=request.user, config=serializer.validated_data["config"])
        return Response(NodeSerializer(node).data)
