from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """Page numbers over a stable ordering; `next` is null on the last page.

    Every list view orders by a unique key (views add `pk` as tie-breaker), so walking
    `next` visits each row once and terminates whatever the page size.
    """

    page_size_query_param = "page_size"
    max_page_size = 1000

    def paginate_queryset(self, queryset, request, view=None):
        # A grouped queryset (e.g. annotated with counts) drops Meta.ordering: `ordered` says
        # whether any ordering really applies.
        ordering = [str(o) for o in (queryset.query.order_by or queryset.model._meta.ordering)]
        if not queryset.ordered or not ordering or ordering[-1].lstrip("-") not in ("pk", "id"):
            queryset = queryset.order_by(*ordering, "pk")
        return super().paginate_queryset(queryset, request, view)
