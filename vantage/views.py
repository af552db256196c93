"""Unauthenticated service endpoints: liveness with a database check, and versions."""

import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# Bumped when a change to /api/ breaks existing clients; the server version changes every release.
API_VERSION = "1"


class HealthView(APIView):
    """Answers 200 when the server can reach its database, 503 when it cannot."""

    # No authentication: a load balancer probes this, and a stale token must not fail it.
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        auth=[],
        responses={
            200: inline_serializer("Health", {"status": serializers.CharField(), "database": serializers.CharField()}),
            503: inline_serializer(
                "HealthFailure", {"status": serializers.CharField(), "database": serializers.CharField()}
            ),
        },
    )
    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        except DatabaseError:
            logger.exception("health check: database query failed")
            body = {"status": "error", "database": "unavailable"}
            return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"status": "ok", "database": "ok"})


class VersionView(APIView):
    """The server release and the API version."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        auth=[],
        responses=inline_serializer(
            "Version", {"version": serializers.CharField(), "api_version": serializers.CharField()}
        ),
    )
    def get(self, request):
        return Response({"version": settings.SPECTACULAR_SETTINGS["VERSION"], "api_version": API_VERSION})


# The collections a researcher or operator starts from, by URL name; the full reference
# is the OpenAPI schema and its browsable docs.
API_INDEX = {
    "collaborations": "collaboration-list", "organizations": "organization-list", "studies": "study-list",
    "nodes": "node-list", "algorithms": "algorithm-list", "tasks": "task-list", "runs": "run-list",
    "users": "user-list", "roles": "role-list", "signing_keys": "signing-key-list", "audit": "audit-list",
    "token": "token", "token_refresh": "token-refresh", "health": "health", "version": "version",
    "schema": "schema", "docs": "swagger-ui",
}


class ApiIndexView(APIView):
    """`/api/`: where each part of the API is, and the API version. Open to anyone, as the
    schema is: it names endpoints, and each endpoint checks its own permissions."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(auth=[], responses=inline_serializer("ApiIndex", {
        "api_version": serializers.CharField(), "endpoints": serializers.DictField(child=serializers.URLField())}))
    def get(self, request):
        return Response({"api_version": API_VERSION,
                         "endpoints": {key: request.build_absolute_uri(reverse(name))
                                       for key, name in API_INDEX.items()}})
