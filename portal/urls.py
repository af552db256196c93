from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("logout/everywhere/", views.logout_everywhere_view, name="logout-everywhere"),
    path("security/", views.security, name="security"),
    path("collaborations/<int:pk>/", views.collaboration_detail, name="collaboration"),
    path("tasks/new/", views.task_create, name="task-create"),
    path("tasks/<int:pk>/", views.task_detail, name="task"),
    path("tasks/<int:pk>/kill/", views.task_kill, name="task-kill"),
    path("assets/<path:path>", views.asset, name="asset"),
]
