"""Query-string filters for the accounts API lists."""

import django_filters

from accounts.models import AuditEvent, User
from core.filters import IdFilter


class UserFilter(django_filters.FilterSet):
    organization = IdFilter(field_name="organization_id")
    role = django_filters.CharFilter(field_name="roles__name", help_text="Role name.")
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = User
        fields = ["organization", "role", "is_active"]


class AuditEventFilter(django_filters.FilterSet):
    verb = django_filters.CharFilter()
    actor_type = django_filters.ChoiceFilter(choices=AuditEvent.ActorType.choices)
    target_type = django_filters.CharFilter()
    target_id = django_filters.CharFilter()

    class Meta:
        model = AuditEvent
        fields = ["verb", "actor_type", "target_type", "target_id"]
