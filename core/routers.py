"""The API's router: DRF's SimpleRouter with object ids parsed by core.ids.IdConverter."""

from django.urls import register_converter
from rest_framework.routers import SimpleRouter

from core.ids import IdConverter

register_converter(IdConverter, "id")


class Router(SimpleRouter):
    """Detail routes match `<id:pk>/`: a path id beyond 64 bits is a 404 before any view runs."""

    def __init__(self):
        super().__init__(use_regex_path=False)

    def get_lookup_regex(self, viewset, lookup_prefix=""):
        kwarg = getattr(viewset, "lookup_url_kwarg", None) or getattr(viewset, "lookup_field", "pk")
        converter = getattr(viewset, "lookup_value_converter", None) or "id"
        return f"<{converter}:{lookup_prefix}{kwarg}>"
