from django.urls import path

from accounts import api
from core.routers import Router

router = Router()
router.register("users", api.UserViewSet, basename="user")
router.register("roles", api.RoleViewSet, basename="role")
router.register("rules", api.RuleViewSet, basename="rule")
router.register("audit", api.AuditEventViewSet, basename="audit")
router.register("signing-keys", api.SigningKeyViewSet, basename="signing-key")

urlpatterns = [
    path("token/", api.LoginView.as_view(), name="token"),
    path("token/refresh/", api.RefreshView.as_view(), name="token-refresh"),
    path("logout/", api.LogoutView.as_view(), name="logout"),
    path("logout/everywhere/", api.LogoutEverywhereView.as_view(), name="logout-everywhere"),
    path("password-reset/", api.PasswordResetView.as_view(), name="password-reset"),
    path("password-reset/confirm/", api.PasswordResetConfirmView.as_view(), name="password-reset-confirm"),
    *router.urls,
]
