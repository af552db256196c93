"""REST views for user tokens, users, roles, rules and the audit log.

Authorised twice: HasRule refuses a user whose roles lack the action at any scope (403,
and every node), and each queryset comes from a selector scoped to the caller, so an
object outside their scope is absent (404). Whether the caller's scope covers a write
on a visible object is the service's decision (403).
"""

from django.contrib.auth import logout
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.filters import AuditEventFilter, UserFilter
from accounts.models import Action, Resource, SigningKey
from accounts.permissions import IsUser
from accounts.serializers import (
    AuditEventSerializer,
    DetailSerializer,
    LoginSerializer,
    LogoutSerializer,
    PasswordResetConfirmSerializer,
    PasswordResetSerializer,
    RefreshSerializer,
    RoleCreateSerializer,
    RoleSerializer,
    RuleSerializer,
    SigningKeyCreateSerializer,
    SigningKeySerializer,
    TokenPairSerializer,
    UserCreateSerializer,
    UserSerializer,
    UserUpdateSerializer,
)
from core.views import GuardedViewSet, ScopedViewSet, rules_for


class LoginView(APIView):
    """Exchange a username and password (and, once a second factor is set up, the code of
    the authenticator app as `otp`) for an access and a refresh token.

    Repeated failures, wrong codes included, lock the account for a while
    (VANTAGE_LOCKOUT_THRESHOLD, VANTAGE_LOCKOUT_MINUTES) and email its owner; a locked
    account answers 401 with code `account_locked`, even to the right password. Other
    401 codes: `no_active_account`, `otp_required`, `otp_invalid` (wrong, expired or
    already used), `otp_enrolment_required` (staff, or an organisation that requires a
    second factor, without one set up yet: set it up in the portal).
    """

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(request=LoginSerializer, responses={200: TokenPairSerializer, 401: DetailSerializer})
    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = services.login_authenticate(request=request, **serializer.validated_data)
        except services.LoginRefused as exc:
            return Response(exc.as_dict(), status=status.HTTP_401_UNAUTHORIZED,
                            headers={"WWW-Authenticate": 'Bearer realm="api"'})
        refresh = services.api_login_create(user=user)
        return Response({"access": str(refresh.access_token), "refresh": str(refresh)})


class LogoutView(APIView):
    """Log out: end the login this access token belongs to (its refresh token and every
    access token minted from it). With a browser session instead, end that session."""

    permission_classes = [IsUser]

    @extend_schema(request=None, responses={200: DetailSerializer})
    def post(self, request):
        login_key = request.auth.get(services.LOGIN_CLAIM) if request.auth is not None else None
        services.user_logout(user=request.user, login_key=login_key, request=request)
        if request.auth is None:
            logout(request)
        return Response({"detail": "Logged out."})


class LogoutEverywhereView(APIView):
    """Log out everywhere: end every login, token, browser session and websocket of the caller."""

    permission_classes = [IsUser]

    @extend_schema(request=None, responses={200: LogoutSerializer})
    def post(self, request):
        ended = services.user_end_sessions(actor=request.user, user=request.user, reason="logout_everywhere",
                                           request=request)
        return Response({"detail": "Logged out everywhere.", "api_logins": ended})


class PasswordResetView(APIView):
    """Ask for a password reset email. The answer is the same whether the address is known or not."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "password-reset"

    @extend_schema(request=PasswordResetSerializer, responses={202: DetailSerializer})
    def post(self, request):
        serializer = PasswordResetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.password_reset_request(email=serializer.validated_data["email"])
        return Response(
            {"detail": "If an account uses this address, a reset email is on its way."},
            status=status.HTTP_202_ACCEPTED,
        )


class PasswordResetConfirmView(APIView):
    """Set a new password with the uid and token from the reset email."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "password-reset"

    @extend_schema(request=PasswordResetConfirmSerializer, responses={200: DetailSerializer})
    def post(self, request):
        serializer = PasswordResetConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.password_reset_confirm(**serializer.validated_data)
        return Response({"detail": "Your password is changed. Log in with the new one."})


class RefreshView(APIView):
    """Exchange a refresh token for a new access token, while its login lasts."""

    permission_classes = [AllowAny]
    authentication_classes = []

    def get_authenticate_header(self, request) -> str:
        # No authenticator runs here, but a refused token is still a 401 (DRF makes it 403).
        return 'Bearer realm="api"'

    @extend_schema(request=RefreshSerializer, responses={200: RefreshSerializer, 401: DetailSerializer})
    def post(self, request):
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data)


class UserViewSet(ScopedViewSet):
    serializer_class = UserSerializer
    filterset_class = UserFilter
    rules = rules_for(Resource.USER, list=Action.VIEW, retrieve=Action.VIEW, create=Action.CREATE,
                      partial_update=Action.EDIT, destroy=Action.DELETE)

    def get_queryset(self):
        return selectors.user_list(user=self.request.user)

    @extend_schema(request=UserCreateSerializer, responses={201: UserSerializer})
    def create(self, request):
        user = services.user_create(actor=request.user, **self._input(UserCreateSerializer))
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=UserUpdateSerializer, responses=UserSerializer)
    def partial_update(self, request, pk=None):
        user = self.get_object()
        user = services.user_update(actor=request.user, user=user, **self._input(UserUpdateSerializer))
        return Response(UserSerializer(user).data)

    def destroy(self, request, pk=None):
        services.user_delete(actor=request.user, user=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoleViewSet(ScopedViewSet):
    serializer_class = RoleSerializer
    rules = rules_for(Resource.ROLE, list=Action.VIEW, retrieve=Action.VIEW, create=Action.CREATE)

    def get_queryset(self):
        return selectors.role_list(user=self.request.user)

    @extend_schema(request=RoleCreateSerializer, responses={201: RoleSerializer})
    def create(self, request):
        role = services.role_create(actor=request.user, **self._input(RoleCreateSerializer))
        return Response(RoleSerializer(role).data, status=status.HTTP_201_CREATED)


class RuleViewSet(ScopedViewSet):
    serializer_class = RuleSerializer
    rules = rules_for(Resource.ROLE, list=Action.VIEW, retrieve=Action.VIEW)

    def get_queryset(self):
        return selectors.rule_list(user=self.request.user)


class AuditEventViewSet(mixins.ListModelMixin, GuardedViewSet):
    """The audit log, newest first. Only callers with global audit rights see events."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    rules = rules_for(Resource.AUDIT, list=Action.VIEW)

    def get_queryset(self):
        return selectors.audit_list(user=self.request.user)


class SigningKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GuardedViewSet):
    """Public keys whose image signatures count as a user's: a catalogue approval needs the
    reviewer's signature of the entry's digest by one of their keys. Everyone manages their
    own; user admins see (and, holding the user's rights, manage) those of their users."""

    serializer_class = SigningKeySerializer
    permission_classes = [IsUser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator, with no caller
            return SigningKey.objects.none()
        return selectors.signing_key_list(user=self.request.user).order_by("id")

    @extend_schema(request=SigningKeyCreateSerializer, responses={201: SigningKeySerializer})
    def create(self, request):
        data = self._input(SigningKeyCreateSerializer)
        key = services.signing_key_add(actor=request.user, user=data.pop("user", request.user), **data)
        return Response(SigningKeySerializer(key).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        services.signing_key_remove(actor=request.user, key=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
