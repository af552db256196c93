from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("api/", include("vantage.api_urls")),  # first: the API takes nearly all requests
    path("", RedirectView.as_view(pattern_name="portal:dashboard", permanent=False)),
    path("portal/", include("portal.urls")),
    path("admin/", admin.site.urls),
]
