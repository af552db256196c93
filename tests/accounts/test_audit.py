import importlib
import io
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.core.management import CommandError, call_command
from django.utils import timezone
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts import audit
from accounts.audit import Anchor, anchor_current, audit_record, event_hash, find_break, hashed_fields, verify_chain
from accounts.models import AuditChainHead, AuditEvent
from tests.factories import make_organization


def test_every_service_write_leaves_a_linked_event(db):
    make_organization("A")
    make_organization("B")
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.verb for e in events] == ["organization.created", "organization.created"]
    assert events[1].prev_hash == events[0].hash
    assert verify_chain() is None


def test_editing_a_past_event_breaks_the_chain_from_there(db):
    make_organization("A")
    make_organization("B")
    make_organization("C")
    first, second, _third = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk=second.pk).update(details={"forged": True})
    assert verify_chain() == second.pk


def test_deleting_a_past_event_breaks_the_chain_naming_it(db):
    make_organization("A")
    make_organization("B")
    make_organization("C")
    first, second, third = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk=second.pk).delete()
    assert verify_chain() == second.pk  # the missing one, by its id: ids in the chain are consecutive


@pytest.mark.django_db(transaction=True)
def test_audit_outside_a_transaction_is_refused():
    # The audit row must commit or roll back with the change it records.
    assert not transaction.get_connection().in_atomic_block
    with pytest.raises(RuntimeError):
        audit_record(actor=None, verb="x")
    assert not AuditEvent.objects.exists()


def test_a_failed_service_call_leaves_no_event(db):
    make_organization("A")
    before = AuditEvent.objects.count()
    with pytest.raises(Exception):
        make_organization("A")  # duplicate name: full_clean refuses
    assert AuditEvent.objects.count() == before


def test_deleting_the_newest_event_names_that_event(db):
    # Issue 13.13: it named #81 (the last survivor) for a deleted #82.
    make_organization("A")
    make_organization("B")
    first, second = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk=second.pk).delete()
    assert verify_chain() == second.pk
    assert "is missing" in find_break().reason


def test_deleting_several_newest_events_names_the_first_deleted(db):
    for name in "ABCDE":
        make_organization(name)
    events = list(AuditEvent.objects.order_by("id"))
    AuditEvent.objects.filter(pk__gte=events[2].pk).delete()
    assert verify_chain() == events[2].pk


@pytest.mark.django_db(transaction=True)
def test_appends_from_concurrent_transactions_form_one_chain():
    """Each thread has its own database connection; the head row lock orders their appends."""
    import threading

    if connection.vendor == "sqlite":
        pytest.skip("SQLite's in-memory test database (shared cache) refuses concurrent writers instead of queueing them")
    per_thread, barrier = 15, threading.Barrier(3)

    def append(name: str):
        try:
            barrier.wait()
            for i in range(per_thread):
                with transaction.atomic():
                    audit_record(actor=None, verb=f"test.{name}.{i}")
        finally:
            connection.close()

    threads = [threading.Thread(target=append, args=(name,)) for name in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    events = list(AuditEvent.objects.filter(verb__startswith="test.").order_by("id"))
    assert len(events) == 3 * per_thread
    assert len({event.prev_hash for event in AuditEvent.objects.all()}) == AuditEvent.objects.count()
    assert verify_chain() is None


def test_an_append_locks_the_head_and_takes_the_next_id(db):
    with transaction.atomic():
        audit_record(actor=None, verb="test.first")
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        audit_record(actor=None, verb="test.second")
    statements = [q["sql"].split()[0] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert statements == ["SELECT", "UPDATE", "INSERT"]
    first, second = AuditEvent.objects.filter(verb__startswith="test.").order_by("id")
    assert (second.pk, second.prev_hash) == (first.pk + 1, first.hash)
    assert AuditChainHead.objects.values_list("last_id", "last_hash").get() == (second.pk, second.hash)
    assert verify_chain() is None


def _rewrite_from(event_id: int, key: bytes) -> None:
    """What an attacker with write access to the database does: recompute every hash from
    `event_id` on, and the head, with the key they have."""
    prev = AuditEvent.objects.get(pk=event_id).prev_hash
    for event in AuditEvent.objects.filter(pk__gte=event_id).order_by("id"):
        event.prev_hash, event.hash = prev, event_hash(key, prev, event.pk, hashed_fields(event))
        event.save(update_fields=["prev_hash", "hash"])
        prev = event.hash
    AuditChainHead.objects.filter(pk=1).update(last_hash=prev)


def test_an_edit_with_every_later_hash_recomputed_without_the_key_is_caught(db, settings):
    settings.VANTAGE_AUDIT_KEY = "k" * 40
    for name in "ABC":
        make_organization(name)
    first, second, third = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk=second.pk).update(details={"forged": True})
    _rewrite_from(second.pk, b"a guess at the key, not the key")
    assert verify_chain() == second.pk
    # With the key itself the rewrite would pass: the key is what protects the chain.
    _rewrite_from(second.pk, b"k" * 40)
    assert verify_chain() is None


def test_the_chain_depends_on_the_key(db, settings):
    settings.VANTAGE_AUDIT_KEY = "k" * 40
    make_organization("A")
    assert verify_chain() is None
    settings.VANTAGE_AUDIT_KEY = "another key of at least thirty-two chars"
    assert verify_chain() == AuditEvent.objects.get().pk


def test_an_anchor_catches_the_newest_events_deleted_with_the_head_set_back(db):
    for name in "ABC":
        make_organization(name)
    anchor = Anchor.parse(str(anchor_current()))
    first, second, third = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk__gte=second.pk).delete()
    AuditChainHead.objects.filter(pk=1).update(last_id=first.pk, last_hash=first.hash)
    assert find_break() is None  # without the anchor the shortened chain looks whole
    found = find_break(anchor=anchor)
    assert found.event_id == second.pk
    assert f"names #{third.pk}" in found.reason


def test_an_anchor_of_an_older_head_still_verifies_a_longer_chain(db):
    make_organization("A")
    anchor = Anchor.parse(str(anchor_current()))
    make_organization("B")
    assert find_break(anchor=anchor) is None


@pytest.mark.parametrize("mutate", [
    lambda parts: parts[:2] + [str(int(parts[2]) + 1)] + parts[3:],  # another id
    lambda parts: parts[:5] + ["0" * 64],                               # another signature
    lambda parts: ["something", "else"],
])
def test_a_forged_or_malformed_anchor_is_refused(db, mutate):
    make_organization("A")
    parts = str(anchor_current()).split()
    with pytest.raises(ValueError):
        Anchor.parse(" ".join(mutate(parts)))


# --- the commands ----------------------------------------------------------------------


def _command(*args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:
        return 1, str(exc)
    return 0, out.getvalue().strip()


def test_audit_verify_command_exits_non_zero_naming_the_first_bad_event(db):
    for name in "ABC":
        make_organization(name)
    assert _command("audit_verify")[0] == 0
    first, second, third = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk=third.pk).delete()
    code, line = _command("audit_verify")
    assert code == 1
    assert line.startswith(f"audit chain broken: event #{third.pk} is missing")
    assert "\n" not in line


def test_audit_anchor_then_verify_against_the_kept_anchor(db, tmp_path):
    for name in "ABC":
        make_organization(name)
    code, line = _command("audit_anchor")
    assert code == 0 and line.startswith("vantage-audit-anchor v1 ")
    kept = tmp_path / "anchor.txt"
    kept.write_text(line + "\n")
    assert _command("audit_verify", "--anchor", str(kept)) == (
        0, f"audit chain intact: events up to #{AuditEvent.objects.latest('id').pk} verified, "
           f"reaching the anchored event #{AuditEvent.objects.latest('id').pk}")
    first, second, third = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk=third.pk).delete()
    AuditChainHead.objects.filter(pk=1).update(last_id=second.pk, last_hash=second.hash)
    assert _command("audit_verify")[0] == 0
    code, line = _command("audit_verify", "--anchor", str(kept))
    assert code == 1 and line.startswith(f"audit chain broken: event #{third.pk} is missing (the anchor")


def test_audit_verify_refuses_an_unreadable_or_forged_anchor(db, tmp_path):
    make_organization("A")
    assert _command("audit_verify", "--anchor", str(tmp_path / "none"))[1].startswith("cannot read the anchor")
    forged = tmp_path / "forged"
    forged.write_text(str(anchor_current())[:-4] + "0000")
    assert "signature does not match" in _command("audit_verify", "--anchor", str(forged))[1]


def test_audit_anchor_refuses_a_broken_chain(db):
    make_organization("A")
    AuditEvent.objects.update(verb="edited")
    code, line = _command("audit_anchor")
    assert code == 1 and "not anchoring it" in line


# --- the migration that keyed existing chains -------------------------------------------


def _unkeyed_chain(count: int) -> None:
    migration = importlib.import_module("accounts.migrations.0005_audit_chain_keyed")
    prev = audit.GENESIS_HASH
    for i in range(count):
        event = AuditEvent(created_at=timezone.now(), actor_type="system", actor_label="system",
                           verb=f"old.{i}", details={"i": i}, prev_hash=prev, hash="")
        event.hash = prev = migration._unkeyed_hash(prev, hashed_fields(event))
        event.save()
    AuditChainHead.objects.update_or_create(pk=1, defaults={"last_hash": prev, "last_id": 0})
    return migration


def test_the_migration_keys_an_intact_unkeyed_chain(db):
    migration = _unkeyed_chain(3)
    migration.key_the_chain(django_apps, SimpleNamespace(connection=connection))
    assert verify_chain() is None
    with transaction.atomic():
        audit_record(actor=None, verb="new")
    assert verify_chain() is None
    assert AuditEvent.objects.latest("id").verb == "new"


def test_the_migration_refuses_to_key_a_broken_chain(db):
    migration = _unkeyed_chain(3)
    AuditEvent.objects.filter(verb="old.1").update(details={"forged": True})
    with pytest.raises(RuntimeError, match=r"broken at event #\d+"):
        migration.key_the_chain(django_apps, SimpleNamespace(connection=connection))
