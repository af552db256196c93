"""The append-only, hash-chained, keyed audit log.

`audit_record` must be called inside the transaction of the change it records, so the
change and its audit row commit or roll back together.

Each event's `hash` is an HMAC-SHA256, under the audit key, of the previous event's hash,
the event's own id and its content. The key is not in the database
(`VANTAGE_AUDIT_KEY` / `_FILE`, else derived from SECRET_KEY): whoever can write the
database but does not hold the key can neither edit an event nor recompute the hashes
after it. Events take consecutive ids from the head row (which also serialises appends),
so a missing event is named by its id. Deleting the newest events and setting the head
back needs no key; an anchor (`manage.py audit_anchor`: the newest id and hash, signed
with the key) kept outside the database catches that (`manage.py audit_verify --anchor`).
"""

import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import AuditChainHead, AuditEvent
from core.prepared import PreparedInsert, execute

GENESIS_HASH = "0" * 64
ANCHOR_PREFIX = "vantage-audit-anchor"


def audit_key() -> bytes:
    """The chain's HMAC key: VANTAGE_AUDIT_KEY, or one derived from SECRET_KEY without it."""
    if settings.VANTAGE_AUDIT_KEY:
        return settings.VANTAGE_AUDIT_KEY.encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"vantage audit chain", hashlib.sha256).digest()


# Principals other than users, each registered by the app that owns it in its
# AppConfig.ready (a node by collaborations, a container by tasks): kind -> describe,
# where describe(actor) gives (AuditEvent.ActorType, id, label).
_actor_kinds: dict[type, Callable[[object], tuple[str, int | None, str]]] = {}


def register_actor(kind: type, describe: Callable[[object], tuple[str, int | None, str]]) -> None:
    """Record actors of `kind` as describe(actor) says; any other actor is a user."""
    _actor_kinds[kind] = describe


def _actor_fields(actor) -> tuple[str, int | None, str]:
    if actor is None:
        return AuditEvent.ActorType.SYSTEM, None, "system"
    for kind, describe in _actor_kinds.items():
        if isinstance(actor, kind):
            return describe(actor)
    return AuditEvent.ActorType.USER, actor.pk, actor.get_username()


def event_hash(key: bytes, prev_hash: str, event_id: int, fields: dict) -> str:
    payload = json.dumps({"id": event_id, **fields}, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, (prev_hash + payload).encode(), hashlib.sha256).hexdigest()


def hashed_fields(event) -> dict:
    """What an event's hash covers (besides its id), from a stored AuditEvent or the values being inserted."""
    get = event.get if isinstance(event, dict) else functools.partial(getattr, event)
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
    with connection.cursor() as cursor:  # one cursor for every statement
        # The head row lock serialises appenders: each event links to exactly one
        # predecessor and takes the id after it.
        last_id, prev_hash = _lock_head(connection, cursor)
        event_id = last_id + 1
        new_hash = event_hash(audit_key(), prev_hash, event_id, hashed_fields(event))
        execute(connection, cursor, _update_head_sql(connection), [event_id, new_hash])
        _insert_event.execute(connection, cursor, id=event_id, **event, prev_hash=prev_hash, hash=new_hash)


# Every audited write updates the head row and inserts its event: as plain SQL these
# statements cost a fraction of what building them through the ORM does.
_EVENT_COLUMNS = (
    "id", "created_at", "actor_type", "actor_id", "actor_label", "verb", "target_type", "target_id",
    "target_label", "details", "prev_hash", "hash",
)
_insert_event = PreparedInsert(AuditEvent, fields=_EVENT_COLUMNS)


def _head_table(connection) -> str:
    return connection.ops.quote_name(AuditChainHead._meta.db_table)


def _update_head_sql(connection) -> str:
    return f"UPDATE {_head_table(connection)} SET last_id = %s, last_hash = %s WHERE id = 1"


def _lock_head(connection, cursor) -> tuple[int, str]:
    """The chain's newest id and hash, with the head row locked until the transaction ends."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""  # SQLite: the write lock serialises
    cursor.execute(f"SELECT last_id, last_hash FROM {_head_table(connection)} WHERE id = 1{lock}")
    row = cursor.fetchone()
    if row is not None:
        return row[0], row[1]
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(
        pk=1, defaults={"last_hash": GENESIS_HASH, "last_id": 0})
    return head.last_id, head.last_hash


# --- anchors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """The chain's newest event at a moment, signed with the audit key, to keep elsewhere."""

    last_id: int
    last_hash: str
    at: datetime

    def _mac(self) -> str:
        message = f"{ANCHOR_PREFIX} v1 {self.last_id} {self.last_hash} {self.at.isoformat()}"
        return hmac.new(audit_key(), message.encode(), hashlib.sha256).hexdigest()

    def __str__(self) -> str:
        return f"{ANCHOR_PREFIX} v1 {self.last_id} {self.last_hash} {self.at.isoformat()} {self._mac()}"

    @classmethod
    def parse(cls, text: str) -> "Anchor":
        """An anchor from its line; ValueError with a readable reason when it is not one, or forged."""
        parts = text.strip().split()
        if len(parts) != 6 or parts[:2] != [ANCHOR_PREFIX, "v1"]:
            raise ValueError(f"not a Vantage audit anchor (expected '{ANCHOR_PREFIX} v1 <id> <hash> <time> <mac>')")
        try:
            anchor = cls(last_id=int(parts[2]), last_hash=parts[3], at=datetime.fromisoformat(parts[4]))
        except ValueError:
            raise ValueError("the anchor's id or time is malformed") from None
        if not hmac.compare_digest(anchor._mac(), parts[5]):
            raise ValueError("the anchor's signature does not match this server's audit key")
        return anchor


def anchor_current() -> Anchor:
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None:
        return Anchor(last_id=0, last_hash=GENESIS_HASH, at=timezone.now())
    return Anchor(last_id=head.last_id, last_hash=head.last_hash, at=timezone.now())


# --- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    reason: str

    def __str__(self) -> str:
        return f"event #{self.event_id} {self.reason}"


def find_break(*, anchor: Anchor | None = None) -> ChainBreak | None:
    """The first event that is altered or missing, or None when the chain is intact.

    Given an anchor kept from earlier, the chain must still reach the anchored event
    with the anchored hash: this catches the newest events deleted with the head set back.
    """
    key = audit_key()
    prev_hash, prev_id = GENESIS_HASH, 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != prev_hash:
            if event.pk != prev_id + 1:
                return ChainBreak(prev_id + 1, f"is missing (#{event.pk} does not link to #{prev_id})")
            return ChainBreak(event.pk, "does not link to the event before it")
        if not hmac.compare_digest(event.hash, event_hash(key, prev_hash, event.pk, hashed_fields(event))):
            return ChainBreak(event.pk, "was altered (its content does not match its keyed hash)")
        if anchor is not None and event.pk == anchor.last_id and event.hash != anchor.last_hash:
            return ChainBreak(event.pk, f"differs from the anchor taken at {anchor.at:%Y-%m-%d %H:%M:%S}")
        prev_hash, prev_id = event.hash, event.pk
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None:
        if head.last_id > prev_id:
            return ChainBreak(prev_id + 1, f"is missing (the head names #{head.last_id} as the newest event, "
                                           f"the chain ends at #{prev_id})")
        if head.last_id != prev_id or head.last_hash != prev_hash:
            return ChainBreak(prev_id, "does not match the chain's head")
    if anchor is not None and anchor.last_id > prev_id:
        return ChainBreak(prev_id + 1, f"is missing (the anchor taken at {anchor.at:%Y-%m-%d %H:%M:%S} "
                                       f"names #{anchor.last_id}, the chain ends at #{prev_id})")
    return None


def verify_chain() -> int | None:
    """Id of the first altered or missing event, or None when intact (see find_break)."""
    found = find_break()
    return None if found is None else found.event_id
