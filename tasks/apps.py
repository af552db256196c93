from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Algorithms, tasks and runs"

    def ready(self) -> None:
        from accounts.audit import register_actor
        from accounts.models import AuditEvent
        from tasks.container_tokens import ContainerPrincipal

        register_actor(ContainerPrincipal, lambda container: (
            AuditEvent.ActorType.CONTAINER, container.run_id, f"container:run#{container.run_id}"))
