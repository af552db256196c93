"""The append-only, hash-chained audit log.

`audit_record` must be called inside the transaction of the change it records, so the
change and its audit row commit or roll back together.
"""

import hashlib
import json

from django.db import transaction
from django.utils import timezone

from accounts.models import AuditChainHead, AuditEvent
from vantage.prepared import PreparedInsert, execute

GENESIS_HASH = "0" * 64


def _actor_fields(actor) -> tuple[str, int | None, str]:
    from collaborations.models import Node

    if actor is None:
        return AuditEvent.ActorType.SYSTEM, None, "system"
    if isinstance(actor, Node):
        return AuditEvent.ActorType.NODE, actor.pk, f"node:{actor.name}"
    container_run = getattr(actor, "container_run", None)
    if container_run is not None:
        return AuditEvent.ActorType.CONTAINER, container_run.pk, f"container:run#{container_run.pk}"
    return AuditEvent.ActorType.USER, actor.pk, actor.get_username()


def _event_hash(prev_hash: str, fields: dict) -> str:
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


def _hashed_fields(event) -> dict:
    """What an event's hash covers, from a stored AuditEvent or the values being inserted."""
    get = event.get if isinstance(event, dict) else event.__dict__.get
    return {
        "created_at": get("created_at").isoformat(),
        "actor_type": get("actor_type"),
        "actor_id": get("actor_id"),
        "actor_label": get("actor_label"),
        "verb": get("verb"),
        "target_type": get("target_type"),
        "target_id": get("target_id"),
        "target_label": get("target_label"),
        "details": get("details"),
    }


def audit_record(*, actor, verb: str, target=None, details: dict | None = None) -> None:
    """Append one event to the chain, in the caller's transaction."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    actor_type, actor_id, actor_label = _actor_fields(actor)
    # Plain values, not an AuditEvent instance: this runs in every audited write.
    event = {
        "created_at": timezone.now(),
        "actor_type": actor_type,
        "actor_id": actor_id,
        "actor_label": actor_label[:200],
        "verb": verb,
        "target_type": target._meta.model_name if target is not None else "",
        "target_id": str(target.pk) if target is not None else "",
        "target_label": str(target)[:200] if target is not None else "",
        "details": details or {},
    }
    fields = _hashed_fields(event)
    with connection.cursor() as cursor:  # one cursor for every statement
        prev_hash = _head_seen.get(connection.alias)
        if prev_hash is not None:
            # The head is most likely what this process last wrote: swap it in one
            # statement. The condition decides, so a stale guess (another process wrote
            # since, or that transaction rolled back) only costs the slower path.
            new_hash = _event_hash(prev_hash, fields)
            execute(connection, cursor, _swap_head_sql(connection), [new_hash, prev_hash])
            if cursor.rowcount != 1:
                prev_hash = None
        if prev_hash is None:
            # The head row lock serialises appenders, so each event links to exactly one predecessor.
            prev_hash = _lock_head(connection, cursor)
            new_hash = _event_hash(prev_hash, fields)
            execute(connection, cursor, _update_head_sql(connection), [new_hash])
        _head_seen[connection.alias] = new_hash
        _insert_event.execute(connection, cursor, **event, prev_hash=prev_hash, hash=new_hash)


# The newest hash this process put in each database's head row (by connection alias):
# the next append's guess at the head, checked by the swap that uses it.
_head_seen: dict[str, str] = {}


# Every audited write swaps the head row and inserts its event (reading the head first
# when the swap's guess was stale): as plain SQL these statements cost a fraction of
# what building them through the ORM does.
_EVENT_COLUMNS = (
    "created_at", "actor_type", "actor_id", "actor_label", "verb", "target_type", "target_id", "target_label",
    "details", "prev_hash", "hash",
)
_insert_event = PreparedInsert(AuditEvent, fields=_EVENT_COLUMNS)

def _head_table(connection) -> str:
    return connection.ops.quote_name(AuditChainHead._meta.db_table)


def _update_head_sql(connection) -> str:
    return f"UPDATE {_head_table(connection)} SET last_hash = %s WHERE id = 1"


def _swap_head_sql(connection) -> str:
    return f"UPDATE {_head_table(connection)} SET last_hash = %s WHERE id = 1 AND last_hash = %s"


def _lock_head(connection, cursor) -> str:
    """The chain's newest hash, with the head row locked until the transaction ends."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""  # SQLite: the write lock serialises
    cursor.execute(f"SELECT last_hash FROM {_head_table(connection)} WHERE id = 1{lock}")
    row = cursor.fetchone()
    if row is not None:
        return row[0]
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1, defaults={"last_hash": GENESIS_HASH})
    return head.last_hash


def verify_chain() -> int | None:
    """Id of the first event whose hash does not match the chain, or None when intact.

    The head row holds the newest hash, so deleting the latest events is caught too:
    the answer is then the id of the last surviving event (0 when none survives).
    """
    prev, last_id = GENESIS_HASH, 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != prev or event.hash != _event_hash(prev, _hashed_fields(event)):
            return event.pk
        prev, last_id = event.hash, event.pk
    head = AuditChainHead.objects.filter(pk=1).values_list("last_hash", flat=True).first()
    if head is not None and head != prev:
        return last_id
    return None
