"""Admin for users, roles, rules and the audit log.

Every write made in the admin goes through a service with the logged-in administrator
as actor, so it is checked and audited exactly like the same write through the API.
Where no service exists for a write (editing a role, deleting an organisation), the
admin does not offer it.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.utils import unquote
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import SetPasswordMixin, UserChangeForm, UserCreationForm
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from accounts.audit import find_break
from accounts.models import AuditEvent, Role, Rule, SigningKey, User
from accounts.services import (
    LoginRefused,
    confirmed_second_factor,
    login_authenticate,
    role_create,
    second_factor_reset,
    signing_key_add,
    signing_key_remove,
    user_create,
    user_delete,
    user_update,
)
from core.admin import (
    SERVICE_ERRORS,
    ReadOnlyAdmin,
    ServiceAdmin,
    ServiceAdminMixin,
    add_service_errors,
    changed_values,
    pretty_json,
)


# --- Login ---------------------------------------------------------------------------


class AdminLoginForm(AdminAuthenticationForm):
    """The admin's login under the same rules as the API and the portal
    (accounts.services.login_authenticate): lockout, counted failures, the second factor
    that every staff account needs."""

    otp = forms.CharField(
        label="Authenticator code", required=False, max_length=64,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text="The code your authenticator app shows, or a recovery code.",
    )

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = login_authenticate(request=self.request, username=username, password=password,
                                                     otp=self.cleaned_data.get("otp") or None)
            except LoginRefused as exc:
                raise ValidationError(exc.message, code=exc.code)
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


admin.site.login_form = AdminLoginForm


# --- Users ---------------------------------------------------------------------------

# Vantage grants rights through roles. Django's groups and per-user permissions would be a
# second, unaudited way to hand out admin rights, so they are neither shown on users nor
# editable: the admin is for superusers only.
admin.site.unregister(Group)

USER_EDITABLE_FIELDS = ("email", "first_name", "last_name", "is_active", "is_staff", "is_superuser", "roles")


class UserAddForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("username", "email", "first_name", "last_name", "organization", "roles", "is_staff", "is_superuser")


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class PasswordSetForm(SetPasswordMixin, forms.Form):
    """The admin's two-field password form; the new password is set through user_update."""

    password1, password2 = SetPasswordMixin.create_password_fields()

    def __init__(self, user, *args, actor, **kwargs):
        self.user = user
        self.actor = actor
        super().__init__(*args, **kwargs)

    def clean(self):
        self.validate_passwords()
        self.validate_password_for_user(self.user)
        return super().clean()

    def full_clean(self):
        super().full_clean()
        if not self.is_bound or self.errors:
            return
        try:
            self.user = user_update(actor=self.actor, user=self.user, password=self.cleaned_data["password1"])
        except SERVICE_ERRORS as exc:
            add_service_errors(self, exc)


@admin.register(User)
class UserAdmin(ServiceAdminMixin, DjangoUserAdmin):
    add_form = UserAddForm
    form = UserEditForm
    add_form_template = None
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "password1", "password2")}),
        ("Organisation and rights", {"fields": ("organization", "roles", "is_staff", "is_superuser")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
    )
    fieldsets = (
        (None, {"fields": ("username", "password", "organization")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Rights", {"fields": ("is_active", "is_staff", "is_superuser", "roles")}),
        ("Second factor", {"fields": ("second_factor",)}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    actions = ("reset_second_factor",)
    list_display = ("username", "organization", "email", "role_names", "is_active", "is_staff", "is_superuser")
    list_select_related = ("organization",)
    list_filter = ("is_active", "is_staff", "is_superuser", "roles", "organization")
    search_fields = ("username", "first_name", "last_name", "email", "organization__name")
    autocomplete_fields = ("organization",)
    filter_horizontal = ("roles",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("roles")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # user_update cannot move a user to another organisation or rename them.
        return ("username", "organization", "second_factor", "last_login", "date_joined")

    @admin.display(description="authenticator")
    def second_factor(self, user):
        factor = confirmed_second_factor(user)
        if factor is None:
            return "none set up"
        return f"set up {factor.confirmed_at:%Y-%m-%d %H:%M} UTC (reset it with the action on the list of users)"

    @admin.action(description="Reset the second factor of the selected users (lost phone)")
    def reset_second_factor(self, request, queryset):
        self.run_service_per_object(
            request, queryset, lambda user: second_factor_reset(actor=request.user, user=user, request=request),
            "Second factor reset for {count} user(s): they log in with their password and set up a new one.",
        )

    @admin.display(description="roles")
    def role_names(self, user):
        return ", ".join(role.name for role in user.roles.all())

    def create_object(self, request, form):
        data = form.cleaned_data
        return user_create(
            actor=request.user, username=data["username"], password=data["password1"],
            organization=data["organization"], email=data["email"], first_name=data["first_name"],
            last_name=data["last_name"], roles=list(data["roles"]), is_staff=data["is_staff"],
            is_superuser=data["is_superuser"],
        )

    def update_object(self, request, user, form):
        return user_update(actor=request.user, user=user, **changed_values(form, USER_EDITABLE_FIELDS))

    def delete_model(self, request, obj):
        user_delete(actor=request.user, user=obj)

    @method_decorator(sensitive_post_parameters())
    def user_change_password(self, request, id, form_url=""):
        user = self.get_object(request, unquote(id))
        if user is None:
            raise Http404("No such user.")
        if not self.has_change_permission(request, user):
            raise PermissionDenied
        form = PasswordSetForm(user, request.POST if request.method == "POST" else None, actor=request.user)
        if form.is_bound:
            with transaction.atomic():
                changed = form.is_valid()
                if changed:
                    self.log_change(request, form.user, "Changed password.")
            if changed:
                self.message_user(request, "Password changed.", messages.SUCCESS)
                update_session_auth_hash(request, form.user)
                return HttpResponseRedirect(reverse(f"{self.admin_site.name}:accounts_user_change", args=[user.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Change password: {user.get_username()}",
            "form": form,
            "form_url": form_url,
            "opts": self.opts,
            "original": user,
        }
        return TemplateResponse(request, "admin/accounts/user/change_password.html", context)


# --- Roles and rules -------------------------------------------------------------------


@admin.register(Role)
class RoleAdmin(ServiceAdmin):
    list_display = ("name", "is_builtin", "rule_count", "user_count", "description")
    list_filter = ("is_builtin",)
    search_fields = ("name", "description")
    filter_horizontal = ("rules",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "description", "rules")
        return ("name", "description", "is_builtin", "rules")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            rule_count=Count("rules", distinct=True), user_count=Count("users", distinct=True)
        )

    @admin.display(description="rules", ordering="rule_count")
    def rule_count(self, role):
        return role.rule_count

    @admin.display(description="users", ordering="user_count")
    def user_count(self, role):
        return role.user_count

    # Roles are fixed once created: there is no audited service to edit or delete them.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def create_object(self, request, form):
        data = form.cleaned_data
        return role_create(
            actor=request.user, name=data["name"], description=data["description"], rules=list(data["rules"])
        )


@admin.register(Rule)
class RuleAdmin(ReadOnlyAdmin):
    """The rule catalogue (resource × action × scope); roles are built from these."""

    list_display = ("__str__", "resource", "action", "scope")
    list_filter = ("resource", "action", "scope")
    search_fields = ("resource", "action")


# --- Signing keys ----------------------------------------------------------------------


@admin.register(SigningKey)
class SigningKeyAdmin(ServiceAdmin):
    """A reviewer's public keys: catalogue approvals need their signature by one of them.
    Added (checked, fingerprinted, audited by signing_key_add) and removed, never edited."""

    list_display = ("user", "name", "fingerprint", "created_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "name", "=fingerprint")
    autocomplete_fields = ("user",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name", "public_key")
        return ("user", "name", "fingerprint", "public_key", "created_at")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("user", "name", "fingerprint", "public_key", "created_at")

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def create_object(self, request, form):
        data = form.cleaned_data
        return signing_key_add(actor=request.user, user=data["user"], name=data["name"], public_key=data["public_key"])

    def delete_model(self, request, obj):
        signing_key_remove(actor=request.user, key=obj)


# --- Audit log -------------------------------------------------------------------------

# AuditChainHead is not registered: it is the one-row lock that serialises appends to
# the chain, holding a copy of the newest event's hash. Nothing in it is for reading,
# and any edit to it would break the next append's link; "Verify chain" checks the log.


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_type", "actor_label", "verb", "target_type", "target_id", "target_label",
                    "short_hash")
    list_filter = ("actor_type", "verb", "target_type")
    search_fields = ("verb", "actor_label", "target_label", "=target_id", "=hash")
    date_hierarchy = "created_at"
    # The log only grows: one COUNT(*) per page is enough (no second, unfiltered one).
    show_full_result_count = False
    fields = ("created_at", "actor_type", "actor_id", "actor_label", "verb", "target_type", "target_id",
              "target_label", "details_display", "prev_hash", "hash")
    readonly_fields = fields
    change_list_template = "admin/accounts/auditevent/change_list.html"

    @admin.display(description="hash")
    def short_hash(self, event):
        return event.hash[:12]

    @admin.display(description="details")
    def details_display(self, event):
        return pretty_json(event.details)

    def get_urls(self):
        return [
            path("verify/", self.admin_site.admin_view(self.verify_view), name="accounts_auditevent_verify"),
            *super().get_urls(),
        ]

    def verify_view(self, request):
        """Recompute the whole hash chain (POST only: it reads every event)."""
        if request.method != "POST":
            return HttpResponseRedirect(reverse(f"{self.admin_site.name}:accounts_auditevent_changelist"))
        if not self.has_view_permission(request):
            raise PermissionDenied
        broken_at = find_break()
        if broken_at is None:
            self.message_user(
                request, f"Audit chain intact: all {AuditEvent.objects.count()} events verified.", messages.SUCCESS
            )
        else:
            self.message_user(
                request,
                f"Audit chain broken at {broken_at}.",
                messages.ERROR,
            )
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:accounts_auditevent_changelist"))
