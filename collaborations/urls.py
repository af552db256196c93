from django.urls import path

from collaborations import api
from core.routers import Router

router = Router()
router.register("organizations", api.OrganizationViewSet, basename="organization")
router.register("collaborations", api.CollaborationViewSet, basename="collaboration")
router.register("studies", api.StudyViewSet, basename="study")
router.register("nodes", api.NodeViewSet, basename="node")

urlpatterns = [
    path("node/token/", api.NodeTokenView.as_view(), name="node-token"),
    path("node/me/", api.NodeMeView.as_view(), name="node-me"),
    path("node/me/report/", api.NodeReportView.as_view(), name="node-me-report"),
    *router.urls,
]
