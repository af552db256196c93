"""Writes for organisations, collaborations, studies and nodes.

Every function is keyword-only, runs in one transaction, validates with full_clean and
records an audit event in that same transaction. `actor=None` is the system itself
(migrations, management commands); a user actor is checked against their roles here,
because object permissions do not run on create.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Action, Resource, Scope
from accounts.permissions import user_scope
from collaborations import node_keys
from collaborations.models import Collaboration, Node, Organization, Study
from collaborations.selectors import collaboration_non_members, member_collaboration_ids
from core import events
from core.errors import DomainError, NotAllowed


def _require(actor, resource: str, action: str, *, organization_id=None, collaboration_id=None) -> None:
    """Refuse unless the actor's scope for resource×action covers the given object."""
    if actor is None:
        return
    scope = user_scope(actor, resource, action)
    if scope is None:
        raise NotAllowed(f"Your roles do not allow {action} on {resource}.")
    if scope == Scope.GLOBAL:
        return
    own_org = actor.organization_id
    if collaboration_id is not None and scope == Scope.COLLABORATION:
        if member_collaboration_ids(own_org).filter(collaboration_id=collaboration_id).exists():
            return
        raise NotAllowed(f"Your roles allow {action} on {resource} only in your own collaborations.")
    if organization_id is not None and organization_id == own_org:
        return
    raise NotAllowed(f"Your roles allow {action} on {resource} only for your own organisation.")


def _save(obj) -> None:
    obj.full_clean()
    obj.save()


@transaction.atomic
def organization_create(*, actor, name: str, country: str = "", domain: str = "", public_key: str = "",
                        require_second_factor: bool = False) -> Organization:
    """Register an organisation (hospital, registry)."""
    _require(actor, Resource.ORGANIZATION, Action.CREATE)
    org = Organization(name=name, country=country.upper(), domain=domain, public_key=public_key,
                       require_second_factor=require_second_factor)
    _save(org)
    audit_record(actor=actor, verb="organization.created", target=org,
                 details={"require_second_factor": require_second_factor})
    return org


@transaction.atomic
def organization_update(*, actor, organization: Organization, **changes) -> Organization:
    """Change an organisation's name, country, domain or public key."""
    _require(actor, Resource.ORGANIZATION, Action.EDIT, organization_id=organization.pk)
    allowed = {"name", "country", "domain", "public_key", "require_second_factor"}
    unknown = set(changes) - allowed
    if unknown:
        raise DomainError(f"Cannot change {', '.join(sorted(unknown))}.")
    details: dict = {"fields": sorted(changes)}
    if "require_second_factor" in changes:
        # A security setting: the audit says what it is now, not only that it was set.
        details["require_second_factor"] = bool(changes["require_second_factor"])
    for field, value in changes.items():
        setattr(organization, field, value.upper() if field == "country" else value)
    _save(organization)
    audit_record(actor=actor, verb="organization.updated", target=organization, details=details)
    return organization


@transaction.atomic
def collaboration_create(
    *, actor, name: str, organizations: list[Organization], encrypted: bool = False
) -> Collaboration:
    """Create a collaboration of organisations."""
    _require(actor, Resource.COLLABORATION, Action.CREATE)
    collaboration = Collaboration(name=name, encrypted=encrypted)
    _save(collaboration)
    collaboration.organizations.set(organizations)
    audit_record(
        actor=actor, verb="collaboration.created", target=collaboration,
        details={"organizations": sorted(o.pk for o in organizations), "encrypted": encrypted},
    )
    return collaboration


@transaction.atomic
def collaboration_update(
    *, actor, collaboration: Collaboration, name: str | None = None,
    organizations: list[Organization] | None = None, encrypted: bool | None = None,
) -> Collaboration:
    """Rename, change members or the encryption flag of a collaboration."""
    _require(actor, Resource.COLLABORATION, Action.EDIT, collaboration_id=collaboration.pk)
    details = {}
    if name is not None:
        collaboration.name = name
        details["name"] = name
    if encrypted is not None and encrypted != collaboration.encrypted:
        if collaboration.tasks.exists():
            raise DomainError("Encryption cannot change once the collaboration has tasks.", field="encrypted")
        collaboration.encrypted = encrypted
        details["encrypted"] = encrypted
    _save(collaboration)
    if organizations is not None:
        removed = set(collaboration.organizations.values_list("pk", flat=True)) - {o.pk for o in organizations}
        if removed and collaboration.nodes.filter(organization_id__in=removed).exists():
            raise DomainError(
                "Remove the nodes of an organisation before removing it from the collaboration.",
                field="organizations",
            )
        collaboration.organizations.set(organizations)
        details["organizations"] = sorted(o.pk for o in organizations)
    audit_record(actor=actor, verb="collaboration.updated", target=collaboration, details=details)
    return collaboration


@transaction.atomic
def collaboration_archive(*, actor, collaboration: Collaboration) -> Collaboration:
    """Archive a collaboration: it keeps its history but accepts no new tasks."""
    _require(actor, Resource.COLLABORATION, Action.EDIT, collaboration_id=collaboration.pk)
    if collaboration.status == Collaboration.Status.ARCHIVED:
        return collaboration
    collaboration.status = Collaboration.Status.ARCHIVED
    collaboration.save(update_fields=["status"])
    audit_record(actor=actor, verb="collaboration.archived", target=collaboration)
    return collaboration


def _check_study_members(collaboration: Collaboration, organizations: list[Organization]) -> None:
    outsiders = collaboration_non_members(collaboration=collaboration, organization_ids=[o.pk for o in organizations])
    if outsiders:
        raise DomainError(
            f"Organisations {sorted(outsiders)} are not members of collaboration {collaboration.pk}.",
            field="organizations",
        )


@transaction.atomic
def study_create(*, actor, collaboration: Collaboration, name: str, organizations: list[Organization]) -> Study:
    """Create a study: a named subset of a collaboration's organisations."""
    _require(actor, Resource.STUDY, Action.CREATE, collaboration_id=collaboration.pk)
    _check_study_members(collaboration, organizations)
    study = Study(collaboration=collaboration, name=name)
    _save(study)
    study.organizations.set(organizations)
    audit_record(actor=actor, verb="study.created", target=study,
                 details={"organizations": sorted(o.pk for o in organizations)})
    return study


@transaction.atomic
def study_update(
    *, actor, study: Study, name: str | None = None, organizations: list[Organization] | None = None
) -> Study:
    """Rename a study or change its organisations."""
    _require(actor, Resource.STUDY, Action.EDIT, collaboration_id=study.collaboration_id)
    details = {}
    if name is not None:
        study.name = name
        _save(study)
        details["name"] = name
    if organizations is not None:
        _check_study_members(study.collaboration, organizations)
        study.organizations.set(organizations)
        details["organizations"] = sorted(o.pk for o in organizations)
    audit_record(actor=actor, verb="study.updated", target=study, details=details)
    return study


@transaction.atomic
def study_delete(*, actor, study: Study) -> None:
    """Delete a study; its tasks stay, without a study."""
    _require(actor, Resource.STUDY, Action.DELETE, collaboration_id=study.collaboration_id)
    audit_record(actor=actor, verb="study.deleted", target=study)
    study.delete()


@transaction.atomic
def node_create(
    *, actor, organization: Organization, collaboration: Collaboration, name: str
) -> tuple[Node, str]:
    """Register a node; returns it with its API key, which is shown this once only."""
    scope = user_scope(actor, Resource.NODE, Action.CREATE) if actor is not None else Scope.GLOBAL
    if scope == Scope.COLLABORATION:
        _require(actor, Resource.NODE, Action.CREATE, collaboration_id=collaboration.pk)
    else:
        _require(actor, Resource.NODE, Action.CREATE, organization_id=organization.pk)
    if collaboration_non_members(collaboration=collaboration, organization_ids=[organization.pk]):
        raise DomainError(
            f"Organisation {organization.pk} is not a member of collaboration {collaboration.pk}.",
            field="organization",
        )
    new_key = node_keys.generate_key()
    node = Node(
        name=name, organization=organization, collaboration=collaboration,
        api_key_prefix=new_key.prefix, api_key_hash=new_key.hashed, key_created_at=timezone.now(),
    )
    _save(node)
    audit_record(actor=actor, verb="node.created", target=node,
                 details={"organization": organization.pk, "collaboration": collaboration.pk})
    return node, new_key.key


def _require_node_edit(actor, node: Node, action: str = Action.EDIT) -> None:
    scope = user_scope(actor, Resource.NODE, action) if actor is not None else Scope.GLOBAL
    if scope == Scope.COLLABORATION:
        _require(actor, Resource.NODE, action, collaboration_id=node.collaboration_id)
    else:
        _require(actor, Resource.NODE, action, organization_id=node.organization_id)


@transaction.atomic
def node_rotate_key(*, actor, node: Node) -> str:
    """Give a node a new API key; the old key and every token issued under it stop working."""
    _require_node_edit(actor, node)
    new_key = node_keys.generate_key()
    node.api_key_prefix = new_key.prefix
    node.api_key_hash = new_key.hashed
    node.key_created_at = timezone.now()
    node.save(update_fields=["api_key_prefix", "api_key_hash", "key_created_at"])
    audit_record(actor=actor, verb="node.key_rotated", target=node)
    return new_key.key


@transaction.atomic
def node_delete(*, actor, node: Node) -> None:
    """Remove a node; the runs it claimed keep their history."""
    _require_node_edit(actor, node, Action.DELETE)
    audit_record(actor=actor, verb="node.deleted", target=node)
    node.delete()


def node_authenticate(*, api_key: str) -> Node | None:
    """The node owning this API key, or None. Constant-time in the secret part."""
    prefix = node_keys.key_prefix(api_key)
    if prefix is None:
        return None
    node = Node.objects.select_related("organization", "collaboration").filter(api_key_prefix=prefix).first()
    if node is None or not node_keys.key_matches(api_key, node.api_key_hash):
        return None
    return node


@transaction.atomic
def node_report(*, node: Node, config: dict) -> Node:
    """Store what a node reports about itself (database labels, policy summary, version)."""
    if not isinstance(config, dict):
        raise DomainError("Expected a JSON object.", field="config")
    changed = config != node.reported_config
    now = timezone.now()
    Node.objects.filter(pk=node.pk).update(reported_config=config, last_seen_at=now, status=Node.Status.ONLINE)
    node.reported_config, node.last_seen_at, node.status = config, now, Node.Status.ONLINE
    if changed:
        audit_record(actor=node, verb="node.config_reported", target=node, details={"config": config})
    return node


def node_heartbeat(*, node_id: int) -> None:
    """Record that a node is alive; announce it when it comes back online."""
    now = timezone.now()
    with transaction.atomic():
        came_online = Node.objects.filter(pk=node_id).exclude(status=Node.Status.ONLINE).update(
            status=Node.Status.ONLINE, last_seen_at=now
        )
        if not came_online:
            Node.objects.filter(pk=node_id).update(last_seen_at=now)
            return
        node = Node.objects.get(pk=node_id)
        audit_record(actor=node, verb="node.online", target=node)
        publish_node_status(node)


def publish_node_status(node: Node) -> None:
    events.publish_to_users_on_commit(
        node.collaboration_id,
        {
            "type": f"node.{node.status}",
            "node": {"id": node.pk, "name": node.name, "organization": node.organization_id,
                     "collaboration": node.collaboration_id, "status": node.status,
                     "last_seen_at": node.last_seen_at.isoformat() if node.last_seen_at else None},
            "visibility": events.visibility(
                "node", collaboration=node.collaboration_id, organizations=[node.organization_id]
            ),
        },
    )


def nodes_mark_offline(*, now=None) -> int:
    """Mark nodes offline whose last heartbeat is older than VANTAGE_NODE_OFFLINE_AFTER_SECONDS."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.VANTAGE_NODE_OFFLINE_AFTER_SECONDS)
    stale = list(
        Node.objects.filter(status=Node.Status.ONLINE, last_seen_at__lt=cutoff).values_list("pk", flat=True)
    )
    marked = 0
    for node_id in stale:
        with transaction.atomic():
            # Compare-and-swap: a heartbeat arriving meanwhile keeps the node online.
            if not Node.objects.filter(pk=node_id, status=Node.Status.ONLINE, last_seen_at__lt=cutoff).update(
                status=Node.Status.OFFLINE
            ):
                continue
            node = Node.objects.get(pk=node_id)
            audit_record(actor=None, verb="node.offline", target=node)
            publish_node_status(node)
            marked += 1
    return marked
