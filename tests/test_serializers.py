"""vantage.serializers.FlatSerializer: shallow field copies, validated as DRF validates."""

import pytest
from rest_framework import serializers

from tasks.serializers import RunFinishInlineSerializer
from vantage.serializers import FlatSerializer


class _Plain(serializers.Serializer):
    name = serializers.CharField(max_length=5)
    count = serializers.IntegerField(min_value=0, required=False, default=3)
    kind = serializers.ChoiceField(choices=["a", "b"], allow_blank=True, default="")


class _Flat(FlatSerializer):
    name = serializers.CharField(max_length=5)
    count = serializers.IntegerField(min_value=0, required=False, default=3)
    kind = serializers.ChoiceField(choices=["a", "b"], allow_blank=True, default="")


@pytest.mark.parametrize("data", [
    {"name": "abc"}, {"name": "abcdef"}, {}, {"name": "x", "count": -1}, {"name": "x", "count": "7", "kind": "b"},
    {"name": "x", "kind": "c"}, {"name": None}, {"name": "  x  ", "count": ""},
])
def test_validates_as_a_plain_serializer(data):
    flat, plain = _Flat(data=data), _Plain(data=data)
    assert flat.is_valid() == plain.is_valid()
    assert flat.errors == plain.errors
    assert (dict(flat.validated_data) if not flat.errors else None) == (
        dict(plain.validated_data) if not plain.errors else None)


def test_instances_do_not_share_bound_fields():
    first, second = _Flat(data={}), _Flat(data={})
    assert first.fields["name"] is not second.fields["name"]
    assert first.fields["name"].parent is first and second.fields["name"].parent is second
    first.fields["count"].default = 99
    assert second.fields["count"].default == 3
    assert _Flat._declared_fields["name"].parent is None  # the class's own fields are never bound


def test_nested_serializers_are_refused():
    with pytest.raises(TypeError, match="nested"):
        class _Nested(FlatSerializer):
            inner = _Plain()


def test_finish_input_is_validated_per_instance():
    good = RunFinishInlineSerializer(data={"status": "completed", "result": "e30="})
    bad = RunFinishInlineSerializer(data={"status": "completed", "result": "e30"})
    assert good.is_valid() and good.validated_data["result"] == b"{}"
    assert not bad.is_valid() and "result" in bad.errors


class _SelfCopying(serializers.CharField):
    copies = 0

    def __copy__(self):
        type(self).copies += 1
        clone = _SelfCopying.__new__(_SelfCopying)
        clone.__dict__.update(self.__dict__)
        return clone


def test_a_field_that_copies_itself_is_copied_its_own_way():
    class _WithOwnCopy(FlatSerializer):
        name = _SelfCopying()

    before = _SelfCopying.copies
    assert _WithOwnCopy(data={"name": "x"}).is_valid()
    assert _SelfCopying.copies == before + 1


@pytest.mark.parametrize("text", ["", "plain log\n", "ünïcödé ✓ 😀", "a\ud800b", "\udfff", "x" * 1000 + "\udc00",
                                  "nul\x00byte"])
def test_long_text_is_validated_as_charfield_validates_it(text):
    from vantage.serializers import LongTextField

    class _Long(serializers.Serializer):
        text = LongTextField(trim_whitespace=False, allow_blank=True)

    class _Char(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)

    long, char = _Long(data={"text": text}), _Char(data={"text": text})
    assert long.is_valid() == char.is_valid()
    assert long.errors == char.errors
    assert [e.code for e in long.errors.get("text", [])] == [e.code for e in char.errors.get("text", [])]
