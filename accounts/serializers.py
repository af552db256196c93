"""Input and output shapes for users, roles, rules, the audit log and user tokens.

Passwords are write-only everywhere; users show their roles by name, roles their rules by id.
"""

from rest_framework import exceptions, serializers
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import AuditEvent, Role, Rule, SigningKey, User
from accounts.selectors import organization_list, rule_list, user_list
from accounts.services import LOGIN_CLAIM, api_login_is_live
from core.inputs import DESCRIPTION_MAX_CHARS, InputSerializer
from core.serializers import ScopedIdField, ScopedIdsField


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


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=4096, write_only=True, trim_whitespace=False,
                                     style={"input_type": "password"})
    otp = serializers.CharField(max_length=64, required=False, allow_blank=True, write_only=True,
                                help_text="The current code of the user's authenticator app (TOTP), or one of "
                                          "their recovery codes; needed once a second factor is set up.")


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(read_only=True)
    refresh = serializers.CharField(read_only=True)


class RefreshSerializer(serializers.Serializer):
    """A refresh token of a login that is still live: no logout, password change,
    deactivation or role removal since it was issued."""

    refresh = serializers.CharField()
    access = serializers.CharField(read_only=True)

    def validate(self, attrs):
        try:
            refresh = RefreshToken(attrs["refresh"])
        except TokenError:
            raise exceptions.AuthenticationFailed("Token is invalid or expired.", code="token_not_valid")
        if not api_login_is_live(user_id=refresh.get("user_id"), key=refresh.get(LOGIN_CLAIM)):
            raise exceptions.AuthenticationFailed("This login has ended (logout or password change): log in again.",
                                                  code="token_revoked")
        return {"access": str(refresh.access_token)}


class PasswordResetSerializer(InputSerializer):
    email = serializers.EmailField()


class PasswordResetConfirmSerializer(InputSerializer):
    uid = serializers.CharField(max_length=64)
    token = serializers.CharField(max_length=128)
    password = serializers.CharField(write_only=True, max_length=256, style={"input_type": "password"})


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class LogoutSerializer(DetailSerializer):
    api_logins = serializers.IntegerField(help_text="How many API logins were ended.")


class SigningKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = SigningKey
        fields = ["id", "user", "name", "fingerprint", "public_key", "created_at"]
        read_only_fields = fields


class SigningKeyCreateSerializer(InputSerializer):
    name = serializers.CharField(max_length=100)
    public_key = serializers.CharField(max_length=4096, trim_whitespace=False,
                                       help_text="PKIX PEM of an ECDSA P-256 key (the .pub file of "
                                                 "`vantage-client signing-keygen`, or cosign.pub).")
    user = ScopedIdField(selector=user_list, required=False,
                         help_text="Whose key it is (default: yours); another user's takes rights over them.")
