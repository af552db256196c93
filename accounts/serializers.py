"""Input and output shapes for users, roles, rules, the audit log and user tokens.

Passwords are write-only everywhere; users show their roles by name, roles their rules by id.
"""

from rest_framework import exceptions, serializers
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer

from accounts.models import AuditEvent, Role, Rule, User
from accounts.selectors import rule_list
from collaborations.selectors import organization_list
from collaborations.serializers import ScopedIdField, ScopedIdsField
from vantage.inputs import DESCRIPTION_MAX_CHARS, InputSerializer


class OptionalEmailField(serializers.EmailField):
    """An email address or "" (users need not have one). Blank allowed, the OpenAPI schema
    says so too (`oneOf` an email or an empty string), as the data does: it said only
    `format: email` while users without an address were sent as ""."""

    def __init__(self, **kwargs):
        super().__init__(allow_blank=True, **kwargs)


class UserSerializer(serializers.ModelSerializer):
    roles = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    email = OptionalEmailField(read_only=True)

    class Meta:
        model = User
        fields = [
            "id", "username", "email", "first_name", "last_name", "organization", "roles",
            "is_active", "date_joined", "last_login",
        ]
        read_only_fields = fields


class _UserFieldsSerializer(InputSerializer):
    email = OptionalEmailField(required=False)
    first_name = serializers.CharField(max_length=150, allow_blank=True, required=False)
    last_name = serializers.CharField(max_length=150, allow_blank=True, required=False)
    roles = serializers.ListField(child=serializers.CharField(max_length=64), required=False,
                                  help_text="Role names.")


class UserCreateSerializer(_UserFieldsSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(write_only=True, trim_whitespace=False, style={"input_type": "password"})
    organization = ScopedIdField(selector=organization_list)


class UserUpdateSerializer(_UserFieldsSerializer):
    password = serializers.CharField(write_only=True, required=False, trim_whitespace=False,
                                     style={"input_type": "password"})
    is_active = serializers.BooleanField(required=False)


class RuleSerializer(serializers.ModelSerializer):
    scope = serializers.CharField(source="get_scope_display", read_only=True)

    class Meta:
        model = Rule
        fields = ["id", "resource", "action", "scope"]
        read_only_fields = fields


class RoleSerializer(serializers.ModelSerializer):
    rules = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = Role
        fields = ["id", "name", "description", "rules", "is_builtin"]
        read_only_fields = fields


class RoleCreateSerializer(InputSerializer):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(allow_blank=True, required=False, max_length=DESCRIPTION_MAX_CHARS)
    rules = ScopedIdsField(selector=rule_list, help_text="Rule ids.")


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id", "created_at", "actor_type", "actor_id", "actor_label", "verb",
            "target_type", "target_id", "target_label", "details", "prev_hash", "hash",
        ]
        read_only_fields = fields


class LoginSerializer(TokenObtainPairSerializer):
    default_error_messages = {"no_active_account": "Wrong username or password, or the account is disabled."}


class RefreshSerializer(TokenRefreshSerializer):
    def validate(self, attrs):
        # simplejwt looks the user up with .get(): a deleted user would be a 500, not a 401.
        try:
            return super().validate(attrs)
        except User.DoesNotExist:
            raise exceptions.AuthenticationFailed(self.error_messages["no_active_account"], "no_active_account")


class PasswordResetSerializer(InputSerializer):
    email = serializers.EmailField()


class PasswordResetConfirmSerializer(InputSerializer):
    uid = serializers.CharField(max_length=64)
    token = serializers.CharField(max_length=128)
    password = serializers.CharField(write_only=True, max_length=256, style={"input_type": "password"})


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()
