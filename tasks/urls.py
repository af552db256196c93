from rest_framework.routers import SimpleRouter

from tasks import api

router = SimpleRouter()
router.register("algorithms", api.AlgorithmViewSet, basename="algorithm")
router.register("tasks", api.TaskViewSet, basename="task")
router.register("runs", api.RunViewSet, basename="run")

urlpatterns = [*router.urls]
