from django.core.paginator import Page, Paginator
from rest_framework import pagination
from rest_framework.response import Response


def stable_order(queryset):
    """The queryset ordered by a unique key last (its own ordering, then pk)."""
    # A grouped queryset (e.g. annotated with counts) drops Meta.ordering: `ordered` says
    # whether any ordering really applies.
    ordering = [str(o) for o in (queryset.query.order_by or queryset.model._meta.ordering)]
    if not queryset.ordered or not ordering or ordering[-1].lstrip("-") not in ("pk", "id"):
        queryset = queryset.order_by(*ordering, "pk")
    return queryset


class FirstPageCountingPaginator(Paginator):
    """A paginator that counts a short first page by its rows instead of a COUNT query.

    Most lists a client asks for fit on their first page (a user's organisations, a
    node's open runs on a quiet day): those rows are the whole list, so counting them
    again in the database would only repeat the work.
    """

    def page(self, number):
        if number not in (1, "1"):
            return super().page(number)
        rows = list(self.object_list[: self.per_page])
        if len(rows) < self.per_page:
            self.count = len(rows)  # fills the cached property: no COUNT query
        # The count (a query when the page is full) also checks an empty first page.
        self.validate_number(1)
        return Page(rows, 1, self)


class PageNumberPagination(pagination.PageNumberPagination):
    """Page numbers over a stable ordering; `next` is null on the last page.

    Every list view orders by a unique key (`pk` added as tie-breaker), so walking
    `next` visits each row once and terminates whatever the page size.
    """

    django_paginator_class = FirstPageCountingPaginator
    page_size_query_param = "page_size"
    max_page_size = 1000

    def paginate_queryset(self, queryset, request, view=None):
        return super().paginate_queryset(stable_order(queryset), request, view)

    # The most frequent list request asks for the first page of an unfiltered list, which
    # a prepared query (core.prepared) can answer: these two say when, and answer.

    def plain_first_page_size(self, request) -> int | None:
        """The page size when the request asks for the first page and nothing else, else None."""
        params = request.query_params
        if any(key not in (self.page_query_param, self.page_size_query_param) for key in params):
            return None
        if params.get(self.page_query_param, "1") != "1":
            return None
        return self.get_page_size(request)

    def first_page_response(self, request, rows: list, page_size: int, count) -> Response:
        """The response for a first page whose rows came from elsewhere (a prepared query).

        `count()` is called only when the page is full, as the paginator would count.
        """
        paginator = self.django_paginator_class((), page_size)
        paginator.count = len(rows) if len(rows) < page_size else count()
        self.request = request
        self.page = Page(rows, 1, paginator)
        return self.get_paginated_response(rows)
