"""The list filter backend: django-filter, without its cost when no filter is asked for."""

from django import forms
from django_filters import NumberFilter
from django_filters.rest_framework import DjangoFilterBackend

from core.ids import MAX_ID


class IdFilter(NumberFilter):
    """A filter on an object id: a whole number within the id columns' 64-bit range.

    django-filter's NumberFilter takes any decimal up to 1e50, and a value such as
    `-4e68` or `99999999999999999999` then failed in the database (a 500). Every filter on
    an id uses this one instead, so such a value is a 400 naming the parameter.
    """

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


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
