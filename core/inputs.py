"""Building blocks of the API's input serializers.

- `IdField`: an object id, bounded to the 64-bit range of every primary key column
  (see core.ids), so a huge number is a 400 naming the field, not a database error.
- `StrictFields`: a body naming a field the serializer does not take is refused (400,
  naming the field). DRF ignores unknown keys, so `{"is_superuser": true}` in a user
  PATCH answered 200 with nothing changed: a caller could not tell a refused field from
  a typo or from success. Every input serializer of the API mixes this in.
- `SharedFields`: for the node agents' hot, context-free inputs (a run's start, log,
  hold and finish), one set of bound fields per class instead of a copy per request.
"""

import threading
from collections.abc import Mapping

from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from core.ids import MAX_ID

NOT_SETTABLE = "This field cannot be set here."

# Free text that lists carry in every row (a task's description) stays this short: a
# description is a paragraph, and a 5 MB one made each page of a list megabytes.
DESCRIPTION_MAX_CHARS = 10_000


class IdField(serializers.IntegerField):
    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


class StrictFields:
    """For serializers.Serializer subclasses: unknown or read-only keys in the body are a 400."""

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            settable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = [key for key in data.keys() if key not in settable]
            if unknown:
                raise serializers.ValidationError({key: [NOT_SETTABLE] for key in unknown})
        return super().to_internal_value(data)


class InputSerializer(StrictFields, serializers.Serializer):
    """The base of the API's input serializers (bodies of creates, updates and actions)."""


class _NoContext(Mapping):
    """The context of the serializer that owns shared fields: a field reading it is a bug, said loudly."""

    def _refuse(self, *args):
        raise RuntimeError(
            "A field of a SharedFields serializer read the serializer's context: its fields serve every "
            "request at once, so they must not depend on one. Drop SharedFields from this serializer."
        )

    __getitem__ = __iter__ = __len__ = __contains__ = get = _refuse


class SharedFields:
    """For input serializers that the node agents send on every run: fields built once per class.

    DRF gives every serializer instance its own deep copy of the class's declared fields
    (`Serializer.fields`), and each copy calls every field's __init__ again. For a result
    upload's five fields that copy was 15 % of the request's instructions (callgrind,
    bench/README.md), more than the rest of its validation. A serializer that mixes this in
    validates with one set of fields bound once, to an instance of its own class with no
    data and no context, and shared by every instance and every thread.

    That is safe only because of how DRF validates, which tests/test_shared_fields.py holds
    to (it fails when a DRF upgrade changes it). What it relies on, besides public API:
    - `Serializer.fields` binds each field of `get_fields()` through BindingDict
      (rest_framework.utils.serializer_helpers), as _bind_once does here;
    - validation reads a field (and a list field's `child`) and never writes it, except its
      `validators`, a list built on first read: read here, once, before the fields are shared;
    - a field reads only its own settings and, through `root`, the owning serializer's
      `partial` and context. So partial validation is refused, and the owner's context
      raises on any read (_NoContext): a field that needs the request cannot be shared.
    Only for flat serializers of plain fields: a nested serializer is refused.
    """

    _shared: dict[type, BindingDict] = {}
    _building = threading.Lock()

    def __init__(self, *args, **kwargs):
        if kwargs.get("partial"):
            raise TypeError(f"{type(self).__name__} shares its fields and cannot validate partially.")
        super().__init__(*args, **kwargs)

    @property
    def fields(self):
        cls = type(self)
        shared = SharedFields._shared.get(cls)
        if shared is None:
            with SharedFields._building:
                shared = SharedFields._shared.get(cls) or self._bind_once(cls)
        return shared

    @staticmethod
    def _bind_once(cls) -> BindingDict:
        # What DRF's Serializer.fields does, once, for an owner with no data and no context.
        owner = cls(context=_NoContext())
        fields = BindingDict(owner)
        for name, field in owner.get_fields().items():
            if isinstance(field, serializers.BaseSerializer):
                raise TypeError(f"{cls.__name__}.{name}: a nested serializer cannot share its fields.")
            fields[name] = field  # binds it to the owner
            _build_validators(field)
        SharedFields._shared[cls] = fields
        return fields


def _build_validators(field: serializers.Field) -> None:
    """Build a field's lazily made `validators` now, and its child's (a ListField's items),
    so that validation, from here on, only reads them."""
    field.validators
    child = getattr(field, "child", None)
    if child is not None:
        _build_validators(child)
