"""The list filter backend: django-filter, without its cost when no filter is asked for."""

from django_filters.rest_framework import DjangoFilterBackend


class FilterBackend(DjangoFilterBackend):
    """django-filter, skipped when the query string names none of the view's filters.

    Building a filter set and its form costs a noticeable share of a small list request
    (bench/README.md, "Consolidation"), and without any of its parameters it filters
    nothing. A parameter counts when it starts with a filter's name, so range widgets
    (`<name>_min`, `<name>_after`) count too.
    """

    def filter_queryset(self, request, queryset, view):
        filterset_class = getattr(view, "filterset_class", None)
        if filterset_class is not None and not any(
            param.startswith(name) for param in request.query_params for name in filterset_class.base_filters
        ):
            return queryset
        return super().filter_queryset(request, queryset, view)
