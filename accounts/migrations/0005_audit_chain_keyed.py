"""Key the audit chain: existing events are verified as they were hashed (plain SHA-256),
then re-hashed with the audit key (accounts.audit); the head learns the newest id.

A chain that no longer verifies is not re-keyed, which would launder the change: the
migration stops and names the first bad event, for the operator to investigate (see
docs/security.md, "The audit log").
"""

import hashlib
import json

from django.db import migrations, models

GENESIS_HASH = "0" * 64


def _unkeyed_hash(prev_hash: str, fields: dict) -> str:
    # The chain's hash before this migration, kept here as it was.
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


def key_the_chain(apps, schema_editor):
    from accounts.audit import audit_key, event_hash, hashed_fields

    AuditEvent = apps.get_model("accounts", "AuditEvent")
    AuditChainHead = apps.get_model("accounts", "AuditChainHead")
    db = schema_editor.connection.alias
    key = audit_key()
    old_prev, new_prev, last_id = GENESIS_HASH, GENESIS_HASH, 0
    while True:  # in batches of ids, each read whole before its rows are rewritten
        batch = list(AuditEvent.objects.using(db).filter(id__gt=last_id).order_by("id")[:2000])
        if not batch:
            break
        for event in batch:
            fields = hashed_fields(event)
            if event.prev_hash != old_prev or event.hash != _unkeyed_hash(old_prev, fields):
                raise RuntimeError(
                    f"accounts.0005: the audit chain is broken at event #{event.pk} (it or an event before it "
                    "was changed or removed); it is not re-keyed. Investigate before migrating."
                )
            old_prev = event.hash
            event.prev_hash = new_prev
            event.hash = new_prev = event_hash(key, new_prev, event.pk, fields)
            last_id = event.pk
        AuditEvent.objects.using(db).bulk_update(batch, ["prev_hash", "hash"])
    head = AuditChainHead.objects.using(db).filter(pk=1).first()
    if head is not None and head.last_hash != old_prev:
        raise RuntimeError("accounts.0005: the audit chain's head does not match its newest event; "
                           "the newest events may have been removed. Investigate before migrating.")
    AuditChainHead.objects.using(db).update_or_create(pk=1, defaults={"last_id": last_id, "last_hash": new_prev})


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_user_lockout'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditchainhead',
            name='last_id',
            field=models.BigIntegerField(default=0),
        ),
        migrations.RunPython(key_the_chain, migrations.RunPython.noop),
    ]
