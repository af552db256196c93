from django.apps import AppConfig


class CollaborationsConfig(AppConfig):
    name = "collaborations"
    verbose_name = "Organisations, collaborations and nodes"

    def ready(self) -> None:
        from accounts.audit import register_actor
        from accounts.models import AuditEvent
        from collaborations.models import Node

        register_actor(Node, lambda node: (AuditEvent.ActorType.NODE, node.pk, f"node:{node.name}"))
