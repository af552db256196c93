import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts import audit
from accounts.audit import audit_record, verify_chain
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


def test_deleting_a_past_event_breaks_the_chain(db):
    make_organization("A")
    make_organization("B")
    make_organization("C")
    first, second, third = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk=second.pk).delete()
    assert verify_chain() == third.pk


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


def test_deleting_the_newest_events_is_caught_by_the_head(db):
    make_organization("A")
    make_organization("B")
    first, second = AuditEvent.objects.order_by("id")
    AuditEvent.objects.filter(pk=second.pk).delete()
    assert verify_chain() == first.pk


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


def test_an_append_after_this_process_own_swaps_the_head_in_one_statement(db):
    with transaction.atomic():
        audit_record(actor=None, verb="test.first")
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        audit_record(actor=None, verb="test.second")
    statements = [q["sql"].split()[0] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert statements == ["UPDATE", "INSERT"]  # the guarded head update and the event; no read
    first, second = AuditEvent.objects.filter(verb__startswith="test.").order_by("id")
    assert second.prev_hash == first.hash
    assert verify_chain() is None


def test_a_head_moved_by_someone_else_is_read_before_appending(db):
    """Another process appended since: the guess is stale, the swap misses, the chain holds."""
    with transaction.atomic():
        audit_record(actor=None, verb="test.ours")
    with transaction.atomic():
        # As another process would: an event of its own, the head moved on to its hash.
        other = AuditEvent.objects.create(
            created_at=AuditEvent.objects.get(verb="test.ours").created_at, actor_type="system", actor_label="system",
            verb="test.theirs", details={}, prev_hash=AuditChainHead.objects.get(pk=1).last_hash, hash="",
        )
        other.hash = audit._event_hash(other.prev_hash, audit._hashed_fields(other))
        other.save()
        AuditChainHead.objects.filter(pk=1).update(last_hash=other.hash)
    with transaction.atomic():
        audit_record(actor=None, verb="test.next")
    assert AuditEvent.objects.get(verb="test.next").prev_hash == other.hash
    assert verify_chain() is None


def test_an_append_rolled_back_leaves_the_next_one_linked_to_the_committed_head(db):
    with transaction.atomic():
        audit_record(actor=None, verb="test.kept")
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            audit_record(actor=None, verb="test.lost")
            1 / 0
    with transaction.atomic():
        audit_record(actor=None, verb="test.after")
    kept, after = AuditEvent.objects.filter(verb__startswith="test.").order_by("id")
    assert (kept.verb, after.verb) == ("test.kept", "test.after")
    assert after.prev_hash == kept.hash
    assert verify_chain() is None
