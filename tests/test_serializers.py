"""Serializer building blocks (core.serializers), validated as DRF validates."""

import pytest
from rest_framework import serializers

from core.serializers import LongTextField
from tasks.serializers import RunFinishInlineSerializer


def test_finish_input_is_validated_per_instance():
    good = RunFinishInlineSerializer(data={"status": "completed", "result": "e30="})
    bad = RunFinishInlineSerializer(data={"status": "completed", "result": "e30"})
    assert good.is_valid() and good.validated_data["result"] == b"{}"
    assert not bad.is_valid() and "result" in bad.errors


@pytest.mark.parametrize("text", ["", "plain log\n", "ünïcödé ✓ 😀", "a\ud800b", "\udfff", "x" * 1000 + "\udc00",
                                  "nul\x00byte"])
def test_long_text_is_validated_as_charfield_validates_it(text):
    class _Long(serializers.Serializer):
        text = LongTextField(trim_whitespace=False, allow_blank=True)

    class _Char(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)

    long, char = _Long(data={"text": text}), _Char(data={"text": text})
    assert long.is_valid() == char.is_valid()
    assert long.errors == char.errors
    assert [e.code for e in long.errors.get("text", [])] == [e.code for e in char.errors.get("text", [])]
