import pytest
from django.db import transaction

from accounts.audit import audit_record, verify_chain
from accounts.models import AuditEvent
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
