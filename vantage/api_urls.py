from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from vantage.views import HealthView, VersionView

urlpatterns = [
    path("", include("accounts.urls")),
    path("", include("collaborations.urls")),
    path("", include("tasks.urls")),
    path("health/", HealthView.as_view(), name="health"),
    path("version/", VersionView.as_view(), name="version"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
