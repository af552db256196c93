"""Building blocks of the API's input serializers.

- `IdField`: an object id, bounded to the 64-bit range of every primary key column
  (see core.ids), so a huge number is a 400 naming the field, not a database error.
- `StrictFields`: a body naming a field the serializer does not take is refused (400,
  naming the field). DRF ignores unknown keys, so `{"is_superuser": true}` in a user
  PATCH answered 200 with nothing changed: a caller could not tell a refused field from
  a typo or from success. Every input serializer of the API mixes this in.
"""

from rest_framework import serializers

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
