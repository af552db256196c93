"""Input and output shapes for organisations, collaborations, studies and nodes.

Input serializers only parse and resolve ids; every rule about what may change lives in
collaborations.services. Related objects are given and shown as ids. Organisations answer
in a shape (core.shapes) that declares both their dict and their OpenAPI component.
"""

import json

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from collaborations.models import Collaboration, Node, Organization, Study
from collaborations.selectors import collaboration_list, organization_list
from collaborations.validators import validate_public_key
from core.inputs import InputSerializer
from core.serializers import ScopedIdField, ScopedIdsField
from core.shapes import BOOLEAN, DATETIME, INTEGER, STRING, Out, Shape

MAX_REPORTED_CONFIG_BYTES = 64 * 1024


# The organisation list is among the most frequent requests: it answers from
# `values(*ORGANIZATION.columns)` rows (core.shapes), without a serializer.
ORGANIZATION = Shape("Organization", [
    Out("id", INTEGER),
    Out("name", STRING),
    Out("country", STRING),
    Out("domain", STRING),
    Out("public_key", STRING),
    Out("require_second_factor", BOOLEAN),
    Out("created_at", DATETIME),
], model=Organization)


class OrganizationInputSerializer(InputSerializer):
    name = serializers.CharField(max_length=200)
    country = serializers.CharField(max_length=2, allow_blank=True, required=False)
    domain = serializers.CharField(max_length=253, allow_blank=True, required=False)
    public_key = serializers.CharField(
        allow_blank=True, required=False, trim_whitespace=False,
        help_text="PEM RSA public key (at least 2048 bits) for end-to-end encryption; blank removes it.",
    )
    require_second_factor = serializers.BooleanField(
        required=False, help_text="Its users must log in with an authenticator code (TOTP) as well as a password.")

    def validate_public_key(self, value: str) -> str:
        if not value.strip():
            return ""
        try:
            validate_public_key(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages)
        return value.strip() + "\n"


class CollaborationSerializer(serializers.ModelSerializer):
    organizations = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = Collaboration
        fields = ["id", "name", "organizations", "encrypted", "status", "created_at"]
        read_only_fields = fields


class CollaborationInputSerializer(InputSerializer):
    name = serializers.CharField(max_length=200)
    organizations = ScopedIdsField(selector=organization_list, allow_empty=True)
    encrypted = serializers.BooleanField(required=False)


class StudySerializer(serializers.ModelSerializer):
    organizations = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = Study
        fields = ["id", "name", "collaboration", "organizations", "created_at"]
        read_only_fields = fields


class StudyCreateSerializer(InputSerializer):
    collaboration = ScopedIdField(selector=collaboration_list)
    name = serializers.CharField(max_length=200)
    organizations = ScopedIdsField(selector=organization_list, allow_empty=True)


class StudyUpdateSerializer(InputSerializer):
    name = serializers.CharField(max_length=200, required=False)
    organizations = ScopedIdsField(selector=organization_list, allow_empty=True, required=False)


class NodeSerializer(serializers.ModelSerializer):
    """A node as users and the node itself see it: never its key, hash or key prefix."""

    class Meta:
        model = Node
        fields = [
            "id", "name", "organization", "collaboration", "status", "last_seen_at",
            "reported_config", "key_created_at", "created_at",
        ]
        read_only_fields = fields


class NodeMeSerializer(NodeSerializer):
    """A node's own record, with its organisation's published public key: `run_node --check`
    compares it with the node's private key."""

    organization_public_key = serializers.CharField(source="organization.public_key", read_only=True)

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "organization_public_key"]
        read_only_fields = fields


class NodeWithKeySerializer(NodeSerializer):
    """The answer to creating a node or rotating its key: the only time the key is shown.

    The key comes in through the context (`api_key`): it exists nowhere else.
    """

    api_key = serializers.SerializerMethodField(help_text="Shown this once; store it in the node's config.")

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "api_key"]
        read_only_fields = fields

    def get_api_key(self, node: Node) -> str:
        return self.context["api_key"]


class NodeCreateSerializer(InputSerializer):
    name = serializers.CharField(max_length=200)
    organization = ScopedIdField(selector=organization_list)
    collaboration = ScopedIdField(selector=collaboration_list)


class NodeTokenRequestSerializer(InputSerializer):
    api_key = serializers.CharField(max_length=200, trim_whitespace=True)


class NodeTokenSerializer(serializers.Serializer):
    access = serializers.CharField()
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class NodeReportSerializer(InputSerializer):
    config = serializers.DictField(help_text="What the node reports about itself: database labels, policy, version.")

    def validate_config(self, value: dict) -> dict:
        # The config is stored on the node and copied into the audit log on each change.
        if len(json.dumps(value, separators=(",", ":"))) > MAX_REPORTED_CONFIG_BYTES:
            raise serializers.ValidationError(f"At most {MAX_REPORTED_CONFIG_BYTES // 1024} KiB of JSON.")
        return value
