"""The base every Vantage admin uses: forms and actions that write through services.

Every write made in the admin goes through a service with the logged-in administrator
as actor, so it is checked and audited exactly like the same write through the API.
"""

import json

from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import QuerySet
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from core.errors import DomainError

SERVICE_ERRORS = (DomainError, ValidationError)


def service_error_messages(exc) -> dict[str | None, list[str]]:
    """A service's DomainError or ValidationError as {field name or None: [messages]}."""
    if isinstance(exc, DomainError):
        return {exc.field: [exc.message]}
    if hasattr(exc, "error_dict"):
        return {
            (None if field == NON_FIELD_ERRORS else field): [m for error in errors for m in error.messages]
            for field, errors in exc.error_dict.items()
        }
    return {None: exc.messages}


def service_error_text(exc) -> str:
    return " ".join(
        f"{field}: {message}" if field else message
        for field, found in service_error_messages(exc).items()
        for message in found
    )


def add_service_errors(form, exc) -> None:
    """Put a service error on the form: on its field when the form has it, else on top."""
    for field, found in service_error_messages(exc).items():
        if field is not None and field not in form.fields:
            found, field = [f"{field}: {message}" for message in found], None
        form.add_error(field, found)


class ServiceFormMixin:
    """Makes a ModelForm write through a service at the end of its validation.

    The admin validates a form inside its own transaction, then calls save_model. Calling
    the service from save_model would turn a DomainError into a 500; calling it at the
    end of full_clean instead puts the error on the form, which the admin shows again
    with the input. The service's writes and audit event stay in the admin's
    transaction. `write_through_service` is set per request by ServiceAdminMixin.
    """

    def full_clean(self):
        super().full_clean()
        if not self.is_bound or self.errors:
            return
        if self.instance.pk is not None and not self.has_changed():
            return
        try:
            self.instance = self.write_through_service()
        except SERVICE_ERRORS as exc:
            add_service_errors(self, exc)

    def save(self, commit=True):
        return self.instance


class ServiceAdminMixin:
    """ModelAdmin whose add/change forms call `create_object`/`update_object` (services).

    An admin allowing add defines `create_object(request, form)`, one allowing change
    defines `update_object(request, obj, form)`, one allowing delete overrides
    `delete_model` with its service; each returns what the service returns.
    """

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)

        def write_through_service(form):
            if change:
                # By now ModelForm's validation has copied the new values onto
                # form.instance. A service compares what changes against the object it
                # is given (to run its guards and to name the changes in the audit), so
                # it gets the stored object, as the API's views give it: handed the
                # form's instance it saw no change, skipped its guards and saved anyway.
                stored = self.model._default_manager.get(pk=form.instance.pk)
                return self.update_object(request, stored, form)
            return self.create_object(request, form)

        return type(
            form_class.__name__, (ServiceFormMixin, form_class), {"write_through_service": write_through_service}
        )

    def save_model(self, request, obj, form, change):
        """Nothing to do: the form's service call has saved and audited obj."""

    def save_related(self, request, form, formsets, change):
        """Nothing to do: the service has set the many-to-many fields too; there are no editable inlines."""

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Django's bulk delete deletes the queryset directly, past the services and their
        # audit; objects are deleted one at a time from their own page instead.
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except SERVICE_ERRORS as exc:
            self.message_user(request, service_error_text(exc), messages.ERROR)
            opts = self.opts
            return HttpResponseRedirect(
                reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[object_id])
            )

    def run_service_per_object(self, request, queryset, service, done_message: str) -> None:
        """Call service(obj) for each object (an admin action), reporting refusals per object."""
        done = 0
        for obj in queryset:
            try:
                service(obj)
            except SERVICE_ERRORS as exc:
                self.message_user(request, f"{obj}: {service_error_text(exc)}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, done_message.format(count=done), messages.SUCCESS)


class ServiceAdmin(ServiceAdminMixin, admin.ModelAdmin):
    pass


class ReadOnlyMixin:
    """For records that only the system writes: shown, never added, changed or deleted here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    pass


def changed_values(form, names) -> dict:
    """The form's changed values among `names`, as keyword arguments for an update service."""
    values = {name: form.cleaned_data[name] for name in form.changed_data if name in names}
    return {name: list(value) if isinstance(value, QuerySet) else value for name, value in values.items()}


def pretty_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))
