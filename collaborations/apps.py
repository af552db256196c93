from django.apps import AppConfig


class CollaborationsConfig(AppConfig):
    name = "collaborations"
    verbose_name = "Organisations, collaborations and nodes"

    def ready(self) -> None:
        from accounts.audit import register_actor
        from accounts.models import AuditEvent
        from accounts.selectors import register_organization_reads
        from collaborations import selectors
        from collaborations.models import Node

        register_actor(Node, lambda node: (AuditEvent.ActorType.NODE, node.pk, f"node:{node.name}"))
        register_organization_reads(organization_list=selectors.organization_list,
                                    partner_organization_ids=selectors.partner_organization_ids)
