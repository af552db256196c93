from tasks import api
from vantage.routers import Router

router = Router()
router.register("algorithms", api.AlgorithmViewSet, basename="algorithm")
router.register("tasks", api.TaskViewSet, basename="task")
router.register("runs", api.RunViewSet, basename="run")

urlpatterns = [*router.urls]
