"""Admin for organisations, collaborations, studies and nodes; every write through a service.

A node's API key exists in clear only in the response of the request that created or
rotated it: it is rendered on a page of its own (never stored in a message cookie or
the session, never cached) and cannot be shown again.
"""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers

from collaborations.models import Collaboration, Node, Organization, Study
from collaborations.services import (
    collaboration_archive,
    collaboration_create,
    collaboration_update,
    node_create,
    node_delete,
    node_rotate_key,
    organization_create,
    organization_update,
    study_create,
    study_delete,
    study_update,
)
from core.admin import SERVICE_ERRORS, ServiceAdmin, changed_values, pretty_json, service_error_text


@admin.register(Organization)
class OrganizationAdmin(ServiceAdmin):
    list_display = ("name", "country", "domain", "require_second_factor", "created_at")
    list_filter = ("country", "require_second_factor")
    search_fields = ("name", "domain")
    fields = ("name", "country", "domain", "public_key", "require_second_factor", "created_at")
    readonly_fields = ("created_at",)

    # No service deletes organisations: their users, nodes and runs refer to them.
    def has_delete_permission(self, request, obj=None):
        return False

    def create_object(self, request, form):
        data = form.cleaned_data
        return organization_create(
            actor=request.user, name=data["name"], country=data["country"], domain=data["domain"],
            public_key=data["public_key"], require_second_factor=data["require_second_factor"],
        )

    def update_object(self, request, organization, form):
        changes = changed_values(form, ("name", "country", "domain", "public_key", "require_second_factor"))
        return organization_update(actor=request.user, organization=organization, **changes)


@admin.register(Collaboration)
class CollaborationAdmin(ServiceAdmin):
    list_display = ("name", "status", "encrypted", "organization_count", "created_at")
    list_filter = ("status", "encrypted")
    search_fields = ("name",)
    autocomplete_fields = ("organizations",)
    fields = ("name", "organizations", "encrypted", "status", "created_at")
    readonly_fields = ("status", "created_at")
    actions = ("archive",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(organization_count=Count("organizations"))

    @admin.display(description="organisations", ordering="organization_count")
    def organization_count(self, collaboration):
        return collaboration.organization_count

    # A collaboration keeps its history: it is archived, never deleted.
    def has_delete_permission(self, request, obj=None):
        return False

    def create_object(self, request, form):
        data = form.cleaned_data
        return collaboration_create(
            actor=request.user, name=data["name"], organizations=list(data["organizations"]),
            encrypted=data["encrypted"],
        )

    def update_object(self, request, collaboration, form):
        changes = changed_values(form, ("name", "organizations", "encrypted"))
        return collaboration_update(actor=request.user, collaboration=collaboration, **changes)

    @admin.action(description="Archive selected collaborations (no new tasks)", permissions=["change"])
    def archive(self, request, queryset):
        self.run_service_per_object(
            request, queryset, lambda c: collaboration_archive(actor=request.user, collaboration=c),
            "{count} collaboration(s) archived.",
        )


@admin.register(Study)
class StudyAdmin(ServiceAdmin):
    list_display = ("name", "collaboration", "organization_count", "created_at")
    list_select_related = ("collaboration",)
    list_filter = ("collaboration",)
    search_fields = ("name", "collaboration__name")
    autocomplete_fields = ("collaboration", "organizations")
    fields = ("collaboration", "name", "organizations", "created_at")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(organization_count=Count("organizations"))

    def get_readonly_fields(self, request, obj=None):
        # study_update cannot move a study to another collaboration.
        return ("created_at",) if obj is None else ("collaboration", "created_at")

    @admin.display(description="organisations", ordering="organization_count")
    def organization_count(self, study):
        return study.organization_count

    def create_object(self, request, form):
        data = form.cleaned_data
        return study_create(
            actor=request.user, collaboration=data["collaboration"], name=data["name"],
            organizations=list(data["organizations"]),
        )

    def update_object(self, request, study, form):
        return study_update(actor=request.user, study=study, **changed_values(form, ("name", "organizations")))

    def delete_model(self, request, obj):
        study_delete(actor=request.user, study=obj)


@admin.register(Node)
class NodeAdmin(ServiceAdmin):
    list_display = ("name", "organization", "collaboration", "status", "last_seen_at", "api_key_prefix",
                    "key_created_at")
    list_select_related = ("organization", "collaboration")
    list_filter = ("status", "collaboration", "organization")
    search_fields = ("name", "organization__name", "collaboration__name", "=api_key_prefix")
    autocomplete_fields = ("organization", "collaboration")
    actions = ("rotate_keys",)
    # The key hash is never shown; the prefix (the `vnk_<prefix>_` part of the key) tells
    # which key a node holds without revealing it.
    shown_fields = ("name", "organization", "collaboration", "status", "last_seen_at", "api_key_prefix",
                    "key_created_at", "reported_config_display", "created_at")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "organization", "collaboration")
        return self.shown_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.shown_fields

    @admin.display(description="reported configuration")
    def reported_config_display(self, node):
        return pretty_json(node.reported_config)

    # Nodes are created, re-keyed and deleted; nothing else about them is edited here.
    def has_change_permission(self, request, obj=None):
        return False

    def has_rotate_permission(self, request, obj=None):
        return request.user.has_perm("collaborations.change_node")

    def create_object(self, request, form):
        data = form.cleaned_data
        node, key = node_create(
            actor=request.user, organization=data["organization"], collaboration=data["collaboration"],
            name=data["name"],
        )
        # Kept on this in-memory instance only, for response_add to show once.
        node.issued_api_key = key
        return node

    def response_add(self, request, obj, post_url_continue=None):
        return self.key_page(request, [(obj, obj.issued_api_key)], title="Node created: copy its API key now")

    def delete_model(self, request, obj):
        node_delete(actor=request.user, node=obj)

    def key_page(self, request, issued, *, title):
        """The one page that ever shows these keys: never cached, never stored."""
        response = TemplateResponse(
            request,
            "admin/collaborations/node/api_keys.html",
            {**self.admin_site.each_context(request), "title": title, "opts": self.opts, "issued": issued},
        )
        add_never_cache_headers(response)
        return response

    @admin.action(description="Rotate the API keys of selected nodes", permissions=["rotate"])
    def rotate_keys(self, request, queryset):
        issued = []
        for node in queryset:
            try:
                issued.append((node, node_rotate_key(actor=request.user, node=node)))
            except SERVICE_ERRORS as exc:
                self.message_user(request, f"{node}: {service_error_text(exc)}", messages.ERROR)
            else:
                self.log_change(request, node, "Rotated the API key.")
        if not issued:
            return None
        return self.key_page(request, issued, title="New API keys: copy them now")

    def get_urls(self):
        return [
            path(
                "<path:object_id>/rotate-key/",
                self.admin_site.admin_view(self.rotate_key_view),
                name="collaborations_node_rotate_key",
            ),
            *super().get_urls(),
        ]

    def rotate_key_view(self, request, object_id):
        """Confirm (GET), then rotate the node's key and show the new one (POST)."""
        node = self.get_object(request, unquote(object_id))
        if node is None:
            raise Http404("No such node.")
        if not self.has_rotate_permission(request, node):
            raise PermissionDenied
        if request.method == "POST":
            try:
                key = node_rotate_key(actor=request.user, node=node)
            except SERVICE_ERRORS as exc:
                self.message_user(request, service_error_text(exc), messages.ERROR)
                return HttpResponseRedirect(
                    reverse(f"{self.admin_site.name}:collaborations_node_change", args=[node.pk])
                )
            self.log_change(request, node, "Rotated the API key.")
            return self.key_page(request, [(node, key)], title="New API key: copy it now")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rotate the API key of {node}?",
            "opts": self.opts,
            "original": node,
        }
        return TemplateResponse(request, "admin/collaborations/node/rotate_key_confirmation.html", context)
