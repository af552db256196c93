"""Serializer building blocks shared by the apps."""

import copy
import re

from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.validators import ProhibitSurrogateCharactersValidator


class FlatSerializer(serializers.Serializer):
    """A serializer of plain fields whose per-request field set is cheap to build.

    DRF gives every serializer instance a deep copy of the declared fields, so that one
    instance may change its fields without touching another's. Deep-copying a field
    re-runs its constructor on deep copies of its arguments: for a node's finish request
    that was a tenth of its CPU. A plain field keeps no state beyond what its constructor
    set, and binding it to a serializer sets names and the parent on the copy, so a
    shallow copy per instance is as independent. Nested serializers are refused: their
    own fields are bound in place, which only a deep copy keeps apart.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        nested = [name for name, field in cls._declared_fields.items() if isinstance(field, serializers.BaseSerializer)]
        if nested:
            raise TypeError(f"{cls.__name__}: nested serializers ({', '.join(nested)}) need a plain Serializer")

    def get_fields(self):
        return {name: _shallow_copy(field) for name, field in self._declared_fields.items()}


def _shallow_copy(field):
    """copy.copy(field) without the pickle protocol's detour (__reduce_ex__): the same new
    object with the same attributes, for ~10 us less per finish request's serializer."""
    cls = type(field)
    if getattr(cls, "__copy__", None) or getattr(cls, "__setstate__", None):
        return copy.copy(field)  # the class copies itself its own way
    clone = object.__new__(cls)
    clone.__dict__.update(field.__dict__)
    return clone


_SURROGATE = re.compile("[\ud800-\udfff]")


class _NoSurrogates:
    """DRF's ProhibitSurrogateCharactersValidator in one regular-expression search
    instead of a Python loop over every character: 0.5 instead of 5.4 ms for a run log
    at its 262,144-character bound, on every log append and finish that carries one."""

    message = ProhibitSurrogateCharactersValidator.message
    code = ProhibitSurrogateCharactersValidator.code

    def __call__(self, value):
        found = _SURROGATE.search(str(value))
        if found:
            raise ValidationError(self.message.format(code_point=ord(found.group())), code=self.code)


class LongTextField(serializers.CharField):
    """A CharField for long text (logs), validated as CharField validates it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            _NoSurrogates() if isinstance(v, ProhibitSurrogateCharactersValidator) else v for v in self.validators
        ]
