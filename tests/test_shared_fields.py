"""core.inputs.SharedFields: one set of bound fields per class, held to the DRF behaviour it relies on.

When a DRF upgrade starts writing to a field while validating, or binds fields
differently, these tests fail: then drop SharedFields (a run's start, log, hold and
finish get DRF's per-instance copy back, at the cost bench/README.md gives).
"""

import threading

import pytest
from rest_framework import serializers

from core.inputs import InputSerializer, SharedFields
from tasks.serializers import (RunFinishInlineSerializer, RunFinishSerializer, RunHoldSerializer, RunLogSerializer,
                               RunStartSerializer)

DIGEST = "sha256:" + "ab" * 32

# For each serializer that shares its fields: bodies it accepts and bodies it refuses.
CASES = {
    RunStartSerializer: ([{}, {"digest": DIGEST}, {"digest": ""}],
                         [{"digest": "sha256:xyz"}, {"digest": 5}, {"other": 1}]),
    RunLogSerializer: ([{"text": "line\n"}, {"text": "  indented"}],
                       [{}, {"text": ""}, {"text": None}, {"text": ["x"]}]),
    RunHoldSerializer: ([{"output_type": "json", "size": 10, "flags": []},
                         {"output_type": "csv", "size": 0, "flags": ["small cell"]}],
                        [{"output_type": "json", "size": -1, "flags": []}, {"output_type": "json", "size": 1},
                         {"output_type": "x" * 41, "size": 1, "flags": []}, {"output_type": "j", "size": 1, "flags": [1] * 21}]),
    RunFinishInlineSerializer: ([{"status": "completed", "exit_code": 0, "log": "ok", "result": "e30="},
                                 {"status": "failed", "error_kind": "timeout"}],
                                [{"status": "running"}, {"status": "completed", "result": "e30"},
                                 {"status": "completed", "exit_code": 2**31}, {"status": "completed", "error_kind": "nope"},
                                 {"status": "completed", "unknown": 1}, {}]),
}


def _unshared(cls):
    """The same serializer with DRF's own per-instance fields, to compare answers with."""
    return type(f"Unshared{cls.__name__}", (cls,), {"fields": serializers.Serializer.fields})


def _writes_while_validating(cls, bodies, monkeypatch) -> list[tuple[str, str]]:
    """(field, attribute) of every write to one of cls's shared fields while `bodies` are validated."""
    shared = {}
    for name, field in cls().fields.items():
        while field is not None:  # a list field's child is shared with it
            shared[id(field)] = name
            field = getattr(field, "child", None)
    writes = []

    def recording(method):
        def record(field, attribute, *value):
            if id(field) in shared:
                writes.append((shared[id(field)], attribute))
            return method(field, attribute, *value)
        return record

    # Every attribute a DRF field sets on itself goes through these (DRF sets no field
    # attribute through its instance dictionary).
    monkeypatch.setattr(serializers.Field, "__setattr__", recording(object.__setattr__), raising=False)
    monkeypatch.setattr(serializers.Field, "__delattr__", recording(object.__delattr__), raising=False)
    for data in bodies:
        cls(data=data).is_valid()
    return writes


@pytest.mark.parametrize("cls", list(CASES))
def test_validation_writes_nothing_to_a_shared_field(cls, monkeypatch):
    good, bad = CASES[cls]
    writes = _writes_while_validating(cls, good + bad, monkeypatch)
    assert writes == [], f"{cls.__name__}: validation wrote {sorted(set(writes))}"


def test_a_list_fields_child_is_ready_before_it_is_shared(monkeypatch):
    # An IntegerField without bounds builds its validators on first use, not in __init__.
    class Numbers(SharedFields, InputSerializer):
        values = serializers.ListField(child=serializers.IntegerField())

    writes = _writes_while_validating(Numbers, [{"values": [1, 2]}, {"values": ["x"]}], monkeypatch)
    assert writes == []


@pytest.mark.parametrize("cls", list(CASES))
def test_shared_fields_answer_as_drf_own_fields_do(cls):
    good, bad = CASES[cls]
    unshared = _unshared(cls)
    for data in good + bad:
        shared_one, own = cls(data=data), unshared(data=data)
        assert shared_one.is_valid() == own.is_valid() == (data in good), data
        assert shared_one.errors == own.errors
        if data in good:
            assert shared_one.validated_data == own.validated_data


def test_every_instance_uses_the_one_set_of_fields_and_keeps_its_own_result():
    first = RunFinishSerializer(data={"status": "completed", "log": "first"})
    second = RunFinishSerializer(data={"status": "killed", "log": "second"})
    assert first.fields is second.fields
    assert RunFinishInlineSerializer().fields is not first.fields  # one set per class
    assert first.is_valid() and second.is_valid()
    assert (first.validated_data["log"], second.validated_data["log"]) == ("first", "second")


def test_threads_validating_at_once_each_get_their_own_answer():
    failures = []

    def work(worker: int):
        for i in range(300):
            code = worker * 1000 + i
            data = {"status": "completed", "exit_code": code, "log": f"{worker}/{i}", "result": "e30="}
            if i % 3 == 0:
                data["exit_code"] = "not a number"
            serializer = RunFinishInlineSerializer(data=data)
            valid = serializer.is_valid()
            if i % 3 == 0:
                ok = not valid and list(serializer.errors) == ["exit_code"]
            else:
                ok = valid and (serializer.validated_data["exit_code"], serializer.validated_data["log"]) == (
                    code, f"{worker}/{i}")
            if not ok:
                failures.append((worker, i, serializer.errors if not valid else serializer.validated_data))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_field_that_reads_the_context_fails_loudly():
    class NeedsRequest(serializers.CharField):
        def to_internal_value(self, data):
            return f"{self.context.get('request')}: {data}"

    class Shared(SharedFields, InputSerializer):
        name = NeedsRequest()

    with pytest.raises(RuntimeError, match="SharedFields"):
        Shared(data={"name": "x"}, context={"request": "r"}).is_valid()


def test_partial_validation_and_nested_serializers_are_refused():
    with pytest.raises(TypeError, match="partially"):
        RunLogSerializer(data={}, partial=True)

    class Inner(InputSerializer):
        value = serializers.IntegerField()

    class Nested(SharedFields, InputSerializer):
        inner = Inner()

    with pytest.raises(TypeError, match="nested serializer"):
        Nested(data={"inner": {"value": 1}}).is_valid()
