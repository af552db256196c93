from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.urls import urlpatterns as accounts_urlpatterns
from collaborations.urls import urlpatterns as collaborations_urlpatterns
from tasks.urls import urlpatterns as tasks_urlpatterns
from vantage.views import ApiIndexView, HealthView, VersionView

# One flat list: an include() that does not match records every pattern it tried,
# which cost a node's run request more than matching the pattern itself.
urlpatterns = [
    *tasks_urlpatterns,
    *collaborations_urlpatterns,
    *accounts_urlpatterns,
    path("health/", HealthView.as_view(), name="health"),
    path("version/", VersionView.as_view(), name="version"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: the page runs no inline script (core.csp).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("", ApiIndexView.as_view(), name="api-index"),
]
