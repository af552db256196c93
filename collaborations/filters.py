"""Query-string filters for the collaborations API lists.

Related objects filter by id with core.filters.IdFilter: no lookup query, and an id outside the
caller's scope simply matches nothing.
"""

import django_filters

from collaborations.models import Collaboration, Node, Organization, Study
from core.filters import IdFilter


class OrganizationFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    country = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = Organization
        fields = ["name", "country"]


class CollaborationFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Collaboration.Status.choices)
    organization = IdFilter(field_name="organizations")

    class Meta:
        model = Collaboration
        fields = ["status", "organization"]


class StudyFilter(django_filters.FilterSet):
    collaboration = IdFilter(field_name="collaboration_id")

    class Meta:
        model = Study
        fields = ["collaboration"]


class NodeFilter(django_filters.FilterSet):
    collaboration = IdFilter(field_name="collaboration_id")
    organization = IdFilter(field_name="organization_id")
    status = django_filters.ChoiceFilter(choices=Node.Status.choices)

    class Meta:
        model = Node
        fields = ["collaboration", "organization", "status"]
