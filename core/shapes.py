"""Output shapes: one declaration per resource gives both its JSON answers and its OpenAPI component.

A DRF serializer costs 2-4 ms per response on the hot endpoints (run lists, claims, the
organisation list), more than the rest of such a request's Python work; a dict comprehension
costs microseconds. So a resource's output is declared once, as a list of `Out` fields (the
name in the answer, its kind, where the value is read), and from that one list come

- `shape.of(obj)`: the answer for a model instance (sources are attribute paths, `task.image`);
- `shape.row(row)`: the answer for a `values(*shape.columns)` row (`task.image` -> `task__image`);
- `shape.schema()`: a plain DRF serializer built from the same fields, for drf-spectacular only
  (`extend_schema(responses=shape.schema())`); it never renders a response;
- `any_of(name, *shapes)`: the schema of an answer that is one of several shapes.

tests/tasks/test_output_shapes.py holds the schema to real answers for each caller.
"""

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter

from drf_spectacular.serializers import PolymorphicProxySerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from core.renderers import iso_datetime


@extend_schema_field(OpenApiTypes.BYTE)
class _BytesField(serializers.CharField):
    """Documents bytes sent as base64 (OpenAPI `format: byte`)."""


@dataclass(frozen=True)
class Kind:
    """A value's OpenAPI type (as the DRF field that documents it) and how it becomes JSON."""

    field: Callable[..., serializers.Field]
    to_json: Callable | None = None


INTEGER = Kind(serializers.IntegerField)
STRING = Kind(serializers.CharField)
BOOLEAN = Kind(serializers.BooleanField)
JSON = Kind(serializers.JSONField)
DATETIME = Kind(serializers.DateTimeField, iso_datetime)  # as DRF's DateTimeField renders it
BYTES = Kind(_BytesField, lambda value: None if value is None else base64.b64encode(bytes(value)).decode("ascii"))


def choice(choices, *, blank: bool = False) -> Kind:
    """A string from `choices` (a TextChoices class): an enum in the schema."""
    return Kind(lambda **kwargs: serializers.ChoiceField(choices=choices.choices, allow_blank=blank, **kwargs))


def many(shape: "Shape") -> Kind:
    """A list of `shape`s, each read from an instance."""
    return Kind(lambda **kwargs: shape.schema(many=True, **kwargs), lambda items: [shape.of(item) for item in items])


@dataclass(frozen=True)
class Out:
    """One field of an answer.

    `source` is where the value is read: an attribute path on the instance (default: the
    name), or a function of the instance (answers built only by `of`). `convert` replaces
    the kind's conversion, for a value derived from a column (e.g. a flag from a date).
    The schema's description is `description`, else the model field's help_text.
    """

    name: str
    kind: Kind
    source: str | Callable = ""
    nullable: bool = False
    description: str = ""
    convert: Callable | None = None

    @property
    def path(self) -> str | Callable:
        return self.source or self.name


def _attribute_reader(path: str) -> Callable:
    if "." not in path:
        return attrgetter(path)
    steps = path.split(".")

    def read(obj):
        for step in steps:
            if obj is None:  # a nullable relation on the way (task.created_by.username)
                return None
            obj = getattr(obj, step)
        return obj

    return read


class Shape:
    """An output resource: its fields, the answers built from them and its schema component."""

    def __init__(self, name: str, fields: list[Out], *, model=None, description: str = ""):
        self.name, self.fields, self.model, self.description = name, tuple(fields), model, description
        # Values are read in one comprehension, then the few that need it converted in place
        # (which keeps the declared order): close to a hand-written dict literal's cost.
        self._read = [(f.name, f.path if callable(f.path) else _attribute_reader(f.path)) for f in self.fields]
        self._convert = [(f.name, f.convert or f.kind.to_json) for f in self.fields if f.convert or f.kind.to_json]

    def extend(self, name: str, fields: list[Out], *, description: str = "") -> "Shape":
        """This shape with more fields, under another component name."""
        return Shape(name, [*self.fields, *fields], model=self.model, description=description)

    def of(self, obj) -> dict:
        """The answer for one instance; every source must be loaded (a deferred one costs a query)."""
        answer = {name: read(obj) for name, read in self._read}
        for name, convert in self._convert:
            answer[name] = convert(answer[name])
        return answer

    @cached_property
    def _keys(self) -> list[tuple[str, str]]:
        if any(callable(f.path) for f in self.fields):
            raise TypeError(f"{self.name} reads a field with a function: only of() can build it.")
        return [(f.name, f.path.replace(".", "__")) for f in self.fields]

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """What `row` reads: `queryset.values(*shape.columns)`."""
        return tuple(dict.fromkeys(key for _, key in self._keys))

    def row(self, row: Mapping) -> dict:
        """The answer for one `values(*self.columns)` row."""
        answer = {name: row[key] for name, key in self._keys}
        for name, convert in self._convert:
            answer[name] = convert(answer[name])
        return answer

    @cached_property
    def _schema_class(self) -> type[serializers.Serializer]:
        fields = {f.name: f.kind.field(read_only=True, allow_null=f.nullable, help_text=self._help(f) or None)
                  for f in self.fields}
        # drf-spectacular names the component after the class and describes it with its docstring.
        return type(self.name, (serializers.Serializer,), {**fields, "__doc__": self.description or None})

    def schema(self, **kwargs) -> serializers.Serializer:
        """The shape as a serializer for drf-spectacular (`many=True` for a list)."""
        return self._schema_class(**kwargs)

    def _help(self, field: Out) -> str:
        if field.description or self.model is None or callable(field.path) or "." in field.path:
            return field.description
        return str(self.model._meta.get_field(field.path).help_text)


class AnyOf(PolymorphicProxySerializer):
    """drf-spectacular's one-of proxy as any-of: for shapes of which one extends another, so
    that an answer in the larger shape also matches the smaller one (JSON Schema's oneOf
    would refuse it for matching twice)."""


class _AnyOfExtension(PolymorphicProxySerializerExtension):
    target_class = AnyOf

    def map_serializer(self, auto_schema, direction):
        return {"anyOf": super().map_serializer(auto_schema, direction)["oneOf"]}


def any_of(name: str, *shapes: Shape, many: bool = False) -> AnyOf:
    return AnyOf(component_name=name, serializers=[shape.schema() for shape in shapes], resource_type_field_name=None,
                 many=many)
