from core.routers import Router
from tasks import api

router = Router()
router.register("algorithms", api.AlgorithmViewSet, basename="algorithm")
router.register("tasks", api.TaskViewSet, basename="task")
router.register("runs", api.RunViewSet, basename="run")

urlpatterns = [*router.urls]
